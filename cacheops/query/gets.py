"""get() by one unique column, keyed without building or compiling a query; local_get."""
from contextlib import contextmanager

from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Q
from django.db.models.query import MAX_GET_RESULTS, ModelIterable

from ..chain import _django
from ..conf import derived, model_profile, prefix_func
from ..keys import prefix_for
from ..utils import md5hex, remember, tracked_tables, written_tables
from .async_reads import cached_or_probed
from .fetch_modes import _track_peers
from .keys import _field_list


class FastGet:
    """QuerySetMixin's methods for get() by a unique column (gathered into it)."""

    def _fast_get(self, fast, args, kwargs, cache_settings):
        """get() by a unique column: the key comes from the value, no SQL is compiled on a hit."""
        key, query, dnfs = self._fast_entry(fast, args, kwargs)
        compiled = []

        def warm():  # while Redis places the marker: build, and compile too
            compiled.append(_compile(query()))

        def fetch():
            qs = query()
            with _precompiled(qs, compiled):
                return list(qs._iterable_class(qs))

        timeout, lock = cache_settings
        rows = cached_or_probed(key, dnfs, timeout, fetch, lock=lock, sender=self.model, warm=warm)
        return self._one_row(rows)

    def _fast_entry(self, fast, args, kwargs):
        """(key, query(): the queryset get() would evaluate, dnfs()) of a fast get()."""
        key, known_dnfs = fast
        built = []

        def query():  # what get() would evaluate: only needed on a miss
            if not built:
                # built by Django at once: recording the calls to replay them costs more
                qs = _django['QuerySet.filter'](self._for_get(), *args, **kwargs)
                qs.query.clear_ordering(force=True)
                qs.query.set_limits(high=MAX_GET_RESULTS)
                built.append(qs)
            return built[0]

        if known_dnfs is None or not tracked_tables().issuperset(known_dnfs[0][1]):
            dnfs = lambda: query()._cacheable_dnfs()  # noqa: E731
        else:
            dnfs = lambda: known_dnfs  # noqa: E731
        return key, query, dnfs

    def _one_row(self, rows):
        """What get() returns for the rows it read, or the error it raises."""
        if len(rows) == 1:
            _track_peers(self, rows)
            return rows[0]
        name = self.model._meta.object_name
        if not rows:
            raise self.model.DoesNotExist('%s matching query does not exist.' % name)
        raise self.model.MultipleObjectsReturned('get() returned more than one %s -- it returned %s!' % (
            name, len(rows) if len(rows) < MAX_GET_RESULTS else 'more than %d' % (MAX_GET_RESULTS - 1)))

    def _is_simple(self):
        """A plain manager queryset: no conditions, joins, limits or custom results."""
        d = self.__dict__
        if d.get('_pending') or self._deferred_filter is not None:
            return False
        return self._plain_over(d['_query'])  # only read: the getter's bookkeeping would cost every get()

    def _plain_over(self, query):
        """Whether this queryset would be plain over this Query (see _is_simple)."""
        return not (query.where or query.combinator or query.annotations or query.select_related
                    or query.is_sliced or query.deferred_loading[0] or query.extra or query.distinct
                    or query.extra_tables or self._prefetch_related_lookups) \
            and self._iterable_class is ModelIterable and self._result_cache is None

    def _recorded_get(self):
        """(args, kwargs) of the one filter() call recorded on a plain manager queryset, or
        None: its get() compiles as a get() with these arguments would."""
        pending = self.__dict__.get('_pending')
        if not pending or len(pending[1]) != 1 or self._deferred_filter is not None:
            return None
        call = pending[1][0]
        if call[0] != 'filter' or call[1] or not self._plain_over(pending[0]):
            return None
        return call[3], dict(call[4])


def _compile(qs):
    """(compiler, (sql, params)): the compiler Django's ModelIterable gets for qs, compiled
    ahead (while Redis places a miss's marker)."""
    compiler = qs.query.get_compiler(using=qs.db)
    return compiler, compiler.as_sql()


@contextmanager
def _precompiled(qs, compiled):
    """Within, evaluating qs takes the compiler in compiled ([] or [_compile(qs)]) for its
    get_compiler(using=qs.db), and its SQL for as_sql(), once each. Both are set on the
    Query and the compiler only meanwhile: the closures refer back to them."""
    if not compiled:
        yield
        return
    compiler, sql = compiled[0]
    query, db = qs.query, qs.db

    def as_sql(*args, **kwargs):
        del compiler.as_sql
        return compiler.as_sql(*args, **kwargs) if args or kwargs else sql

    def get_compiler(using=None, connection=None, elide_empty=True):
        del query.get_compiler
        if (using, connection, elide_empty) == (db, None, True):
            return compiler
        return query.get_compiler(using, connection, elide_empty)
    compiler.as_sql, query.get_compiler = as_sql, get_compiler
    try:
        yield
    finally:
        compiler.__dict__.pop('as_sql', None)
        query.__dict__.pop('get_compiler', None)


# local_get: simple gets kept in this process's memory, never invalidated (as documented);
# bounded as the memos are, lookups may come from requests
_local_gets = {}


