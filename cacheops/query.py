"""QuerySet and Manager additions and the cached op paths (model events: events.py).

monkey.py grafts QuerySetMixin and ManagerMixin onto Django's classes; nothing here
patches anything by itself.
"""
import threading
import weakref
from contextlib import contextmanager
from typing import NamedTuple

import django
from django.core.exceptions import EmptyResultSet, ImproperlyConfigured
from django.db import connections, router, transaction
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.utils import DJANGO_VERSION_PICKLE_KEY
from django.db.models import Q
from django.db.models.query import MAX_GET_RESULTS, ModelIterable

try:
    from django.db.models.fetch_modes import FETCH_ONE  # Django 6.1+
except ImportError:
    FETCH_ONE = None

from . import chain, invalidation
from . import fingerprint as fingerprints  # its VERIFY switch, read at call time
from .conf import ALL_OPS, derived, model_profile, normalize_ops, prefix_func, settings
from .getset import cached_call
from .fingerprint import chain_fingerprint, expressions_fingerprint, plain_ordering_name, query_fingerprint
# invalidate_dict: COMPAT, the model-event handlers look it up here
from .invalidation import invalidate_dict, invalidate_dicts, obj_dict, run_safely  # noqa: F401
from .keys import prefix_for
from .rows import take_write_lock
from .transaction import transaction_states
from .tree import query_dnfs
from .utils import is_tracked, md5hex, remember, tracked_tables, written_tables

from .chain import _django  # Django's own methods that the mixins wrap


UNSET = object()  # an argument not given (None is a value there)


class CacheConf(NamedTuple):
    """What .cache()/.nocache()/.inplace() set on a queryset; None means 'from the profile'."""
    ops: frozenset = None
    timeout: int = None
    lock: bool = None
    op: str = None          # 'get' when fetching for get()/first()/last()
    inplace: bool = False


NO_CONF = CacheConf()
NO_CACHE = CacheConf(ops=frozenset())


class _Lent:
    """What .query gives Django's _clone() while a call is recorded: chain() shares it."""
    __slots__ = ('query',)

    def __init__(self, query):
        self.query = query

    def chain(self):
        return self.query


class _Lending(threading.local):
    qs = query = None  # in this thread: the queryset lending its Query, and the Query lent


_lending = _Lending()


