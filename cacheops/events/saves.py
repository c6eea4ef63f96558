"""A save's UPDATE made conditional on the old values read before it, and retried.

Where the UPDATE can't return the old values itself (returning.py), _pre_save reads
them first (one SELECT by pk) and Model._do_update, wrapped here, adds them to its
WHERE clause: the UPDATE changes the row only while it still holds the values the save
will invalidate by. If another writer moved them meanwhile the UPDATE matches nothing;
the values are read again (locked in a transaction, where MySQL's repeatable read
would show an older snapshot) and the update retried, up to UPDATE_ATTEMPTS times, then
left to Django with the model invalidated whole (UNKNOWN). No lock and no extra round
trip when nobody races.

select_on_save models, whose UPDATE row counts can't be trusted, read the row locked
instead and keep it so until Django's update is done.
"""
import functools

import django
from django.db import DatabaseError, connections, models, transaction
from django.db.models.sql.where import AND, ExtraWhere

from .. import invalidation
from ..conf import derived
from ..rows import db_values, take_write_lock
from ..utils import written_granular_columns
from . import returning
from .state import RETURNING, UNKNOWN, read_old_values

# how often a save's update is retried when its old values keep changing under it
UPDATE_ATTEMPTS = 5


@derived
def _own_granular_fields(model, vendor):
    """The non-pk fields of model's own table that invalidation reads of an old row (the
    first table written_granular_columns() lists is the model's own)."""
    _, columns = written_granular_columns(model, vendor)[0]
    return tuple(field for _, _, field in columns if not field.primary_key)


def _unchanged(model, row, vendor):
    """filter() kwargs matching model's own table only while it holds row's values."""
    conditions = {}
    for field in _own_granular_fields(model, vendor):
        if field.attname in row:
            value = row[field.attname]
            if value is None:
                conditions[field.attname + '__isnull'] = True
            else:
                conditions[field.attname] = value
    return conditions


def _while_unchanged(base_qs, row, using):
    """base_qs narrowed to the rows of its model's own table that still hold row's values
    (None if that table has no such column).

    filter() would build and compile a lookup per column on every save, which on SQLite
    takes about as long as the UPDATE. The WHERE clause is compiled once per connection,
    model, columns and boolean values (Django renders `flag = true` as the bare column),
    and kept only if it takes exactly the parameters given here."""
    connection = connections[using]
    model = base_qs.model
    conditions = _unchanged(model, row, connection.vendor)
    if not conditions:
        return None
    # the order Q gives keyword conditions, and so their parameters
    shape = tuple((name, value if isinstance(value, bool) else None)
                  for name, value in sorted(conditions.items()))
    statements = connection.__dict__.setdefault('_cacheops_unchanged_where', {})
    try:
        statement = statements[model, shape]
    except KeyError:
        statement = statements[model, shape] = _where_statement(model, using, conditions, shape)
    if statement is None:  # values Django prepares in some way we don't mirror: let it
        return base_qs.filter(**conditions)
    sql, with_bools = statement
    qs = base_qs._chain()
    qs.query.where.add(ExtraWhere([sql], _params(model, conditions, shape, with_bools, connection)), AND)
    return qs


def _params(model, conditions, shape, with_bools, connection):
    """The parameters of the conditions' WHERE clause: their values prepared for the
    database, in shape's order; booleans too if with_bools (isnull takes none)."""
    return [model._meta.get_field(name).get_db_prep_value(conditions[name], connection)
            for name, flag in shape
            if not name.endswith('__isnull') and (flag is None or with_bools)]


def _where_statement(model, using, conditions, shape):
    """(SQL of filter(**conditions)'s WHERE clause, whether booleans are parameters), or
    None if its parameters aren't the conditions' values prepared for the database."""
    connection = connections[using]
    query = models.QuerySet(model).using(using).filter(**conditions).query
    sql, where_params = query.get_compiler(using=using).compile(query.where)
    for with_bools in (False, True):
        if list(where_params) == _params(model, conditions, shape, with_bools, connection):
            return sql, with_bools
    return None


