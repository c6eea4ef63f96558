"""Rows as the write paths read them: a row's values by pk, and rows read locked.

Invalidation names rows by their values, and those must be the database's as of the
write: not an instance's copy, which may be outdated, nor values read before another
writer moved them. The model events (events/) read a row's old values before a save
and the rows a delete removes; invalidated_update() (query/writes.py) locks the rows it
updates. This module only reads and locks; invalidating is left to its callers.

- db_values(): the columns a save's invalidation needs of a row (old_attnames()), by
  pk; read_row() compiles its SELECT once per connection, model and columns.
- take_write_lock(), locked_rows(): rows locked in a transaction (SELECT ... FOR
  UPDATE; on SQLite the database's write lock, taken before the first read).
- rows_to_update(), rows_by_pk(): the rows a queryset's update() changes, before it
  (locked, one read where the query allows) and after it (query/writes.py).

A layer below query/ and the events (tests/test_layers.py): it imports neither, and
its reads never go through the cache (nocache()).
"""
from django.db import connections, models
from django.db.models.sql.constants import INNER

from .conf import derived
from .signals import cache_invalidated
from .utils import chunks, written_granular_columns, written_tables

LOCKED_READ_CHUNK = 500  # pks per locked read: under every backend's parameter limit


def db_values(instance, using, lock=False):
    """The row's values before a save, as far as invalidation needs them; None if no row.

    Every column a cached query's condition can use (and, when cache_invalidated has
    listeners, whichever the instance has loaded); the primary key, which an update
    never changes, is known. One cheap SELECT, with no Redis round trip before it.
    """
    attnames = old_attnames(instance, using)
    row = pk_row(instance)
    if not attnames:
        return row
    values = read_row(instance._meta.concrete_model, using, instance.pk, attnames, lock)
    return None if values is None else {**row, **values}


def old_attnames(instance, using):
    """Attnames of the non-pk columns whose old values a save of instance needs."""
    if cache_invalidated.receivers:  # listeners get the whole row, as far as it is loaded
        deferred = instance.get_deferred_fields()
        return tuple(f.attname for f in instance._meta.concrete_fields
                     if not f.primary_key and f.attname not in deferred)
    return granular_attnames(type(instance), connections[using].vendor)


def pk_row(instance):
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
def granular_attnames(model, vendor):
    """Attnames of the non-pk columns an invalidation sends: the old row must have them all."""
    return tuple(attname for _, columns in written_granular_columns(model, vendor)
                 for _, attname, field in columns if not field.primary_key)


def read_row(model, using, pk, attnames, lock=False):
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
    # never through the cache; inplace(): nocache() sets it on qs, sparing a clone
    return qs.inplace().nocache()


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


def update_attnames(model, vendor):
    """Attnames an update's invalidation needs of each row: every table's primary key and
    the columns schemes can name (all of them when cache_invalidated has listeners)."""
    fields = model._meta.concrete_model._meta.concrete_fields
    if cache_invalidated.receivers:
        return tuple(f.attname for f in fields)
    pks = tuple(f.attname for f in fields if f.primary_key)
    return tuple(dict.fromkeys(pks + granular_attnames(model._meta.concrete_model, vendor)))


def rows_to_update(qs, using, attnames, limit):
    """[{'pk': pk, attname: value}] of the rows qs matches, locked as an UPDATE of them
    would lock them (in a transaction); None if there are more than limit."""
    connection = connections[using]
    take_write_lock(qs.model, using)
    read = qs.using(using).order_by().values('pk', *attnames).nocache()
    lock = connection.features.has_select_for_update
    if not lock or _locks_only_written_rows(read):
        rows = list((read.select_for_update(**_save_lock(connection)) if lock else read)[:limit + 1])
        return None if len(rows) > limit else rows
    # DISTINCT, GROUP BY or an outer join can't be read FOR UPDATE, and other tables'
    # rows are none of the update's: the pks first, then the rows by pk, locked
    pks = list(read.values_list('pk', flat=True)[:limit + 1])
    if len(pks) > limit:
        return None
    rows = locked_rows(qs.model._meta.concrete_model, using, pks, attnames)
    return [{'pk': pk, **row} for pk, row in rows.items()]


def _locks_only_written_rows(read):
    """Whether read's FOR UPDATE locks just the rows an update of it writes: its tables are
    the model's and its multi-table parents', inner joined, and nothing is grouped."""
    query = read.query
    tables = {table for table, _ in written_tables(read.model)}
    return (not query.distinct and query.group_by is None
            # a join resolved away (an attname of a foreign key) stays, unreferenced, unused
            and all(join.table_name in tables and join.join_type in (None, INNER)
                    for alias, join in query.alias_map.items() if query.alias_refcount[alias]))


def rows_by_pk(model, using, pks, attnames):
    """{pk: {attname: value}} of these rows, read as they are now (after an update)."""
    rows = {}
    for chunk in chunks(pks, LOCKED_READ_CHUNK):
        for row in _orm_row_read(model._meta.concrete_model, using, ('pk', *attnames), pk__in=chunk):
            rows[row.pop('pk')] = row
    return rows
