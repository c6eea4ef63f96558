"""PostgreSQL: a save's UPDATE returning the values it overwrote, in one statement.

Django's UPDATE of the row, its WHERE clause moved into a subquery that reads the row
locked (UPDATE ... FROM (SELECT ... FOR NO KEY UPDATE) ... RETURNING). The lock makes
the subquery see the newest committed version, the one the UPDATE replaces, so the
old values are exactly the ones it overwrote: no race, nothing to retry, no SELECT
before it. The statement returns the values the database computed too (expressions,
generated fields), which invalidation needs of the new row.

Only on PostgreSQL itself and for models of one table, a one-column primary key and no
select_on_save (saves_in_one_statement()); where Django's statement can't be taken
apart so, update_returning() runs nothing and the save goes the conditional way
(saves.py).
"""
import datetime
import decimal
import uuid

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connections, models
from django.db.models.sql import UpdateQuery

from .. import invalidation
from ..conf import derived
from ..rows import old_attnames, pk_row
from ..utils import remember
from .state import UNKNOWN


@derived
def saves_in_one_statement(model, database):
    """Whether a save of model can update its row and return the old values in one
    statement: on PostgreSQL itself (a display name, as backends of other databases
    speaking its protocol take its vendor), for a model of one table and a one-column
    primary key whose UPDATE row counts are trusted (no select_on_save)."""
    meta = model._meta
    return (database == 'PostgreSQL' and not meta.concrete_model._meta.parents
            and not meta.select_on_save and meta.pk.column is not None)


def update_returning(instance, base_qs, using, pk_val, values, new_fields):
    """Django's UPDATE of instance's row, made to return the values it overwrote too: the
    rows (one or none) of new_fields' new values, as Django 6's _do_update returns them,
    or None if the statement can't be built (then nothing ran).

    Sets instance._cacheops_old to the old row (None if no row matched) and
    instance._cacheops_new to new_fields' new values. The UPDATE is Django's own (its SET
    clause, expressions and field preparation), its WHERE clause moved into a subquery
    that locks the row."""
    attnames = old_attnames(instance, using)
    if not attnames or type(base_qs)._update is not models.QuerySet._update:
        return None  # (a queryset class of the base manager's that updates its own way)
    query = base_qs.filter(pk=pk_val).query.chain(UpdateQuery)
    query.add_update_fields(values)
    query.annotations = {}  # as QuerySet._update(): not to end up in subqueries
    compiler = query.get_compiler(using)
    try:
        update_sql, params = compiler.as_sql()
        where_sql, where_params = compiler.compile(query.where)
    except (EmptyResultSet, FullResultSet):
        return None
    where = ' WHERE ' + where_sql
    # the WHERE clause, and its parameters, must be what ends Django's statement
    if (query.get_related_updates() or not update_sql.endswith(where)
            or tuple(params[len(params) - len(where_params):]) != tuple(where_params)):
        return None
    connection = connections[using]
    tail, converters = _returning_tail(
        connection, compiler, base_qs.model, attnames, new_fields, where_sql)
    with connection.cursor() as cursor:
        cursor.execute(update_sql[:-len(where)] + tail, params)
        rows = cursor.fetchall()
    if not rows:
        instance._cacheops_old = None  # Django inserts: there was no old row
        return rows
    count = len(attnames)
    old_converters = {i: c for i, c in converters.items() if i < count}
    new_converters = {i - count: c for i, c in converters.items() if i >= count}
    new_rows = [row[count:] for row in rows]
    if new_converters:  # Django's own: failing, they fail its save as they would anyway
        new_rows = list(compiler.apply_converters(new_rows, new_converters))
    new_rows = [tuple(row) for row in new_rows]
    instance._cacheops_old = _old_row(instance, connection, compiler, attnames, old_converters,
                                      rows[0][:count])
    if new_fields:
        instance._cacheops_new = {f.attname: v for f, v in zip(new_fields, new_rows[0])}
    return new_rows


