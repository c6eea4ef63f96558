"""QuerySetMixin and ManagerMixin: cache(), nocache(), inplace(), and the cached ops."""
from asgiref.sync import sync_to_async
from django.core.exceptions import EmptyResultSet, ImproperlyConfigured, SynchronousOnlyOperation

from ..chain import _django  # Django's own methods that the mixins wrap
from ..conf import ALL_OPS, model_profile, normalize_ops, settings
from ..fingerprint import expressions_fingerprint
from ..transaction import transaction_states
from ..utils import checked_timeout
from .async_reads import MISS, cached_or_probed, may_read_in_loop, read_hit, served
from .cacheconf import NO_CONF
from .fetch_modes import _track_peers
from .gets import FastGet, _local_get, fast_get
from .keys import CacheKeys
from .recording import CallRecording
from .writes import Writes

class _Empty:
    pass


_LOCAL = 'local'  # get() by CACHEOPS local_get, see _get_plan()


# What a class statement gives every class (which names, the Python version decides);
# the rest of a part is what QuerySet gets
_CLASS_MACHINERY = frozenset(vars(_Empty))


def _holding(*parts):
    """A class decorator: the class gets the parts' attributes as its own (not as bases:
    monkey.py grafts onto QuerySet what the class itself holds, vars(cls))."""
    def hold(cls):
        for part in parts:
            for name, value in vars(part).items():
                if name in _CLASS_MACHINERY:
                    continue
                if name in vars(cls):
                    raise TypeError(f'{cls.__name__}.{name} is defined twice (in {part.__name__} too)')
                setattr(cls, name, value)
        return cls
    return hold


@_holding(CallRecording, CacheKeys, FastGet, Writes)
class QuerySetMixin:
    _cacheconf = NO_CONF

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
        checked_timeout(timeout, '.cache()')
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

    def _with_conf(self, **changes):
        clone = self._chain()
        clone._cacheconf = clone._cacheconf._replace(**changes)
        return clone

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
        entry = self._entry(op, extra, reads)
        if entry is None:
            return compute(self)
        key, dnfs, built = entry
        timeout, lock = cache_settings
        return cached_or_probed(key, dnfs, timeout, lambda: compute(built()),
                                lock=lock, sender=self.model, warm=built)

    def _entry(self, op, extra='', reads=None):
        """(key, dnfs(), built(): the queryset a miss evaluates) of this op's entry, or None
        when Django computes it (no rows can match, or the query doesn't compile)."""
        fingerprint = self._fingerprint()
        db = self.db
        try:
            key = self._cache_key(op + extra, fingerprint, db)
        except EmptyResultSet:
            return None
        except Exception:
            if fingerprint is not None:
                raise
            # compiling the whole query failed (an ordering count() would drop, say):
            # Django computes it, raising what it raises
            return None
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
        return key, dnfs, built

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
        plan = self._get_plan(args, kwargs)
        if plan is None:
            return _django['QuerySet.get'](self._for_get(), *args, **kwargs)
        if plan is _LOCAL:
            return _local_get(self, kwargs)
        return self._fast_get(*plan)

    def _get_plan(self, args, kwargs):
        """How get() reads: _LOCAL, (fast_get()'s (key, dnfs), the filter's args and kwargs,
        the cache settings) by a unique column, or None for Django's get()."""
        if self._is_simple():
            cache_settings = self._cache_settings('get')
            if cache_settings:
                if not args and model_profile(self.model).local_get:
                    return _LOCAL
                fast = fast_get(self, args, kwargs)
                if fast is not None:
                    return fast, args, kwargs, cache_settings
        elif not (args or kwargs):
            # filter(pk=1).get(): the entry of get(pk=1), whose SQL it has
            recorded = self._recorded_get()
            cache_settings = recorded and self._cache_settings('get')
            fast = cache_settings and fast_get(self, *recorded)
            if fast:
                return fast, (), {}, cache_settings
        return None

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

    # The async API: a hit is read in the event loop, the rest goes the sync way in a
    # thread, which decides again there (query/async_reads.py)

    async def aget(self, *args, **kwargs):
        plan = self._get_plan(args, kwargs)
        if plan is None or plan is _LOCAL:
            return await served(lambda: self.get(*args, **kwargs))
        if may_read_in_loop():
            key, _, dnfs = self._fast_entry(*plan[:3])
            rows = await read_hit(key, dnfs, self.model)
            if rows is not MISS:
                return self._one_row(rows)
        return await sync_to_async(self.get)(*args, **kwargs)

    async def afirst(self):
        return await served(self.first)

    async def alast(self):
        return await served(self.last)

    async def acount(self):
        return await self._served_plain('count', self.count)

    async def aexists(self):
        return await self._served_plain('exists', self.exists)

    async def _served_plain(self, op, sync_op):
        """count() or exists() awaited: a hit in the event loop, else sync_op() in a thread."""
        if self._result_cache is None and self._cache_settings(op):
            value = await self._hit(op)
            if value is not MISS:
                return value
        return await sync_to_async(sync_op)()

    async def aaggregate(self, *args, **kwargs):
        extra = self._cache_settings('aggregate') and expressions_fingerprint(args, kwargs)
        if extra is not None:
            value = await self._hit('aggregate', extra, lambda qs: _with_aggregates(qs.query, args, kwargs))
            if value is not MISS:
                return value
        return await sync_to_async(self.aggregate)(*args, **kwargs)

    def __aiter__(self):
        async def generator():
            if self._result_cache is None and self._cache_settings(self._cacheconf.op or 'fetch'):
                value = await self._hit('')
                if value is not MISS:
                    self._result_cache = value
                    _track_peers(self)
            if self._result_cache is None or (self._prefetch_related_lookups and not self._prefetch_done):
                await sync_to_async(self._fetch_all)()
            for item in self._result_cache:
                yield item
        return generator()

    async def _hit(self, op, extra='', reads=None):
        """The value of this op's entry read in the event loop, or MISS."""
        if not may_read_in_loop():
            return MISS
        try:
            entry = self._entry(op, extra, reads)
        except SynchronousOnlyOperation:  # what a miss evaluates is Django's to build
            return MISS
        if entry is None:
            return MISS
        return await read_hit(entry[0], entry[1], self.model)

    def select_for_update(self, *args, **kwargs):
        return _django['QuerySet.select_for_update'](self.nocache(), *args, **kwargs)


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


def collector_related_objects(original):
    """Deletion must see the database as it is: its reads of related rows bypass the cache."""
    def related_objects(self, *args, **kwargs):
        return original(self, *args, **kwargs).nocache()
    return related_objects


class ManagerMixin:
    def cache(self, *args, **kwargs):
        return self.get_queryset().cache(*args, **kwargs)

    def nocache(self):
        return self.get_queryset().nocache()

    def inplace(self):
        return self.get_queryset().inplace()

    def invalidated_update(self, **kwargs):
        return self.get_queryset().invalidated_update(**kwargs)
