"""The async hit rows: await aget(pk) and acount() hits beside the same sync hits, in the same rounds."""
import asyncio
import threading
import time

from .measure import Row, System


class AsyncHits:
    """Async hits timed in one event loop of their own, kept for the child's life: its
    redis.asyncio client and connections live as long (see cacheops/redis/async_client.py)."""

    def __init__(self, bench):
        self.bench = bench
        self.loop = asyncio.new_event_loop()

    def rows(self):
        from tools.bench_app.models import Item
        d = self.bench.data
        cat = d.hot_category
        return [
            self.row('ahit.get', f'async hit: await aget(pk={d.hot_pk})',
                     lambda: Item.objects.get(pk=d.hot_pk), lambda: Item.objects.aget(pk=d.hot_pk)),
            self.row('ahit.count', f'async hit: await filter(category={cat}).acount()',
                     lambda: Item.objects.filter(category_id=cat).count(),
                     lambda: Item.objects.filter(category_id=cat).acount()),
        ]

    def row(self, key, label, query, aquery):
        bench = self.bench
        redis_key = bench.stored_key(query)

        def ensure_stored():
            query()
            if not bench.raw.exists(redis_key):
                raise RuntimeError(f'{key}: the cached value is no longer at {redis_key!r}')

        async def timed(n):
            start = time.perf_counter()
            for _ in range(n):
                await aquery()
            return time.perf_counter() - start

        self.check_hit(key, query, aquery)
        return Row(key, label, bench.sizes.hit_ops, {
            'cacheops': System(None, setup=ensure_stored, batch=lambda n: self.loop.run_until_complete(timed(n))),
            'sync': System(lambda i: query(), setup=ensure_stored),
        })

    def check_hit(self, key, query, aquery):
        """The async hit is read in the event loop's thread (no thread hop) and returns what the sync hit does."""
        from cacheops.signals import cache_read
        seen = []

        def receiver(sender, func, hit, **kwargs):
            seen.append((hit, threading.current_thread()))
        query()
        cache_read.connect(receiver)
        try:
            result = self.loop.run_until_complete(aquery())
        finally:
            cache_read.disconnect(receiver)
        if seen != [(True, threading.current_thread())]:
            raise RuntimeError(f'{key}: not a hit in the event loop: {seen}')
        if result != query():
            raise RuntimeError(f'{key}: the async hit returned {result!r}, the sync one {query()!r}')