class QuerySetMixin:
    _cacheconf = NO_CONF
    # Recorded calls (chain.py): (the Query they build on, the calls), in one attribute so
    # that a thread cloning this queryset never sees the one without the other; whether
    # _query is shared with other querysets (how to copy it then: 'chain' or 'clone');
    # whether .query ever handed it out
    _pending = ()
    _query_shared = False
    _query_seen = False

    # The public surface

    def cache(self, ops=None, timeout=None, lock=None):
        """Cache this queryset's ops (all by default), optionally with a timeout and a dog-pile lock."""
        profile = model_profile(self.model)
        if profile is None and settings.CACHEOPS_ENABLED:
            raise ImproperlyConfigured(
                'cacheops: %s has no profile in CACHEOPS (or it is None), so its querysets '
                'cannot be cached; add a profile for %r to enable .cache()'
                % (self.model.__name__, self.model._meta.label_lower))
        ops = ALL_OPS if ops is None else normalize_ops(ops, '.cache()')
        return self._with_conf(ops=ops, timeout=timeout, lock=lock)

    def nocache(self):
        """Turn caching off for this queryset, automatic caching included."""
        return self._with_conf(ops=frozenset())

    def inplace(self):
        """Make this queryset mutate in place instead of cloning (a micro-optimization)."""
        self._cacheconf = self._cacheconf._replace(inplace=True)
        return self

    def cloning(self):
        """Undo inplace(): clone on every change again."""
        self._cacheconf = self._cacheconf._replace(inplace=False)
        return self

    def clone(self):
        """A copy of this queryset, keeping its .cache() and inplace()/cloning() settings."""
        # _clone() of an inplace() queryset is the queryset itself
        clone = self._shared_clone() if self._may_record() else _django['QuerySet._clone'](self)
        clone._cacheconf = self._cacheconf
        return clone

    @property
    def query(self):
        """The Query, built first from the recorded calls if there are any."""
        d = self.__dict__
        if _lending.qs is self:
            return _Lent(_lending.query)
        pending = d.get('_pending')
        if pending:
            d['_query'] = chain.replay(self.model, *pending)
            d['_pending'] = ()  # after _query: a thread reading () finds the built one
            d['_query_shared'] = False
        elif d.get('_query_shared'):  # other querysets build on it: copy it first
            query = d['_query']
            d['_query'] = query.chain() if d['_query_shared'] == 'chain' else query.clone()
            d['_query_shared'] = False
        d['_query_seen'] = True
        return _django['QuerySet.query'].fget(self)

    @query.setter
    def query(self, value):
        self.__dict__.update(_pending=(), _query_shared=False, _query_seen=True)
        _django['QuerySet.query'].fset(self, value)

    def filter(self, *args, **kwargs):
        recorded = self._recorded_filter(False, args, kwargs)
        return _django['QuerySet.filter'](self, *args, **kwargs) if recorded is None else recorded

    def exclude(self, *args, **kwargs):
        recorded = self._recorded_filter(True, args, kwargs)
        return _django['QuerySet.exclude'](self, *args, **kwargs) if recorded is None else recorded

    def _recorded_filter(self, negate, args, kwargs):
        """A clone with this filter() (or exclude()) call recorded, or None to make it."""
        if (args or kwargs) and self._may_record():
            call = chain.filter_call(self.model, negate, args, kwargs)
            if call is not None and self._plain_base():
                return self._record(call)
        return None

    def order_by(self, *field_names):
        if self._may_record():
            call = chain.order_by_call(self.model, field_names, plain_ordering_name)
            if call is not None and self._plain_base():
                return self._record(call)
        return _django['QuerySet.order_by'](self, *field_names)

    def __getitem__(self, k):
        if type(k) is slice and self._result_cache is None and self._may_record():
            call = chain.slice_call(k)
            if call is not None:
                return self._record(call)
        return _django['QuerySet.__getitem__'](self, k)

    def _cache_key(self, op='', fingerprint=UNSET, db=None):
        """The Redis key this queryset's result (or an op on it) is stored at, prefix included."""
        db = db or self.db
        if fingerprint is UNSET:
            fingerprint = self._fingerprint()
        if fingerprint is None or prefix_func() is not None:  # a prefix may change by request
            return self._make_cache_key(op, fingerprint, db)
        memo = _keys_memo()
        memo_key = (op, fingerprint, db, self.model, self._iterable_class, self._fields)
        try:
            return memo[memo_key]
        except KeyError:
            pass
        return remember(memo, memo_key, self._make_cache_key(op, fingerprint, db))

    def _make_cache_key(self, op, fingerprint, db):
        profile = model_profile(self.model)
        if fingerprint is None:
            sql, params = self.query.get_compiler(using=db).as_sql()
            query = ('s' + sql, repr(params))
        else:
            # compiling costs most of a hit: a fingerprint stands for the SQL on one kind
            # of database ('f' and 's' parts never collide)
            query = ('f' + fingerprint, connections.settings[db]['ENGINE'])
        parts = [
            op, *query,
            '' if profile is None or profile.db_agnostic else db,
            # the result class: proxies share the SQL of their concrete model
            self.model._meta.label, self._iterable_class.__name__,
            # values_list() fields: on Django 4.2 their order may not show in the query
            _field_list(self.model), repr(self._fields),
        ]
        return '%sq:%s' % (self._prefix_of(fingerprint), md5hex('\n'.join(parts)))

    @property
    def _prefix(self):
        """The key prefix in force for this queryset."""
        return self._prefix_of(UNSET)

    def _prefix_of(self, fingerprint):
        if prefix_func() is None:
            return ''
        return prefix_for([self.db], list(self._dnfs(fingerprint)))

    # Plumbing

    def _may_record(self):
        """Whether calls on this queryset may be recorded instead of made (chain.py)."""
        d = self.__dict__
        conf = self._cacheconf
        # Django 6.1 may turn cloning off for a while: then calls change the queryset itself
        return self.model is not None and not d.get('_query_seen') \
            and not conf.inplace and conf.ops != NO_CACHE.ops \
            and d.get('_cloning_enabled', True) \
            and not self._sticky_filter and not self._defer_next_filter \
            and self._deferred_filter is None and chain.recordable_class(type(self)) \
            and model_profile(self.model) is not None

    def _plain_base(self):
        """Whether a filter() or order_by() call may be recorded on this queryset: its names
        resolve against the model's fields alone (no annotations, extra or filtered
        relations to shadow them), and Django would take the call (no slice, no union)."""
        query, calls = self._recorded()
        return not (query.annotations or query.extra or query._filtered_relations
                    or query.combinator or chain.is_sliced(query, calls))

    def _record(self, call):
        """A clone with this call recorded."""
        clone = self._shared_clone()
        query, calls = clone._recorded()
        clone._pending = (query, calls + (call,))
        return clone

    def _recorded(self):
        """(the Query as it stands, the calls recorded on it), read at once (see _pending)."""
        d = self.__dict__
        return d.get('_pending') or (d['_query'], ())

    def _shared_clone(self):
        """Django's clone, but sharing the Query until either queryset needs it."""
        query, calls = self._recorded()
        _lending.qs, _lending.query = self, query
        try:
            clone = _django['QuerySet._clone'](self)
        finally:
            _lending.qs = _lending.query = None
        if calls:
            clone._pending = (query, calls)
        elif not self.__dict__.get('_query_shared'):
            # this queryset's own Query: copied before either hands it out or changes it
            self._query_shared = 'clone'
        clone._query_shared = 'chain'  # as Django's clone would have had it
        if self._cacheconf is not NO_CONF:
            clone._cacheconf = self._cacheconf
        return clone

    def _built(self):
        """This queryset, or if it has recorded calls a clone with its Query built: ops on
        it keep their calls recorded, and so the key their result was stored at."""
        if not self.__dict__.get('_pending'):
            return self
        clone = self._shared_clone()
        clone.query  # noqa: B018 - builds it
        return clone

    def _fingerprint(self):
        """The fingerprint of this queryset's query: of the recorded calls, if any."""
        pending = self.__dict__.get('_pending')
        # the database matters to a fingerprint only when verifying it (finding the
        # database may ask the routers: not on every hit)
        using = self.db if fingerprints.VERIFY else None
        if pending:
            model, (query, calls) = self.model, pending
            made = chain_fingerprint(query, calls, using, lambda: chain.replay(model, query, calls))
            if made is not None:
                return made
        return query_fingerprint(self.query, using)

    def _with_conf(self, **changes):
        clone = self._chain()
        clone._cacheconf = clone._cacheconf._replace(**changes)
        return clone

    def _clone(self):
        conf = self._cacheconf
        if conf.inplace:
            # the caller changes self next: its Query must be its own and built, and what
            # was derived from the query is outdated
            self.query  # noqa: B018
            self._result_cache = None
            self._prefetch_done = False
            return self
        if self._may_record():
            return self._shared_clone()
        clone = _django['QuerySet._clone'](self)
        if conf is not NO_CONF:
            clone._cacheconf = conf
        return clone

    def __getstate__(self):
        if self._result_cache is None:
            state = _django['QuerySet.__getstate__'](self)
        else:
            # what Django's gives without evaluating: these results may be being
            # pickled for the cache, before prefetch_related() has run on them
            state = {**self.__dict__, DJANGO_VERSION_PICKLE_KEY: django.__version__}
        if state.get('_pending'):
            # a process without recorded calls (an older deploy) must get the query whole;
            # this queryset keeps its calls, and so its key
            state.update(_query=chain.replay(self.model, *state['_pending']), _pending=(),
                         _query_shared=False)
        return state

    def _filter_or_exclude_inplace(self, negate, args, kwargs):
        d = self.__dict__
        if d.get('_pending') or d.get('_query_shared'):
            self.query  # what this changes must be this queryset's own Query
        return _django['QuerySet._filter_or_exclude_inplace'](self, negate, args, kwargs)

    # Nothing derived from the query is kept on the queryset between ops: code may change
    # qs.query in place (qs.query.group_by = ...) or replace it. Within an op, the
    # fingerprint made for the key serves the DNFs too.

    def _dnfs(self, fingerprint=UNSET, built=None, db=None):
        if fingerprint is UNSET:
            fingerprint = self._fingerprint()
        return _shared_dnfs(self, fingerprint, built or self._built, db or self.db)

    def _cacheable_dnfs(self, fingerprint=UNSET, built=None, db=None):
        """[(db, dnfs)] for cached_call, or None when a table's writes are not invalidated."""
        db = db or self.db
        result = self._dnfs(fingerprint, built, db)
        return [(db, result)] if tracked_tables().issuperset(result) else None

    def _cache_settings(self, op):
        """(timeout, lock) when this op on this queryset should use the cache, else None."""
        profile = model_profile(self.model)
        if profile is None:
            return None
        conf = self._cacheconf
        ops = profile.ops if conf.ops is None else conf.ops
        # the Query as it stands: recorded calls never lock rows
        if op not in ops or self._recorded()[0].select_for_update:
            return None
        # any_open() first: finding this queryset's database may ask the routers
        if transaction_states.any_open() and transaction_states.bypass_cache([self.db]):
            return None
        return (conf.timeout or profile.timeout,
                profile.lock if conf.lock is None else conf.lock)

    def _cached(self, op, compute, cache_settings, extra='', reads=None):
        """compute(qs) through the cache. reads(qs), if given, is the Query the op reads
        when that is more than qs's own (aggregate() joins): its conditions are the entry's."""
        fingerprint = self._fingerprint()
        db = self.db
        try:
            key = self._cache_key(op + extra, fingerprint, db)
        except EmptyResultSet:
            return compute(self)
        except Exception:
            if fingerprint is not None:
                raise
            # compiling the whole query failed (an ordering count() would drop, say):
            # Django computes it, raising what it raises
            return compute(self)
        timeout, lock = cache_settings
        # a miss reads the conditions and evaluates the same built queryset
        made = []

        def built():
            if not made:
                made.append(self._built())
            return made[0]
        if reads is None:
            dnfs = lambda: self._cacheable_dnfs(fingerprint, built, db)  # noqa: E731
        else:
            # memoized apart from the plain query's DNFs: the op's own part is in the key
            read = None if fingerprint is None else '%s\n%s%s' % (fingerprint, op, extra)
            dnfs = lambda: self._cacheable_dnfs(read, lambda: reads(built()), db)  # noqa: E731
        return cached_call(key, dnfs, timeout, lambda: compute(built()),
                           lock=lock, sender=self.model, warm=built)

    # Cached ops

    def _fetch_all(self):
        if self._result_cache is None:
            op = self._cacheconf.op or 'fetch'
            cache_settings = self._cache_settings(op)
            if cache_settings:
                self._result_cache = self._cached('', self._fetched, cache_settings)
                _track_peers(self)
        _django['QuerySet._fetch_all'](self)

    def _fetched(self, qs):
        """qs's results, kept on this queryset before they are stored: pickling them may
        reach this queryset (an instance's attribute holding it), which must not be
        evaluated again then."""
        self._result_cache = list(qs._iterable_class(qs))
        return self._result_cache

    def count(self):
        if self._result_cache is None:
            cache_settings = self._cache_settings('count')
            if cache_settings:
                return self._cached('count', _django['QuerySet.count'], cache_settings)
        return _django['QuerySet.count'](self)

    def exists(self):
        if self._result_cache is None:
            cache_settings = self._cache_settings('exists')
            if cache_settings:
                return self._cached('exists', _django['QuerySet.exists'], cache_settings)
        return _django['QuerySet.exists'](self)

    def aggregate(self, *args, **kwargs):
        cache_settings = self._cache_settings('aggregate')
        # the expressions' repr() leaves out some of what they compute (default=...)
        extra = expressions_fingerprint(args, kwargs) if cache_settings else None
        if extra is not None:
            return self._cached('aggregate', lambda qs: _django['QuerySet.aggregate'](qs, *args, **kwargs),
                                cache_settings, extra, reads=lambda qs: _with_aggregates(qs.query, args, kwargs))
        return _django['QuerySet.aggregate'](self, *args, **kwargs)

    def get(self, *args, **kwargs):
        if self._is_simple():
            cache_settings = self._cache_settings('get')
            if cache_settings:
                if not args and model_profile(self.model).local_get:
                    return _local_get(self, kwargs)
                fast = fast_get(self, args, kwargs)
                if fast is not None:
                    return self._fast_get(fast, args, kwargs, cache_settings)
        elif not (args or kwargs):
            # filter(pk=1).get(): the entry of get(pk=1), whose SQL it has
            recorded = self._recorded_get()
            cache_settings = recorded and self._cache_settings('get')
            fast = cache_settings and fast_get(self, *recorded)
            if fast:
                return self._fast_get(fast, (), {}, cache_settings)
        return _django['QuerySet.get'](self._for_get(), *args, **kwargs)

    def _fast_get(self, fast, args, kwargs, cache_settings):
        """get() by a unique column: the key comes from the value, no SQL is compiled on a hit."""
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

        compiled = []

        def warm():  # while Redis places the marker: build, and compile too
            compiled.append(_compile(query()))

        def fetch():
            qs = query()
            with _precompiled(qs, compiled):
                return list(qs._iterable_class(qs))

        timeout, lock = cache_settings
        if known_dnfs is None or not tracked_tables().issuperset(known_dnfs[0][1]):
            dnfs = lambda: query()._cacheable_dnfs()  # noqa: E731
        else:
            dnfs = lambda: known_dnfs  # noqa: E731
        rows = cached_call(key, dnfs, timeout, fetch, lock=lock, sender=self.model, warm=warm)
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

    def first(self):
        return _django['QuerySet.first'](self._for_get())

    def last(self):
        return _django['QuerySet.last'](self._for_get())

    def _for_get(self):
        """A clone that get()/first()/last() may change, fetching with the 'get' op."""
        if self._result_cache is not None:
            return self
        clone = _django['QuerySet._clone'](self)  # a real one, even for inplace()
        clone._cacheconf = self._cacheconf._replace(op='get', inplace=False)
        return clone

    def select_for_update(self, *args, **kwargs):
        return _django['QuerySet.select_for_update'](self.nocache(), *args, **kwargs)

    def bulk_create(self, objs, *args, **kwargs):
        objs = _django['QuerySet.bulk_create'](self, objs, *args, **kwargs)
        if is_tracked(self.model):
            # bulk_create(objs, batch_size, ignore_conflicts, update_conflicts, ...)
            if kwargs.get('update_conflicts', len(args) > 2 and args[2]):
                # rows updated in place: their old values are unknown
                run_safely(invalidation.invalidate_model, self.model, using=self.db)
            else:
                run_safely(invalidate_dicts, self.model, [obj_dict(o) for o in objs], using=self.db)
        return objs

    def invalidated_update(self, **kwargs):
        """update() that invalidates the rows by their values before and after."""
        using = self._db or router.db_for_write(self.model, **self._hints)  # where update() writes
        qs = self.using(using).nocache()
        # one transaction, rows locked from their first read: a write by another process
        # can't slip in between and move a row from values this invalidation doesn't know
        with transaction.atomic(using=using, savepoint=False):
            take_write_lock(self.model, using)
            pks = list(qs.values_list('pk', flat=True))
            if not pks:
                return 0
            # no ordering: Meta.ordering may join, and FOR UPDATE can't lock an outer join
            rows = self.model._base_manager.using(using).filter(pk__in=pks).nocache().order_by()
            if connections[using].features.has_select_for_update:
                rows = rows.select_for_update()
            before = [obj_dict(o) for o in rows]
            count = qs.filter(pk__in=pks).update(**kwargs)
            after = [obj_dict(o) for o in rows.all()]
        run_safely(invalidate_dicts, self.model, before + after, using=using)
        return count