def _old_row(instance, connection, compiler, attnames, converters, raw):
    """The old row as db_values() gives it, from the values the UPDATE returned; UNKNOWN
    (the save invalidates the model) if converting them fails or doesn't give them back:
    the row is written by now, and the save must not fail."""
    try:
        converted = next(iter(compiler.apply_converters([raw], converters))) if converters else raw
        if _converted_faithfully(connection, type(instance), attnames, converters, raw, converted):
            return {**pk_row(instance), **dict(zip(attnames, converted))}
    except Exception:
        invalidation.logger.exception('cacheops: could not convert the old values a save returned')
    return UNKNOWN


# what a field's get_db_prep_value() gives that Python can compare with a column's value
PLAIN_TYPES = (str, int, float, decimal.Decimal, bytes, datetime.date, datetime.time,
               datetime.timedelta, uuid.UUID, list, type(None))


def _converted_faithfully(connection, model, attnames, converters, raw, converted):
    """Whether the old values, as converted from the database's, prepare back to them.

    A field whose from_db_value() doesn't (a custom one, say) would name the row by a
    value it doesn't hold: the save invalidates the model instead, as where the
    conditional UPDATE fails to match. Only converted columns can differ; an adapter
    (JSON's) isn't compared."""
    for index in converters:
        if index < len(attnames) and converted[index] != raw[index]:
            field = model._meta.get_field(attnames[index])
            prepared = field.get_db_prep_value(converted[index], connection)
            if isinstance(prepared, PLAIN_TYPES) and prepared != raw[index]:
                return False
    return True


def refreshed_fields(model, values):
    """Django < 6: the fields whose new values an update of these values leaves unknown to
    the instance, those set to an expression (F(), a database default) and the generated
    ones, returned for invalidation only (Django 6 returns such fields itself)."""
    return (*(field for field, _, value in values if hasattr(value, 'resolve_expression')),
            *(field for field in model._meta.local_concrete_fields
              if getattr(field, 'generated', False)))


def _returning_tail(connection, compiler, model, attnames, new_fields, where_sql):
    """(SQL replacing ' WHERE <where_sql>' at the end of model's UPDATE, converters of the
    columns it returns), compiled once per connection, model, columns and WHERE clause.

    The subquery reads the row locked, which under READ COMMITTED gives the newest
    committed version, the one the UPDATE then replaces: the old values are exactly the
    ones it overwrote. FOR NO KEY UPDATE is the lock the UPDATE takes itself (unless it
    changes a key, when it takes a stronger one): rows inserted meanwhile with a foreign key
    to this one don't wait. Old columns are aliased, apart from the SET clause's names."""
    key = (model, attnames, tuple(f.attname for f in new_fields), where_sql)
    statements = connection.__dict__.setdefault('_cacheops_update_returning', {})
    try:
        return statements[key]
    except KeyError:
        pass
    qn = connection.ops.quote_name
    meta = model._meta
    table, source = qn(meta.db_table), qn('cacheops_old')
    by_attname = {f.attname: f for f in meta.concrete_fields}
    old_fields = [by_attname[name] for name in attnames]
    aliases = [qn('cacheops_%d' % i) for i in range(len(old_fields))]
    pk, pk_alias = '%s.%s' % (table, qn(meta.pk.column)), qn('cacheops_pk')
    selected = ', '.join('%s.%s AS %s' % (table, qn(f.column), alias)
                         for f, alias in zip(old_fields, aliases))
    returned = ', '.join(['%s.%s' % (source, alias) for alias in aliases]
                         + ['%s.%s' % (table, qn(f.column)) for f in new_fields])
    tail = (' FROM (SELECT %s AS %s, %s FROM %s WHERE %s FOR NO KEY UPDATE) AS %s'
            ' WHERE %s = %s.%s RETURNING %s') % (
        pk, pk_alias, selected, table, where_sql, source, pk, source, pk_alias, returned)
    columns = [f.get_col(meta.db_table) for f in (*old_fields, *new_fields)]
    converters = compiler.get_converters(columns)
    return remember(statements, key, (tail, converters))