def conditional_do_update(original):
    """Model._do_update, returning the old values from the same statement where _pre_save
    left that to it (PostgreSQL), else conditional on the old values _pre_save read (see
    the docstring of this module); Django's own when nothing was read."""
    # Django 6.0+ passes returning_fields and takes the rows of their new values back
    returns_rows = django.VERSION >= (6, 0)

    @functools.wraps(original)
    def _do_update(self, base_qs, using, pk_val, values, *args, **kwargs):
        old = self.__dict__.get('_cacheops_old', UNKNOWN)
        if old is RETURNING:
            if values:
                new_fields = tuple(_returning_fields(args, kwargs) or ()) if returns_rows \
                    else returning.refreshed_fields(base_qs.model, values)
                rows = returning.update_returning(self, base_qs, using, pk_val, values, new_fields)
                if rows is not None:
                    return rows if returns_rows else bool(rows)
            # no UPDATE to return them, or one we can't build: read them as elsewhere
            old = self._cacheops_old = read_old_values(self, using)
        if not values or old is UNKNOWN:
            return original(self, base_qs, using, pk_val, values, *args, **kwargs)
        if self._meta.select_on_save:
            # for databases whose UPDATE may report 0 rows it changed: a conditional one
            # can't tell a mismatch then. The row is read again locked, and stays so
            # until Django's update is done (not a multi-table row: the race stays open).
            if self._meta.concrete_model._meta.parents:
                return original(self, base_qs, using, pk_val, values, *args, **kwargs)
            with transaction.atomic(using=using, savepoint=False):
                old = self._cacheops_old = _locked_old_values(self, using)
                result = original(self, base_qs, using, pk_val, values, *args, **kwargs)
                if old is None and result:
                    # no row to lock when read (PostgreSQL): one inserted since was updated
                    self._cacheops_old = UNKNOWN
                return result
        if old is None:  # no row when read: if one appears meanwhile, its values are unknown
            result = original(self, base_qs, using, pk_val, values, *args, **kwargs)
            if result:
                self._cacheops_old = UNKNOWN
            return result
        vendor = connections[using].vendor
        model = base_qs.model
        for _ in range(UPDATE_ATTEMPTS):
            narrowed = _while_unchanged(base_qs, old, using)
            if narrowed is None:
                return original(self, base_qs, using, pk_val, values, *args, **kwargs)
            result = original(self, narrowed, using, pk_val, values, *args, **kwargs)
            if result:
                return result
            current = db_values(self, using, lock=True)
            if current is None:
                return result  # the row is gone: Django goes on as it would have (inserts)
            # only this table's: a multi-table parent updated before shows our new values
            # now, and its old ones were confirmed by its own conditional update
            fresh = {f.attname: current[f.attname] for f in _own_granular_fields(model, vendor)
                     if f.attname in current}
            if all(old.get(name, fresh[name]) == fresh[name] for name in fresh):
                break  # the database doesn't match the values it returned: a custom field?
            self._cacheops_old = old = {**old, **fresh}
        self._cacheops_old = UNKNOWN
        return original(self, base_qs, using, pk_val, values, *args, **kwargs)
    return _do_update


def _locked_old_values(instance, using):
    """db_values() of a single-table model, read locked as its UPDATE would (in a
    transaction; on SQLite the write lock taken first)."""
    try:
        take_write_lock(type(instance)._meta.concrete_model, using)
        return db_values(instance, using, lock=True)
    except DatabaseError:
        raise  # the transaction can't go on, nor could the save
    except Exception:  # a converter, say: the save must not fail (it invalidates the model)
        invalidation.logger.exception('cacheops: could not read old values before save')
        return UNKNOWN


def _returning_fields(args, kwargs):
    # Django 6's _do_update(..., update_fields, forced_update, returning_fields)
    return args[2] if len(args) > 2 else kwargs.get('returning_fields')