def _with_aggregates(query, args, kwargs):
    """A copy of query with the aggregates resolved on it as aggregate() resolves them:
    the joins they add (Count('posts')) are tables the result reads."""
    query = query.chain()
    # aggregate() names positional aggregates by default_alias, and raises what it raises
    named = {**{arg.default_alias: arg for arg in args}, **kwargs}
    for alias, expression in named.items():
        query.annotations[alias] = expression.resolve_expression(
            query, allow_joins=True, reuse=None, summarize=True)
    return query


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


def _track_peers(qs, objs=None):
    """Instances of a result (qs's, or objs) fetch as a database read's would (Django 6.1's
    fetch modes): in the mode of the queryset reading them, whichever stored them, and
    knowing their peers as FETCH_PEERS expects (pickles drop the weak references)."""
    mode = qs.__dict__.get('_fetch_mode')
    objs = qs._result_cache if objs is None else objs
    if mode is None or not objs or qs._iterable_class is not ModelIterable:
        return
    state = objs[0]._state
    if state.__dict__.get('fetch_mode', FETCH_ONE) is mode and not (mode.track_peers and not state.peers):
        return  # read from the database, or stored in this mode with no peers to know
    # the Query as it stands: recorded calls never change select_related
    _set_fetch_mode(objs, mode, qs._recorded()[0].select_related)


