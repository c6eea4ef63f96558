"""The model signal receivers: saves, deletes and m2m changes -> the rows to invalidate.

- pre_save: the row's old values, read before Django's UPDATE (one SELECT by pk), or on
  PostgreSQL left to the UPDATE to return (returning.py); kept on the instance
  (state.py) for Model._do_update (saves.py) and post_save.
- post_save: the old row and the new one (the instance's values over the old, and what
  the database computed), invalidated in one go; then cache_on_save's store.
- post_delete: the row as Collector.delete read it (deletes.py), and the rows keyed to
  it that its deletion changed (invalidate_m2o()).
- m2m_changed: the through rows added or removed; a clear() reads them beforehand.

Every invalidation goes through run_safely(): a Redis failure never breaks the write.
invalidate_dict is looked up at call time in cacheops.query, then in
cacheops.invalidation, where test suites patch it (COMPAT).
"""
from django.db import connections

from .. import invalidation, query
from ..invalidation import invalidate_dicts, obj_dict, run_safely
from ..orphans import covers_model_tables
from ..rows import old_attnames, read_row
from ..utils import is_tracked
from . import returning
from .deletes import invalidate_m2o
from .state import RETURNING, UNKNOWN, pop_save_state, read_old_values, set_outer_aside


# Saves

def _pre_save(sender, instance, raw, using, update_fields, **kwargs):
    if not is_tracked(sender):
        return
    set_outer_aside(instance)  # a save inside a save: a post_save receiver saving again
    # an unsaved instance with a pk may still update an existing row
    if instance.pk is None:
        return
    # fields set to an expression (F('stock') + 1): what the database makes of them is
    # known after the save only, and only from the database if Django defers them then
    state = instance.__dict__
    expressions = tuple(f.attname for f in instance._meta.concrete_fields
                        if hasattr(state.get(f.attname), 'resolve_expression'))
    if expressions:
        state['_cacheops_expressions'] = expressions
    if returning.saves_in_one_statement(sender, connections[using].display_name) \
            and old_attnames(instance, using):
        instance._cacheops_old = RETURNING  # the UPDATE will return them
    else:
        instance._cacheops_old = read_old_values(instance, using)


def _post_save(sender, instance, using, created, update_fields, **kwargs):
    if not is_tracked(sender):
        return
    old, refreshed, expressions = pop_save_state(instance)
    if old is RETURNING:  # Django inserted without trying an update: there was no row
        old = None
    elif old is UNKNOWN:
        run_safely(invalidation.invalidate_model, sender, using=using)
        old = None
    new = obj_dict(instance)
    refreshed = refreshed or {}
    # expressions the instance still holds, or that Django deferred after the save (with
    # no RETURNING to refresh them): ask the database
    computed = tuple(name for name in expressions or () if name not in refreshed and (
        name not in new or hasattr(new[name], 'resolve_expression')))
    if old:
        written = {instance._meta.get_field(name).attname for name in update_fields} \
            if update_fields else set(new)
        new = {**old, **{k: v for k, v in new.items() if k in written or k not in old}}
    new.update(refreshed)  # what the database made of expressions and generated fields
    if computed:
        new.update(_computed_values(sender, instance, using, computed))
    rows = [new] if not old or old == new else [old, new]
    run_safely(_invalidate_dicts_lookup, sender, rows, using=using)
    # after the invalidation, and outside transactions only. A write by another process
    # committed and invalidated between ours and this store would be overwritten: the one
    # window cacheops accepts, for this opt-in feature (see the README)
    run_safely(query.cache_on_save, instance, using)


def _computed_values(model, instance, using, attnames):
    """{attname: value} the database holds for these columns of instance's row, read just
    after its save; {} when it can't tell, and then the model is invalidated.

    Another writer may have moved the values on since: its own invalidation covered the
    values in between, and these are invalidated too, which is only one more."""
    try:
        values = read_row(model._meta.concrete_model, using, instance.pk, attnames)
    except Exception:
        invalidation.logger.exception('cacheops: could not read the values a save computed')
        values = None
    if values is None:
        run_safely(invalidation.invalidate_model, model, using=using)
        return {name: None for name in attnames}  # no condition can match an expression
    return values


_INVALIDATE_DICT = invalidation.invalidate_dict


@covers_model_tables
def _invalidate_dicts_lookup(model, rows, using):
    """invalidate_dict() of each row, looked up at call time in cacheops.query, then in
    cacheops.invalidation: test suites patch it there and expect the calls (COMPAT)."""
    func = query.invalidate_dict
    if func is _INVALIDATE_DICT:
        func = invalidation.invalidate_dict
        if func is _INVALIDATE_DICT:  # not patched: all rows in one go
            invalidate_dicts(model, rows, using=using)
            return
    for row in rows:
        func(model, row, using=using)


# Deletes (Collector.delete reads the rows first, deletes.py)

def _post_delete(sender, instance, using, **kwargs):
    # a model that isn't tracked may still have tracked rows keyed to it
    run_safely(invalidate_m2o, sender, instance, using=using)
    if not is_tracked(sender):
        return
    # the database's values win over the instance's, which may be outdated
    row = {**obj_dict(instance), **(instance.__dict__.pop('_cacheops_deleted', None) or {})}
    run_safely(_invalidate_dicts_lookup, sender, [row], using=using)


# Many-to-many

def _m2m_columns(sender, instance, model, reverse):
    """(column of instance's side, column of the other side) in the through table."""
    field_owner = model if reverse else type(instance)
    for field in field_owner._meta.many_to_many:
        if field.remote_field.through is sender:
            source, target = field.m2m_column_name(), field.m2m_reverse_name()
            return (target, source) if reverse else (source, target)
    raise LookupError('no m2m field with the through model %s' % sender.__name__)


def _m2m_changed(sender, instance, action, reverse, model, pk_set, using, **kwargs):
    if not is_tracked(sender) or action not in ('post_add', 'post_remove', 'pre_clear', 'post_clear'):
        return
    own, other = _m2m_columns(sender, instance, model, reverse)
    if action == 'pre_clear':
        # the rows are gone by post_clear, when invalidation must run: read them now
        pks = sender._base_manager.using(using).filter(**{own: instance.pk}) \
            .nocache().values_list(other, flat=True)
        instance.__dict__.setdefault('_cacheops_cleared', {})[sender] = list(pks)
        return
    if action == 'post_clear':
        pk_set = instance.__dict__.get('_cacheops_cleared', {}).pop(sender, ())
    rows = [{own: instance.pk, other: pk} for pk in pk_set]
    if rows:
        run_safely(_invalidate_dicts_lookup, sender, rows, using=using)
