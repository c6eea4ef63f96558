"""Model events -> the rows to invalidate, read so that no write can slip between.

An update invalidates by the row's values before and after it; a delete by the
values the row had when it went. Those must be the values the database held when
the write happened, not an instance's (possibly outdated) copy, and not values read
before another process changed them: with two writers, one reading the old values,
the other committing a change, a reader caching the change and then the first
writer's update moving the row on, the reader's entry would outlive both writes.

- On PostgreSQL a save is one statement: Django's UPDATE, taking the row from a
  subquery that reads it locked and returning the values it overwrote (UPDATE ... FROM
  (SELECT ... FOR NO KEY UPDATE) ... RETURNING). The lock makes the subquery see the
  newest committed version, the one the UPDATE replaces: no race, nothing to retry.
  Not for multi-table children, select_on_save and composite primary keys, nor where the
  statement can't be built from Django's: those go on as below.
- Elsewhere a save reads the old values first (one SELECT by pk) and makes Django's
  UPDATE conditional on them; if another writer changed them meanwhile the UPDATE
  matches nothing, and the values are read again and the update retried. No lock, and
  no extra round trip when nobody races.
- A delete is a transaction already (Django's Collector): the rows are read there,
  locked (SELECT ... FOR UPDATE, or on SQLite the write lock taken first).

monkey.py connects the handlers and wraps Model._do_update and Collector.delete.
"""
import datetime
import decimal
import functools
import threading
import uuid
from contextlib import contextmanager
from operator import attrgetter

import django
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models, transaction
from django.db.models.deletion import get_candidate_relations_to_delete
from django.db.models.sql import UpdateQuery
from django.db.models.sql.where import AND, ExtraWhere

from . import invalidation, query
from .conf import derived
from .invalidation import invalidate_dicts, obj_dict, run_safely
from .signals import cache_invalidated
from .utils import chunks, is_tracked, remember, written_granular_columns

# how often a save's update is retried when its old values keep changing under it
UPDATE_ATTEMPTS = 5

# _cacheops_old when the old values could not be known: the save invalidates the model
UNKNOWN = 'unknown'

# _cacheops_old until the save's UPDATE returns the old values itself (PostgreSQL)
RETURNING = 'returning'

LOCKED_READ_CHUNK = 500  # pks per locked read: under every backend's parameter limit


# Reading rows

def _db_values(instance, using, lock=False):
    """The row's values before a save, as far as invalidation needs them; None if no row.

    Every column a cached query's condition can use (and, when cache_invalidated has
    listeners, whichever the instance has loaded); the primary key, which an update
    never changes, is known. One cheap SELECT, with no Redis round trip before it.
    """
    attnames = _old_attnames(instance, using)
    row = _pk_row(instance)
    if not attnames:
        return row
    values = _read_row(instance._meta.concrete_model, using, instance.pk, attnames, lock)
    return None if values is None else {**row, **values}


def _old_attnames(instance, using):
    """Attnames of the non-pk columns whose old values a save of instance needs."""
    if cache_invalidated.receivers:  # listeners get the whole row, as far as it is loaded
        deferred = instance.get_deferred_fields()
        return tuple(f.attname for f in instance._meta.concrete_fields
                     if not f.primary_key and f.attname not in deferred)
    return _granular_attnames(type(instance), connections[using].vendor)


def _pk_row(instance):
    """{attname: value} of instance's primary keys, which an update never changes."""
    # the model's and its multi-table parents': a second concrete parent's differs from
    # instance.pk
    row = {}
    for field in instance._meta.concrete_fields:
        if field.primary_key:
            value = instance.__dict__.get(field.attname)
            row[field.attname] = instance.pk if value is None else value
    return row


@derived
def _granular_attnames(model, vendor):
    """Attnames of the non-pk columns an invalidation sends: the old row must have them all."""
    return tuple(attname for _, columns in written_granular_columns(model, vendor)
                 for _, attname, field in columns if not field.primary_key)


def _read_row(model, using, pk, attnames, lock=False):
    """{attname: value} of the row with this pk, or None: values() without building a query.

    The statement is compiled once per connection, model and columns; each call runs it
    and applies the same converters values() would. With lock, in a transaction on a
    backend that can, the row is read locked, as an UPDATE sees it: MySQL's repeatable
    read would otherwise show a snapshot older than the row an UPDATE failed to match.
    """
    connection = connections[using]
    if lock and connection.in_atomic_block and connection.features.has_select_for_update:
        locked = _orm_row_read(model, using, attnames, pk=pk).select_for_update(**_save_lock(connection))
        return next(iter(locked), None)
    statements = connection.__dict__.setdefault('_cacheops_row_reads', {})
    try:
        statement = statements[model, attnames]
    except KeyError:
        statement = statements[model, attnames] = _row_statement(model, using, pk, attnames)
    if statement is None:  # a pk Django prepares in some way we don't mirror: ask the ORM
        return next(iter(_orm_row_read(model, using, attnames, pk=pk)), None)
    compiler, sql, names, converters = statement
    with connection.cursor() as cursor:
        cursor.execute(sql, [_pk_param(model, connection, pk)])
        found = cursor.fetchone()
    if found is None:
        return None
    if converters:
        found = next(iter(compiler.apply_converters([found], converters)))
    return dict(zip(names, found))