def _set_fetch_mode(objs, mode, select_related):
    """Give objs and the instances select_related() brought with them this fetch mode;
    peers are those at one path, as each of Django's related populators makes them."""
    seen = {id(obj) for obj in objs}
    groups = [(objs, select_related)]
    while groups:
        group, related = groups.pop()
        peers = [weakref.ref(obj) for obj in group] if mode.track_peers else None
        below = {}
        for obj in group:
            state = obj._state
            state.fetch_mode = mode
            if peers is not None:
                state.peers = peers
            if not related:
                continue
            # select_related=True follows every relation it can, a dict the ones it names
            for name, rel_obj in state.fields_cache.items():
                if rel_obj is not None and id(rel_obj) not in seen and (related is True or name in related):
                    seen.add(id(rel_obj))
                    below.setdefault(name, []).append(rel_obj)
        groups.extend((rel_objs, related is True or related[name]) for name, rel_objs in below.items())


def collector_related_objects(original):
    """Deletion must see the database as it is: its reads of related rows bypass the cache."""
    def related_objects(self, *args, **kwargs):
        return original(self, *args, **kwargs).nocache()
    return related_objects


# Keys of queries seen before in this process, by fingerprint and what else goes in a key:
# hashing a fingerprint costs a tenth of making the key again

@derived
def _keys_memo():
    return {}  # dropped on every setting change: profiles and prefixes go into keys


