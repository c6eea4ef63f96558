"""The timed rows of one storage mode: hits, misses and saves, each checked before it is timed."""
from .config import SAVE_DEPENDENTS
from .data import page
from .measure import Row, System, queries_of

SIGNING_KEY = 'a signing key of the bench run only'


class ModeBench:
    """The timed rows of one mode; raw is a redis-py client of cacheops' Redis db, flushed at will."""

    def __init__(self, mode, raw, data, sizes):
        import pickle
        self.loads = pickle.loads
        self.mode, self.raw, self.data, self.sizes = mode, raw, data, sizes
        self.skip = 40 if mode == 'insideout' else 0  # insideout values start with a 40-byte checksum

    # Hits

    def hit_rows(self):
        from django.db.models import Avg, Max, Sum

        from tools.bench_app.models import Item
        d = self.data
        cat = d.hot_category
        return [
            self.hit_row('hit.get', f'hit: get(pk={d.hot_pk})', lambda: Item.objects.get(pk=d.hot_pk)),
            # another pk: the row stores its value signed and unsigned by turns, at its own key
            self.signed_row('signed.get', f'hit: get(pk={d.hot_pk + 1}), signed (CACHEOPS_SIGNING_KEY; '
                            'sync hit: the same unsigned)', lambda: Item.objects.get(pk=d.hot_pk + 1)),
            self.hit_row('hit.list', f"hit: list(filter(category={cat}, is_active=True).order_by('-created')[:20])",
                         lambda: list(page(cat))),
            self.hit_row('hit.count', f'hit: filter(category={cat}).count()',
                         lambda: Item.objects.filter(category_id=cat).count()),
            self.hit_row('hit.exists', f'hit: filter(category={cat}, tags={d.hot_tag}).exists() (M2M join)',
                         lambda: Item.objects.filter(category_id=cat, tags=d.hot_tag).exists()),
            self.hit_row('hit.aggregate', f'hit: filter(category={cat}).aggregate(Avg, Sum, Max)',
                         lambda: Item.objects.filter(category_id=cat).aggregate(
                             avg=Avg('price'), stock=Sum('stock'), best=Max('rating'))),
        ]

    def hit_row(self, key, label, query):
        redis_key = self.stored_key(query)
        get, loads, raw = self.raw.get, self.loads, self.raw
        if self.skip:
            def floor(i):
                return loads(memoryview(get(redis_key))[40:])
        else:
            def floor(i):
                return loads(get(redis_key))

        def cached(i):
            return query()

        def ensure_stored():
            query()
            if not raw.exists(redis_key):
                raise RuntimeError(f'{key}: the cached value is no longer at {redis_key!r}')

        self.check_hit(key, query, floor)
        return Row(key, label, self.sizes.hit_ops, {
            'floor': System(floor, setup=ensure_stored),
            'cacheops': System(cached, setup=ensure_stored),
            'nocache': System(cached, cache_off=True),
        })

    def signed_row(self, key, label, query):
        """A hit with signing on beside the same hit with it off, in the same rounds: each batch
        stores the value anew in its own format (the other's would read as a miss)."""
        from cacheops.signing import MARK
        from django.test.utils import override_settings

        redis_key, signing = self.stored_key(query), {'CACHEOPS_SIGNING_KEY': SIGNING_KEY}
        raw = self.raw

        def stored_anew():
            raw.delete(redis_key)
            query()
            if not raw.exists(redis_key):
                raise RuntimeError(f'{key}: the cached value is no longer at {redis_key!r}')

        def cached(i):
            return query()
        with override_settings(**signing):
            stored_anew()
            if not raw.get(redis_key)[self.skip:].startswith(MARK):
                raise RuntimeError(f'{key}: the value stored at {redis_key!r} is not signed')
            if queries_of(query)[0]:
                raise RuntimeError(f'{key}: the signed query was not a hit')
        return Row(key, label, self.sizes.hit_ops, {
            'cacheops': System(cached, setup=stored_anew, settings=signing),
            # under override_settings too: reading a setting the project leaves unset costs more
            # through its layer, which the signed hit would pay alone
            'sync': System(cached, setup=stored_anew, settings={'CACHEOPS_SIGNING_KEY': None}),
        })

    def stored_key(self, query):
        """The key a query stores its value at: the only loadable string key after running
        it once on an empty db (conj sets and schemes are sets, insideout stamps don't load)."""
        self.raw.flushdb()
        query()
        found = []
        for key in self.raw.scan_iter(count=1000):
            if self.raw.type(key) != b'string':
                continue
            try:
                self.loads(self.raw.get(key)[self.skip:])
            except Exception:  # noqa: BLE001 - not a pickle: a stamp or a marker
                continue
            found.append(key)
        if len(found) != 1:
            raise RuntimeError(f'expected one cache key after one query, found {found}')
        return found[0]

    def check_hit(self, key, query, floor):
        """A hit makes no query and returns what the floor loads; the cache off makes one."""
        from django.db.models import Model
        from django.test.utils import override_settings

        queries, result = queries_of(query)
        if queries:
            raise RuntimeError(f'{key}: the cached query was not a hit ({queries} queries)')
        stored = floor(0)
        if stored != ([result] if isinstance(result, Model) else result):
            raise RuntimeError(f'{key}: the floor loads {stored!r}, the hit returned {result!r}')
        with override_settings(CACHEOPS_ENABLED=False):
            if not queries_of(query)[0]:
                raise RuntimeError(f'{key}: no query with the cache off')

    # Misses

    def miss_rows(self):
        from tools.bench_app.models import Item
        d, n = self.data, self.sizes.miss_ops
        step = d.items // (n + 1)
        pks = [1 + step * (i + 1) for i in range(n)]
        pages = [(i % d.categories + 1, i // d.categories) for i in range(n)]
        return [
            self.miss_row('miss.get', 'miss + store: get(pk=...), a fresh pk each op',
                          lambda i: Item.objects.get(pk=pks[i])),
            self.miss_row('miss.list', 'miss + store: 20-row list, a fresh (category, offset) each op',
                          lambda i: list(page(*pages[i]))),
        ]

    def miss_row(self, key, label, query):
        raw = self.raw

        def empty_cache():
            raw.flushdb()
            query(0)  # settings just changed: warm cacheops' derived settings up outside the clock
            raw.flushdb()

        raw.flushdb()
        first, second = queries_of(lambda: query(0))[0], queries_of(lambda: query(0))[0]
        if (first, second) != (1, 0):
            raise RuntimeError(f'{key}: a miss made {first} queries and the next call {second}')
        return Row(key, label, self.sizes.miss_ops, {
            'cacheops': System(query, setup=empty_cache),
            'nocache': System(query, cache_off=True),
        })

    # Saves

    def save_rows(self):
        d = self.data
        # rows from categories the hit rows do not read
        categories = [c for c in range(1, d.categories + 1) if c != d.hot_category]
        background, saved = categories[0], categories[1:]
        return [self.save_row(n, background, saved[k]) for k, n in enumerate(SAVE_DEPENDENTS)]

    def save_row(self, dependents, background_category, category):
        from tools.bench_app.models import Item
        pk = Item.objects.nocache().filter(category_id=category).order_by('id').values_list('id', flat=True)[3]

        def dependent_queries():
            """Queries the row's save must invalidate: its get(pk) and counts of its category."""
            yield lambda: Item.objects.get(pk=pk)
            for j in range(dependents - 1):
                yield lambda j=j: Item.objects.filter(category_id=category, stock__gte=j).count()

        def other_queries():
            """Cached queries on the same table that do not depend on the row."""
            others = Item.objects.nocache().filter(category_id=background_category).values_list('id', flat=True)[:10]
            for other in others:
                yield lambda other=other: Item.objects.get(pk=other)
            for offset in range(10):
                yield lambda offset=offset: list(page(background_category, offset))

        self.raw.flushdb()
        for query in [*other_queries(), *(dependent_queries() if dependents else [])]:
            query()
        snapshot = self.snapshot()
        self.check_save(pk, snapshot, list(dependent_queries())[-1] if dependents else None,
                        next(other_queries()))

        instance = []

        def fetch():
            instance[:] = [Item.objects.nocache().get(pk=pk)]

        def save(i):
            obj = instance[0]
            obj.stock ^= 1  # a real change every time
            obj.save()

        return Row(f'save.{dependents}', f'save() of a row {dependents} cached queries depend on',
                   self.sizes.save_ops, {
                       'cacheops': System(save, setup=fetch, before_each=lambda i: self.restore(snapshot)),
                       'nocache': System(save, setup=fetch, cache_off=True),
                   })

    def check_save(self, pk, snapshot, dependent, other):
        """After the save a dependent query misses; a query on other rows still hits."""
        from tools.bench_app.models import Item
        self.restore(snapshot)
        obj = Item.objects.nocache().get(pk=pk)
        obj.save()
        if dependent is not None and not queries_of(dependent)[0]:
            raise RuntimeError(f'save of {pk}: a dependent query was not invalidated')
        if queries_of(other)[0]:
            raise RuntimeError(f'save of {pk}: a query on other rows was invalidated')

    def snapshot(self):
        """Every key of our db with its TTL and DUMP."""
        keys = list(self.raw.scan_iter(count=1000))
        pipe = self.raw.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
            pipe.dump(key)
        replies = pipe.execute()
        return [(key, max(ttl, 0), dump) for key, ttl, dump in zip(keys, replies[::2], replies[1::2])]

    def restore(self, snapshot):
        self.raw.flushdb()
        pipe = self.raw.pipeline(transaction=False)
        for key, ttl, dump in snapshot:
            pipe.restore(key, ttl, dump, replace=True)
        pipe.execute()