def _local_get(qs, kwargs):
    key = (qs.model._meta.label, qs.db, tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:  # unhashable lookup values
        key = (qs.model._meta.label, qs.db, repr(key[2]))
    try:
        return _local_gets[key]
    except KeyError:
        return remember(_local_gets, key, _django['QuerySet.get'](qs.nocache(), **kwargs))


# Keys of get() by a unique column, computed without building or compiling a query

_unique_lookups = {}


def _single_lookup(args, kwargs):
    """(name, value) when get() was given exactly one plain condition, else None."""
    if not args:
        return next(iter(kwargs.items())) if len(kwargs) == 1 else None
    if kwargs or len(args) != 1 or type(args[0]) is not Q:
        return None
    q = args[0]  # foreign key access passes Q(<target attname>=<value>)
    if q.negated or len(q.children) != 1 or not isinstance(q.children[0], tuple):
        return None
    return q.children[0]


def _unique_field(model, name):
    """(the concrete unique field a lookup name selects by equality, the ints it may take
    or None for any), or None."""
    try:
        return _unique_lookups[model, name]
    except KeyError:
        pass
    opts = model._meta
    base = name[:-7] if name.endswith('__exact') else name
    parts = base.split('__')
    field = int_range = None
    try:
        if base == 'pk':
            field = opts.pk
        elif len(parts) == 1:
            field = opts.get_field(base)
        elif len(parts) == 2:  # a one-to-one by the target's column: 'post__id'
            fk = opts.get_field(parts[0])
            target = fk.target_field
            if fk.one_to_one and fk.concrete and not target.is_relation and \
                    parts[1] in ('pk', target.name, target.attname):
                field = fk
                # Django compiles 'post__id' as 'post_id' only for ints every database
                # takes: outside them, as no rows (see chain._through_target)
                int_range = BaseDatabaseOperations.integer_field_ranges.get(target.get_internal_type())
                if int_range is None:
                    field = None
    except Exception:  # FieldDoesNotExist and friends: Django will say what is wrong
        field = None
    if field is not None and not (getattr(field, 'concrete', False) and field.column
                                  and (field.primary_key or field.unique)):
        field = None
    found = _unique_lookups[model, name] = None if field is None else (field, int_range)
    return found



def fast_get(qs, args, kwargs):
    """(key, dnfs or None) of get() by one unique column on a plain queryset, or None.

    The dnfs are given when they are known without building the query: a model with no
    multi-table parents, whose get() by a column reads one table under that condition.
    """
    lookup = _single_lookup(args, kwargs)
    if lookup is None:
        return None
    model = qs.model
    found = _unique_field(model, lookup[0])
    if found is None:
        return None
    field, int_range = found
    value = _compared_value(field, int_range, lookup[1])
    if value is _NOT_PLAIN:
        return None
    try:
        value = field.get_prep_value(value)
    except (TypeError, ValueError):
        return None  # Django raises the proper error
    db = qs.db
    if prefix_func() is not None:  # a prefix may change by request: no memo
        return _fast_get_key(model, db, field, value)
    # the same (key, dnfs) objects for the same get(): insideout mode keeps the stamp
    # keys per DNFs object (getset.insideout_keys)
    memo = _get_keys_memo()
    try:
        # equal values may be passed as different parameters (Decimal('1.0'), Decimal('1.00')):
        # but for ints and strings, by what their key says
        memo_key = (model, field, value if type(value) in _SAME_AS_EQUAL else _key_value(value), db)
        found = memo.get(memo_key)
    except TypeError:  # an unhashable value
        return _fast_get_key(model, db, field, value)
    if found is None:
        found = remember(memo, memo_key, _fast_get_key(model, db, field, value))
    return found


_NOT_PLAIN = object()
_SAME_AS_EQUAL = frozenset({int, str})  # types whose equal values have equal reprs


def _compared_value(field, int_range, value):
    """The value Django compares the column to, or _NOT_PLAIN when Django must see it:
    an expression, an instance not of the related model or not saved, an int beyond
    int_range."""
    if type(value) not in _SAME_AS_EQUAL:
        if hasattr(value, 'resolve_expression'):
            return _NOT_PLAIN
        if hasattr(value, '_meta'):
            # get(post=extra.post) is get(post_id=extra.post_id)
            if not field.is_relation or type(value) is not field.related_model or value.pk is None:
                return _NOT_PLAIN
            value = getattr(value, field.target_field.attname)
            if value is None:
                return _NOT_PLAIN
    if int_range is not None and value is not None and \
            (type(value) is not int or not int_range[0] <= value <= int_range[1]):
        return _NOT_PLAIN
    return value


def _key_value(value):
    """A prepared value in a key: different for the values Django passes as different
    parameters (conj_value() gives '1' for True and 'None' for None and 'None', as
    invalidation needs)."""
    return '%s:%r' % (type(value).__name__, value)


def _fast_get_key(model, db, field, value):
    tables = _written_table_names(model)
    parts = ['get', model._meta.label, '' if model_profile(model).db_agnostic else db,
             field.column, _key_value(value), _field_list(model)]
    prefix = '' if prefix_func() is None else prefix_for([db], list(tables))
    key = '%sq:%s' % (prefix, md5hex('\n'.join(parts)))
    if len(tables) > 1 or value is None:
        return key, None
    return key, [(db, {tables[0]: [{field.column: value}]})]


@derived
def _get_keys_memo():
    return {}  # dropped on every setting change: profiles go into keys


_table_names = {}


def _written_table_names(model):
    """The tables written_tables() lists, memoized: a get() hit asks."""
    try:
        return _table_names[model]
    except KeyError:
        value = _table_names[model] = tuple(table for table, _ in written_tables(model))
        return value