# DNFs of queries seen before in this process, by fingerprint: insideout mode needs them
# on every hit, and a miss would otherwise build them from a clone of the query

@derived
def _dnfs_memo():
    return {}  # dropped on every setting change: skipped fields and such shape DNFs


def _shared_dnfs(qs, fingerprint, built, db):
    """The DNFs of qs on db, which built() gives built; memoized by fingerprint."""
    if fingerprint is None:
        return query_dnfs(_query_of(built()), db)
    memo = _dnfs_memo()
    # a long fingerprint (of a long IN list) by its digest: there may be many of them
    key = (db, qs.model, fingerprint if len(fingerprint) <= 512 else md5hex(fingerprint.encode('latin-1')))
    try:
        return memo[key]
    except KeyError:
        pass
    return remember(memo, key, query_dnfs(_query_of(built()), db))


def _query_of(built):
    """The Query of a queryset, or the Query itself."""
    return getattr(built, 'query', built)


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
_field_lists = {}


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


def _field_list(model):
    try:
        return _field_lists[model]
    except KeyError:
        # and the default ordering: a fingerprint names fields, and a deploy may change it
        value = _field_lists[model] = '%s;%r' % (
            ','.join(sorted(f.attname for f in model._meta.concrete_fields)), model._meta.ordering)
        return value


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


def cache_on_save(instance, using):
    """Store a saved instance where get(<its profile's cache_on_save field>=value) reads."""
    model = type(instance)
    profile = model_profile(model)
    if not profile or not profile.cache_on_save or transaction_states.in_transaction(using):
        return
    field = 'pk' if profile.cache_on_save is True else profile.cache_on_save
    qs = model._default_manager.db_manager(using).all()
    kwargs = {field: getattr(instance, field)}
    fast = fast_get(qs, (), kwargs)
    if fast is None:
        raise ImproperlyConfigured('cacheops: cache_on_save=%r of %s must name a unique field'
                                   % (profile.cache_on_save, model._meta.label))
    get_qs = qs.filter(**kwargs).order_by()
    get_qs.query.set_limits(high=MAX_GET_RESULTS)
    cached_call(fast[0], get_qs._cacheable_dnfs, profile.timeout, lambda: [instance], sender=model)


class ManagerMixin:
    def cache(self, *args, **kwargs):
        return self.get_queryset().cache(*args, **kwargs)

    def nocache(self):
        return self.get_queryset().nocache()

    def inplace(self):
        return self.get_queryset().inplace()

    def invalidated_update(self, **kwargs):
        return self.get_queryset().invalidated_update(**kwargs)