def _orm_row_read(model, using, attnames, **conditions):
    # no ordering: Meta.ordering may join, and FOR UPDATE can't lock an outer join
    qs = models.QuerySet(model).using(using).filter(**conditions).order_by().values(*attnames)
    qs._cacheconf = query.NO_CACHE  # never through the cache; set in place, sparing a clone
    return qs


def _for_update(qs):
    """qs locking the rows of its model's own table (the whole join where OF isn't supported)."""
    # (Django 5.2 can't compile OF for a composite primary key)
    if connections[qs.db].features.has_select_for_update_of and qs.model._meta.pk.column:
        return qs.select_for_update(of=('self',))
    return qs.select_for_update()


def _save_lock(connection):
    """select_for_update() arguments for the lock an UPDATE changing no key takes: on
    PostgreSQL FOR NO KEY UPDATE, which rows inserted meanwhile with a foreign key to
    this one don't wait for (FOR UPDATE would make them, as Django's save doesn't)."""
    return {'no_key': True} if connection.features.has_select_for_no_key_update else {}


def _pk_param(model, connection, pk):
    field = model._meta.pk
    return field.get_db_prep_value(field.get_prep_value(pk), connection, prepared=True)


def _row_statement(model, using, pk, attnames):
    """(compiler, sql, names, converters) reading attnames by pk, or None if params differ."""
    qs = models.QuerySet(model).using(using).filter(pk=pk).values(*attnames)
    compiler = qs.query.get_compiler(using=using)
    sql, params = compiler.as_sql()
    connection = connections[using]
    if list(params) != [_pk_param(model, connection, pk)]:
        return None
    query = qs.query
    names = [*query.extra_select, *query.values_select, *query.annotation_select]
    converters = compiler.get_converters([s[0] for s in compiler.select[:compiler.col_count]])
    return compiler, sql, names, converters


def take_write_lock(model, using):
    """In a transaction, make sure nobody else can change model's rows until it ends.

    For SQLite, whose locks are per database: a write that changes nothing takes the
    write lock before any read, so the reads that follow see the latest rows and can't
    deadlock against another writer (a reader upgrading to writer gets SQLITE_BUSY at
    once). Elsewhere rows are locked as they are read (FOR UPDATE)."""
    connection = connections[using]
    if connection.vendor == 'sqlite':
        qn = connection.ops.quote_name
        model = model._meta.concrete_model  # a proxy has no fields of its own
        # any real column: a composite primary key has none of its own
        column = qn(model._meta.local_concrete_fields[0].column)
        with connection.cursor() as cursor:
            cursor.execute('UPDATE %s SET %s = %s WHERE 1 = 0' % (qn(model._meta.db_table), column, column))


def locked_rows(model, using, pks, attnames):
    """{pk: {attname: value}} of these rows as the database has them, locked (in a transaction)."""
    connection = connections[using]
    take_write_lock(model, using)
    lock = connection.features.has_select_for_update
    rows = {}
    for chunk in chunks(pks, LOCKED_READ_CHUNK):
        qs = _orm_row_read(model, using, ('pk', *attnames), pk__in=chunk)
        for row in (_for_update(qs) if lock else qs):
            rows[row.pop('pk')] = row
    return rows


# Saves

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
                    else _refreshed_fields(base_qs.model, values)
                rows = _update_returning(self, base_qs, using, pk_val, values, new_fields)
                if rows is not None:
                    return rows if returns_rows else bool(rows)
            # no UPDATE to return them, or one we can't build: read them as elsewhere
            old = self._cacheops_old = _read_old_values(self, using)
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
            current = _db_values(self, using, lock=True)
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
    """_db_values() of a single-table model, read locked as its UPDATE would (in a
    transaction; on SQLite the write lock taken first)."""
    try:
        take_write_lock(type(instance)._meta.concrete_model, using)
        return _db_values(instance, using, lock=True)
    except DatabaseError:
        raise  # the transaction can't go on, nor could the save
    except Exception:  # a converter, say: the save must not fail (it invalidates the model)
        invalidation.logger.exception('cacheops: could not read old values before save')
        return UNKNOWN


def _returning_fields(args, kwargs):
    # Django 6's _do_update(..., update_fields, forced_update, returning_fields)
    return args[2] if len(args) > 2 else kwargs.get('returning_fields')


# One statement (PostgreSQL)

@derived
def _saves_in_one_statement(model, database):
    """Whether a save of model can update its row and return the old values in one
    statement: on PostgreSQL itself (a display name, as backends of other databases
    speaking its protocol take its vendor), for a model of one table and a one-column
    primary key whose UPDATE row counts are trusted (no select_on_save)."""
    meta = model._meta
    return (database == 'PostgreSQL' and not meta.concrete_model._meta.parents
            and not meta.select_on_save and meta.pk.column is not None)


