"""Everything cacheops changes in Django, in one list, installed by AppConfig.ready()
and undone by uninstall().

- QuerySet: everything query.QuerySetMixin defines. It wraps Django's query property,
  filter, exclude, order_by, __getitem__, __getstate__, _clone and
  _filter_or_exclude_inplace (to record plain calls, see chain.py), _fetch_all, count,
  exists, aggregate, get, first, last, select_for_update, bulk_create, update and
  bulk_update (the last two invalidate the rows they change, query/writes.py; the
  originals are kept in chain._django) and adds cache(), nocache(), inplace(), cloning(), clone(),
  invalidated_update(), _cache_key(), _prefix and private helpers
- BaseManager: everything query.ManagerMixin defines
- Collector.related_objects: deletion reads bypass the cache
- Collector.delete: reads the rows it deletes, locked, and invalidates the auto-created
  m2m rows it deletes without signals (events/deletes.py)
- Model._do_update: conditional on the old values read before it, or on PostgreSQL
  returning them (events/saves.py)
- BaseDatabaseWrapper: CONNECTION_HOOKS, to follow transactions and savepoints
- CursorWrapper.execute/executemany: to notice writes inside a transaction
- model signals: MODEL_SIGNALS, connected with dispatch_uid 'cacheops'

Nothing else is patched: not redis-py (cacheops makes pools of its own, redis/held.py),
not connections (transaction state is kept by alias, transaction.py). Set meanwhile, by
the code above and not by install(): on querysets, their cache settings and recorded
calls (_cacheconf, _pending, _query_shared, _query_seen); on a model instance, what a save
hands from pre_save to post_save (_cacheops_old... see events/state.py), removed at
post_save; on a Query and its compiler, for one miss, get_compiler and as_sql
(cacheops.query), removed after it. At import, not by install(): the compatibility alias
cacheops.query.invalidate_m2o and the setting_changed receivers that forget values
memoized from settings (conf, fingerprint/values.py, redis/client.py), which stay.

uninstall() puts every attribute back as it was (deleting those that were added) and
disconnects the receivers; install() then works again. Both are for tests and tools, run
outside transactions. Meanwhile writes invalidate nothing: after install() again, call
invalidate_all() if the cache may hold rows they changed. Querysets made while installed
are not to be used after uninstall(), nor manager classes made by from_queryset() while
installed (they copied QuerySetMixin's public methods); @cached_as and @cached_view_as
need cacheops installed (they ask their samples for their conditions).
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


PATCHED_DUNDERS = ('__getitem__', '__getstate__', '__aiter__')


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

DISPATCH_UID = 'cacheops'

_ADDED = object()  # in PATCHES: the attribute was not in the class's own __dict__

# What install() did, in order: (class, name, what the class's own __dict__ held there,
# or _ADDED). Empty when not installed.
PATCHES = []


def _patch(cls, name, value):
    PATCHES.append((cls, name, vars(cls).get(name, _ADDED)))
    setattr(cls, name, value)


def _wrap(cls, name, wrapper):
    """cls.name = wrapper(what cls.name gives now, inherited or its own)."""
    _patch(cls, name, wrapper(getattr(cls, name)))


def install():
    """Patch QuerySet, managers, connections and cursors; connect model signals. Idempotent."""
    if PATCHES:
        return

    for name in _own_attributes(query.QuerySetMixin):
        ours = query.QuerySetMixin.__dict__[name]
        if hasattr(QuerySet, name):
            original = chain._django['QuerySet.' + name] = getattr(QuerySet, name)
            if callable(ours) and not ours.__doc__:  # help() shows what Django's does
                ours.__doc__ = original.__doc__
        _patch(QuerySet, name, ours)
    for name in _own_attributes(query.ManagerMixin):
        _patch(BaseManager, name, query.ManagerMixin.__dict__[name])
    _wrap(Collector, 'related_objects', query.collector_related_objects)
    _wrap(Collector, 'delete', deletes.collector_delete)
    _wrap(Model, '_do_update', saves.conditional_do_update)

    for name, hook in CONNECTION_HOOKS.items():
        _wrap(BaseDatabaseWrapper, name, lambda original, hook=hook: _after(original, hook))
    for name in ('execute', 'executemany'):
        _wrap(CursorWrapper, name, _before_execute)

    for signal, receiver in MODEL_SIGNALS:
        signal.connect(receiver, dispatch_uid=DISPATCH_UID)


def uninstall():
    """Undo install(): every patched attribute as it was, the receivers disconnected."""
    for signal, receiver in MODEL_SIGNALS:
        signal.disconnect(receiver, dispatch_uid=DISPATCH_UID)
    while PATCHES:
        cls, name, original = PATCHES.pop()  # last first: a name patched twice ends as it was
        if original is _ADDED:
            delattr(cls, name)
        else:
            setattr(cls, name, original)
    chain._django.clear()
    chain._recordable_classes.clear()  # they compared their attributes with patched ones
