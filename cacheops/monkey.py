"""Everything cacheops changes in Django, in one list, installed by AppConfig.ready().

- QuerySet: everything query.QuerySetMixin defines. It wraps Django's query property,
  filter, exclude, order_by, __getitem__, __getstate__, _clone and
  _filter_or_exclude_inplace (to record plain calls, see chain.py), _fetch_all, count,
  exists, aggregate, get, first, last, select_for_update and bulk_create (the originals
  are kept in chain._django) and adds cache(), nocache(), inplace(), cloning(),
  invalidated_update(), _cache_key(), _prefix and private helpers
- BaseManager: everything query.ManagerMixin defines
- Collector.related_objects: deletion reads bypass the cache
- Collector.delete: reads the rows it deletes, locked, and invalidates the auto-created
  m2m rows it deletes without signals (events/deletes.py)
- Model._do_update: conditional on the old values read before it, or on PostgreSQL
  returning them (events/saves.py)
- BaseDatabaseWrapper: CONNECTION_HOOKS, to follow transactions and savepoints
- CursorWrapper.execute/executemany: to notice writes inside a transaction
- model signals: MODEL_SIGNALS
"""
from functools import wraps

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import Model, signals
from django.db.models.deletion import Collector
from django.db.models.manager import BaseManager
from django.db.models.query import QuerySet

from . import chain, commits, query
from .events import deletes, receivers, saves



def _own_attributes(cls):
    # of the dunders, only these are ours: the rest are the mixin's own (__module__...)
    return [name for name in vars(cls) if not name.startswith('__') or name in PATCHED_DUNDERS]


PATCHED_DUNDERS = ('__getitem__', '__getstate__')


def _after(original, hook):
    """original(self, *args), then hook(self, *args, result) style hooks, see below."""
    @wraps(original)
    def method(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        hook(self, *args, result)
        return result
    return method


# connection method -> what commits.py does with it
CONNECTION_HOOKS = {
    'set_autocommit': lambda conn, autocommit, *rest: commits.on_set_autocommit(conn, autocommit),
    'commit': lambda conn, result: commits.on_commit(conn),
    'rollback': lambda conn, result: commits.on_rollback(conn),
    'savepoint': lambda conn, sid: commits.on_savepoint(conn, sid),
    'savepoint_commit': lambda conn, sid, result: commits.on_savepoint_commit(conn, sid),
    'savepoint_rollback': lambda conn, sid, result: commits.on_savepoint_rollback(conn, sid),
    'close': lambda conn, result: commits.on_close(conn),
}


def _before_execute(original):
    @wraps(original)
    def method(self, sql, *args, **kwargs):
        commits.on_execute(self, sql)
        return original(self, sql, *args, **kwargs)
    return method


MODEL_SIGNALS = [
    (signals.pre_save, receivers._pre_save),
    (signals.post_save, receivers._post_save),
    (signals.post_delete, receivers._post_delete),
    (signals.m2m_changed, receivers._m2m_changed),
]

_installed = False


def install():
    """Patch QuerySet, managers, connections and cursors; connect model signals. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True

    for name in _own_attributes(query.QuerySetMixin):
        ours = query.QuerySetMixin.__dict__[name]
        if hasattr(QuerySet, name):
            original = chain._django['QuerySet.' + name] = getattr(QuerySet, name)
            if callable(ours) and not ours.__doc__:  # help() shows what Django's does
                ours.__doc__ = original.__doc__
        setattr(QuerySet, name, ours)
    for name in _own_attributes(query.ManagerMixin):
        setattr(BaseManager, name, query.ManagerMixin.__dict__[name])
    Collector.related_objects = query.collector_related_objects(Collector.related_objects)
    Collector.delete = deletes.collector_delete(Collector.delete)
    Model._do_update = saves.conditional_do_update(Model._do_update)

    for name, hook in CONNECTION_HOOKS.items():
        setattr(BaseDatabaseWrapper, name, _after(getattr(BaseDatabaseWrapper, name), hook))
    for name in ('execute', 'executemany'):
        setattr(CursorWrapper, name, _before_execute(getattr(CursorWrapper, name)))

    for signal, receiver in MODEL_SIGNALS:
        signal.connect(receiver, dispatch_uid='cacheops')