def _update_returning(instance, base_qs, using, pk_val, values, new_fields):
    """Django's UPDATE of instance's row, made to return the values it overwrote too: the
    rows (one or none) of new_fields' new values, as Django 6's _do_update returns them,
    or None if the statement can't be built (then nothing ran).

    Sets instance._cacheops_old to the old row (None if no row matched) and
    instance._cacheops_new to new_fields' new values. The UPDATE is Django's own (its SET
    clause, expressions and field preparation), its WHERE clause moved into a subquery
    that locks the row."""
    attnames = _old_attnames(instance, using)
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
    """The old row as _db_values() gives it, from the values the UPDATE returned; UNKNOWN
    (the save invalidates the model) if converting them fails or doesn't give them back:
    the row is written by now, and the save must not fail."""
    try:
        converted = next(iter(compiler.apply_converters([raw], converters))) if converters else raw
        if _converted_faithfully(connection, type(instance), attnames, converters, raw, converted):
            return {**_pk_row(instance), **dict(zip(attnames, converted))}
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


def _refreshed_fields(model, values):
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


# Save events

def _read_old_values(instance, using):
    """_db_values(), or UNKNOWN if it fails: a failing read must not break the save (the
    save invalidates the model instead)."""
    try:
        return _db_values(instance, using)
    except Exception:
        invalidation.logger.exception('cacheops: could not read old values before save')
        return UNKNOWN


def _pre_save(sender, instance, raw, using, update_fields, **kwargs):
    if not is_tracked(sender):
        return
    state = instance.__dict__
    if any(key in state for key in SAVE_STATE):
        # a save inside a save (a post_save receiver that runs before ours saving again):
        # the outer one's values are kept aside until this one is done
        state.setdefault('_cacheops_outer', []).append(tuple(state.pop(key, None) for key in SAVE_STATE))
    # an unsaved instance with a pk may still update an existing row
    if instance.pk is None:
        return
    # fields set to an expression (F('stock') + 1): what the database makes of them is
    # known after the save only, and only from the database if Django defers them then
    expressions = tuple(f.attname for f in instance._meta.concrete_fields
                        if hasattr(state.get(f.attname), 'resolve_expression'))
    if expressions:
        state['_cacheops_expressions'] = expressions
    if _saves_in_one_statement(sender, connections[using].display_name) \
            and _old_attnames(instance, using):
        instance._cacheops_old = RETURNING  # the UPDATE will return them
    else:
        instance._cacheops_old = _read_old_values(instance, using)


def _post_save(sender, instance, using, created, update_fields, **kwargs):
    if not is_tracked(sender):
        return
    old, refreshed, expressions = _pop_save_state(instance)
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


# What a save keeps on its instance from pre_save to post_save: the old values, the
# values the database computed (returned by PostgreSQL's one statement), the fields set
# to expressions
SAVE_STATE = ('_cacheops_old', '_cacheops_new', '_cacheops_expressions')


def _pop_save_state(instance):
    """The SAVE_STATE values of the save ending, giving back those of a save it ran inside."""
    state = instance.__dict__
    current = tuple(state.pop(key, None) for key in SAVE_STATE)
    outer = state.get('_cacheops_outer')
    if outer:
        for key, value in zip(SAVE_STATE, outer.pop()):
            if value is not None:
                state[key] = value
        if not outer:
            del state['_cacheops_outer']
    return current


def _computed_values(model, instance, using, attnames):
    """{attname: value} the database holds for these columns of instance's row, read just
    after its save; {} when it can't tell, and then the model is invalidated.

    Another writer may have moved the values on since: its own invalidation covered the
    values in between, and these are invalidated too, which is only one more."""
    try:
        values = _read_row(model._meta.concrete_model, using, instance.pk, attnames)
    except Exception:
        invalidation.logger.exception('cacheops: could not read the values a save computed')
        values = None
    if values is None:
        run_safely(invalidation.invalidate_model, model, using=using)
        return {name: None for name in attnames}  # no condition can match an expression
    return values


_INVALIDATE_DICT = invalidation.invalidate_dict


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


# Deletes

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
        attnames = _granular_attnames(model, vendor)
        if not attnames:
            continue
        rows = locked_rows(model._meta.concrete_model, using, [obj.pk for obj in instances], attnames)
        for obj in instances:
            obj._cacheops_deleted = rows.get(obj.pk)


def _post_delete(sender, instance, using, **kwargs):
    # a model that isn't tracked may still have tracked rows keyed to it
    run_safely(query.invalidate_m2o, sender, instance, using=using)
    if not is_tracked(sender):
        return
    # the database's values win over the instance's, which may be outdated
    row = {**obj_dict(instance), **(instance.__dict__.pop('_cacheops_deleted', None) or {})}
    run_safely(_invalidate_dicts_lookup, sender, [row], using=using)


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
