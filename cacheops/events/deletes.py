"""What a delete invalidates beyond the events of the rows it deletes.

- The deleted rows' values as the database has them: Collector.delete, wrapped here,
  reads them again, locked, inside its transaction (instances may be outdated), in the
  order Django deletes them; _post_delete invalidates by them. Auto-created m2m rows,
  deleted without events, are invalidated here.
- Rows keyed to the deleted ones that change without events of their own
  (invalidate_m2o()): SET_NULL and SET_DEFAULT (Django's mass UPDATE) and Django 6.1's
  database-level actions (DB_SET_NULL, DB_SET_DEFAULT, DB_CASCADE), invalidated by the
  old key and the new one as partial rows, or whole models where nobody knows which
  rows changed. One Collector.delete gathers them from its post_delete events and
  invalidates them once.
"""
import functools
import threading
from contextlib import contextmanager
from operator import attrgetter

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models.deletion import get_candidate_relations_to_delete

from .. import invalidation
from ..conf import derived
from ..invalidation import invalidate_dicts, obj_dict, run_safely
from ..rows import granular_attnames, locked_rows
from ..utils import is_tracked


def collector_delete(original):
    """Collector.delete, reading the rows it deletes as they are when it deletes them.

    Instances may be outdated (loaded before another write moved them), so the rows are
    read again, locked, inside the deletion's transaction. Auto-created m2m rows get no
    delete signals: they are invalidated here. They were collected whole, as our
    receivers rule out fast deletes, so their values are known."""
    @functools.wraps(original)
    def delete(self):
        through_rows = [(model, [obj_dict(obj) for obj in objs]) for model, objs in self.data.items()
                        if model._meta.auto_created and is_tracked(model)]
        with transaction.atomic(using=self.using, savepoint=False), _batched_m2o(self.using):
            _read_deleted_rows(self)
            result = original(self)
        for model, rows in through_rows:
            run_safely(invalidate_dicts, model, rows, using=self.using)
        return result
    return delete


def _read_deleted_rows(collector):
    using = collector.using
    vendor = connections[using].vendor
    # rows are locked in the order Django deletes them (dependent models first, pks in
    # order), as its DELETEs would lock them: another order could deadlock with writers
    for model, instances in collector.data.items():
        collector.data[model] = sorted(instances, key=attrgetter('pk'))
    collector.sort()
    for model, instances in collector.data.items():
        if model._meta.auto_created or not is_tracked(model):
            continue
        attnames = granular_attnames(model, vendor)
        if not attnames:
            continue
        rows = locked_rows(model._meta.concrete_model, using, [obj.pk for obj in instances], attnames)
        for obj in instances:
            obj._cacheops_deleted = rows.get(obj.pk)


def invalidate_m2o(model, obj, using=DEFAULT_DB_ALIAS):
    """Invalidate rows whose foreign keys to obj its deletion changed without model events."""
    changes = _batch.changes
    if changes is None or _batch.using != using:
        changes = _M2oChanges()
        changes.add(model, obj)
        changes.invalidate(using)
    else:  # Collector.delete invalidates them all at its end
        changes.add(model, obj)


# Database-level on_delete actions (Django 6.1): the database changes the rows, no event
# tells which. DB_CASCADE deletes the rows with the key, and whatever its own actions
# remove or change beneath them, of rows no one read (see docs/design.md, writers
# racing writers)
DB_CASCADE = getattr(models, 'DB_CASCADE', None)
DB_SET_NULL = getattr(models, 'DB_SET_NULL', None)
DB_SET_DEFAULT = getattr(models, 'DB_SET_DEFAULT', None)
_DB_ACTIONS = frozenset(filter(None, (DB_CASCADE, DB_SET_NULL, DB_SET_DEFAULT)))

# what a deletion makes of a key to its row, besides a function giving the new one
DELETED, UNKNOWN_KEY = 'deleted', 'unknown key'


@derived
def _m2o_plan(model):
    """[(related model, attname, target attname, new key)] of the relations whose rows a
    deletion of model's rows changes without sending their events: every relation the
    Collector consults, hidden ones (related_name='+') included."""
    plan = []
    for rel in get_candidate_relations_to_delete(model._meta):
        field = rel.field
        new = _new_key(field, field.remote_field.on_delete)
        if new is None:
            continue
        if len(field.foreign_related_fields) != 1:  # a multi-column key: no one value
            plan.append((rel.related_model, None, None, UNKNOWN_KEY))
        else:
            plan.append((rel.related_model, field.attname, field.target_field.attname, new))
    return plan


def _new_key(field, on_delete):
    """What on_delete makes of a key to a deleted row: DELETED, UNKNOWN_KEY, a function
    giving the new key, or None when the rows get events of their own (cascades) or
    don't change."""
    if on_delete in (models.CASCADE, models.PROTECT, models.RESTRICT, models.DO_NOTHING):
        return None
    if on_delete is models.SET_NULL or on_delete is DB_SET_NULL:
        return _constant(None)
    if on_delete is models.SET_DEFAULT:
        return field.get_default  # called when deleting: it may be a callable's
    if on_delete is DB_SET_DEFAULT:
        default = field.db_default
        return _constant(default.value) if isinstance(default, models.Value) else UNKNOWN_KEY
    if on_delete is DB_CASCADE:
        return DELETED
    return UNKNOWN_KEY  # SET(...), custom handlers


def _constant(value):
    return lambda: value


@derived
def _beneath(model):
    """The models whose rows the database changes when it deletes some of model's rows
    (which, no one knows): those its DB_CASCADEs delete, recursively, and those its other
    database-level actions change. No other key can refer to a row it deletes, or the
    database would refuse to (a key without an ON DELETE action)."""
    found, stack = set(), [model]
    while stack:
        for rel in get_candidate_relations_to_delete(stack.pop()._meta):
            on_delete = rel.field.remote_field.on_delete
            related = rel.related_model
            if on_delete in _DB_ACTIONS and related not in found:
                found.add(related)
                if on_delete is DB_CASCADE:
                    stack.append(related)
    return frozenset(found)


class _M2oChanges:
    """What deletions changed in rows keyed to them: partial rows by model, and models
    changed in rows no one knows. Rows given once, however many deletions gave them."""

    def __init__(self):
        self.rows = {}  # model -> {hashable form: row}
        self.whole = set()

    def add(self, model, obj):
        for related, attname, target, new in _m2o_plan(model):
            if new is UNKNOWN_KEY:
                self.whole.add(related)
                continue
            # partial rows: any values in the other columns
            self._add_row(related, {attname: getattr(obj, target)})
            if new is DELETED:
                self.whole.update(_beneath(related))
            else:
                self._add_row(related, {attname: new()})

    def _add_row(self, model, row):
        rows = self.rows.setdefault(model, {})
        try:
            rows.setdefault(tuple(row.items()), row)
        except TypeError:  # an unhashable value
            rows[len(rows), object()] = row

    def models_written(self):
        """The models invalidate() invalidates rows of (for orphans.describe_call)."""
        return self.whole | set(self.rows)

    def invalidate(self, using):
        for model in self.whole:
            if is_tracked(model):
                invalidation.invalidate_model(model, using=using)
        for model, rows in self.rows.items():
            if model not in self.whole and is_tracked(model):
                invalidate_dicts(model, list(rows.values()), using=using)


class _Batch(threading.local):
    """The changes Collector.delete (in this thread) gathers from its post_delete events."""
    changes = using = None


_batch = _Batch()


@contextmanager
def _batched_m2o(using):
    """Within, invalidate_m2o() on using gathers its changes; at the end they invalidate
    once (queued to the commit, inside the deletion's transaction)."""
    outer = _batch.changes, _batch.using
    changes = _batch.changes = _M2oChanges()
    _batch.using = using
    try:
        yield
    finally:
        _batch.changes, _batch.using = outer
    run_safely(changes.invalidate, using)
