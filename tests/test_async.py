"""The async ORM API (aget, afirst, alast, acount, aexists, aaggregate, async for, asave,
adelete) goes through the same cache and invalidation as the sync one; a hit is read by
redis.asyncio in the event loop's own thread, no thread hop (query/async_reads.py).

Where a hit was read shows in the thread cache_read is sent from: a hop sends it from
asgiref's worker thread. A read of the database in the loop's thread would raise
SynchronousOnlyOperation, so a hit read there made no query either.
"""
import asyncio
import contextlib
import os
import threading

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections, transaction
from django.db.models import Max
from django.test.utils import override_settings

from cacheops.redis import async_client as async_client_module
from cacheops.redis.async_client import aioredis, async_client
from cacheops.signals import cache_read
from tests.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def post():
    return Post.objects.create(title='a', category=Category.objects.create(title='c'))


async def async_ops(post):
    """Every async read op, each on its own queryset so that none answers from another's results."""
    def in_category():
        return Post.objects.cache().filter(category_id=post.category_id)

    got = await Post.objects.cache().filter(pk=post.pk).afirst()
    last = await in_category().order_by('pk').alast()
    return (
        (await Post.objects.cache().aget(pk=post.pk)).title,
        got.title if got else None,
        last.title if last else None,
        [p.title async for p in in_category()],
        await in_category().acount(),
        await in_category().aexists(),
        await in_category().aaggregate(m=Max('id')),
    )


def read(post):
    """async_ops() under async_to_sync(): the test's thread is a sync thread above the loop."""
    return async_to_sync(async_ops)(post)


class Reads:
    """The cache reads seen meanwhile: (hit, the thread that read)."""

    def __enter__(self):
        self.seen = []
        cache_read.connect(self.receiver)
        return self.seen

    def receiver(self, sender, hit, **kwargs):
        self.seen.append((hit, threading.current_thread()))

    def __exit__(self, *exc):
        cache_read.disconnect(self.receiver)


def assert_read_in_loop(seen, hits):
    """seen holds this many hits, read in the event loop's thread: here (where redis-py has
    no redis.asyncio, before 4.2, in asgiref's thread: the sync way)."""
    assert [hit for hit, _ in seen] == [True] * hits
    assert {thread is threading.current_thread() for _, thread in seen} == {aioredis is not None}


def in_loop(coroutine_function, *args):
    """coroutine_function(*args) run by asyncio.run() in this thread: no sync thread above
    it. The connections asgiref's thread opened for misses are closed after."""
    async def run():
        try:
            return await coroutine_function(*args)
        finally:
            await sync_to_async(connections.close_all)()
    return asyncio.run(run())


def test_async_reads_hit_the_cache(post, django_assert_num_queries):
    with django_assert_num_queries(7):
        first = read(post)
    with django_assert_num_queries(0):
        assert read(post) == first == ('a', 'a', 'a', ['a'], 1, True, {'m': post.pk})


def test_hits_are_read_in_the_event_loop(post):
    first = in_loop(async_ops, post)  # misses: read and stored in a thread
    with Reads() as seen:
        assert in_loop(async_ops, post) == first == ('a', 'a', 'a', ['a'], 1, True, {'m': post.pk})
    assert_read_in_loop(seen, 7)


def test_an_async_miss_stores_what_a_sync_read_hits(post, django_assert_num_queries):
    async def get():
        return await Post.objects.cache().aget(pk=post.pk)
    assert in_loop(get) == post
    with django_assert_num_queries(0):
        assert Post.objects.cache().get(pk=post.pk).title == 'a'


def test_async_writes_invalidate(post, django_assert_num_queries):
    read(post)
    post.title = 'b'
    async_to_sync(post.asave)()
    with django_assert_num_queries(7):
        assert read(post) == ('b', 'b', 'b', ['b'], 1, True, {'m': post.pk})

    pk = post.pk
    async_to_sync(post.adelete)()
    post.pk = pk
    with django_assert_num_queries(3):  # afirst() and alast() find nothing, then aget() raises
        with pytest.raises(Post.DoesNotExist):
            read(post)


def test_a_write_invalidates_what_the_loop_reads(post):
    in_loop(async_ops, post)
    Post.objects.filter(pk=post.pk).update(title='b')
    assert in_loop(async_ops, post)[:4] == ('b', 'b', 'b', ['b'])


def test_a_miss_raises_does_not_exist_as_django(post):
    async def get(pk):
        return await Post.objects.cache().aget(pk=pk)
    for _ in range(2):  # a miss, then a hit of the empty result
        with pytest.raises(Post.DoesNotExist):
            in_loop(get, post.pk + 100)


def test_inside_a_transaction_that_wrote_async_reads_see_the_write(post):
    """The sync thread above the loop is inside atomic(): only it knows its transaction
    wrote, so the reads go to it, which bypasses the cache as a sync read does."""
    read(post)
    with transaction.atomic():
        Post.objects.filter(pk=post.pk).update(title='b')
        with Reads() as seen:
            assert read(post)[:4] == ('b', 'b', 'b', ['b'])
        assert not any(hit for hit, _ in seen)


def test_disabled_cache_is_not_read(post):
    in_loop(async_ops, post)
    with override_settings(CACHEOPS_ENABLED=False):
        Post.objects.filter(pk=post.pk).update(title='b')
        with Reads() as seen:
            assert in_loop(async_ops, post)[:4] == ('b', 'b', 'b', ['b'])
    assert seen == []


@pytest.mark.skipif(aioredis is None, reason='redis-py < 4.2 has no redis.asyncio')
def test_a_client_per_event_loop(post):
    async def client():
        await Post.objects.cache().aget(pk=post.pk)
        return async_client()
    first, second = in_loop(client), in_loop(client)
    assert first is not None and second is not None and first is not second


@pytest.mark.skipif(aioredis is None, reason='redis-py < 4.2 has no redis.asyncio')
def test_the_clients_of_closed_loops_are_dropped(post):
    """asyncio.run() per call makes a loop per call: their clients must not pile up."""
    async def get():
        return await Post.objects.cache().aget(pk=post.pk)
    for _ in range(5):
        in_loop(get)
    assert len(async_client_module._clients) <= 2


@pytest.mark.parametrize('degrade', [True, False])
def test_redis_down(post, degrade):
    """An async read with Redis down reads the database (degrade-on-failure), or raises."""
    async def get():
        return await Post.objects.cache().aget(pk=post.pk)
    # a port nothing listens on: a real refused connection
    with override_settings(CACHEOPS_REDIS='redis://127.0.0.1:9/0', CACHEOPS_DEGRADE_ON_FAILURE=degrade,
                           CACHEOPS_SENTINEL=None, CACHEOPS_CLUSTER=None, CACHEOPS_CLIENT_CLASS=None):
        if degrade:
            with pytest.warns(RuntimeWarning):
                assert in_loop(get) == post
        else:
            with pytest.raises(redis.ConnectionError):
                in_loop(get)


@pytest.mark.skipif(aioredis is None, reason='redis-py < 4.2 has no redis.asyncio')
def test_an_async_hit_ends_an_outage(post):
    """Redis answering an async hit ends the outage a failed read started (outage.py)."""
    from cacheops import outage
    async def get():
        return await Post.objects.cache().aget(pk=post.pk)
    in_loop(get)
    try:
        with override_settings(CACHEOPS_REDIS='redis://127.0.0.1:9/0', CACHEOPS_DEGRADE_ON_FAILURE=True,
                               CACHEOPS_SENTINEL=None, CACHEOPS_CLUSTER=None, CACHEOPS_CLIENT_CLASS=None):
            with pytest.warns(RuntimeWarning):
                assert in_loop(get) == post
        assert outage.state.down
        with Reads() as seen:
            assert in_loop(get) == post
        assert_read_in_loop(seen, 1)
        assert not outage.state.down
    finally:
        if outage.state.down:
            outage.answered()


def test_with_async_unsafe_allowed_no_query_runs_in_the_loop(post, monkeypatch):
    """DJANGO_ALLOW_ASYNC_UNSAFE lets Django query in the loop: afirst() of a queryset that
    isn't cached still goes to asgiref's thread (probe mode relies on the refusal)."""
    monkeypatch.setenv('DJANGO_ALLOW_ASYNC_UNSAFE', 'true')
    threads = []

    def record(execute, sql, params, many, context):
        threads.append(threading.current_thread())
        return execute(sql, params, many, context)

    async def first():
        with contextlib.ExitStack() as wrapped:
            # the queries of the loop's thread, and of asgiref's (the first sync_to_async's)
            wrapped.enter_context(connections['default'].execute_wrapper(record))
            await sync_to_async(lambda: wrapped.enter_context(connections['default'].execute_wrapper(record)))()
            return await Post.objects.nocache().filter(pk=post.pk).afirst()
    assert in_loop(first) == post
    assert threads and threading.current_thread() not in threads


def test_prefetch_after_a_hit_runs_in_a_thread(post):
    async def titles():
        return [(c.title, [p.title for p in c.posts.all()])
                async for c in Category.objects.cache().prefetch_related('posts')]
    first = in_loop(titles)
    assert in_loop(titles) == first == [('c', ['a'])]


def sentinel_settings():
    """CACHEOPS_SENTINEL for the run's sentinel, or the test is skipped."""
    location = os.environ.get('CACHEOPS_TEST_SENTINEL')
    if not location or os.environ.get('CACHEOPS_TEST_CLUSTER'):
        pytest.skip('no sentinel (CACHEOPS_TEST_SENTINEL is not set), or a cluster run')
    from tests.test_redis_connection import run_redis_db
    host, port = location.rsplit(':', 1)
    return {'locations': [(host, int(port))], 'service_name': 'cacheops-test', 'socket_timeout': 3,
            'db': run_redis_db()}


@pytest.mark.skipif(aioredis is None, reason='redis-py < 4.2 has no redis.asyncio')
def test_sentinel():
    conf = sentinel_settings()
    post = Post.objects.create(title='s', category=Category.objects.create(title='c'))
    with override_settings(CACHEOPS_SENTINEL=conf):
        in_loop(async_ops, post)
        with Reads() as seen:
            assert in_loop(async_ops, post)[0] == 's'
        assert_read_in_loop(seen, 7)

        async def pool():
            await Post.objects.cache().aget(pk=post.pk)
            return async_client().client.connection_pool
        assert isinstance(in_loop(pool), redis.asyncio.sentinel.SentinelConnectionPool)


@pytest.mark.skipif(aioredis is None, reason='redis-py < 4.2 has no redis.asyncio')
def test_a_new_async_connection_to_another_primary_drops_the_cache(post):
    """Through Sentinel, an async connection reaching a server that isn't the one the
    cache was last trusted on (cacheops:primary names another run_id: a promoted
    replica) has the cache dropped before its first read (redis/primary.py)."""
    from cacheops.redis.primary import PRIMARY_KEY
    from tests.test_redis_connection import raw_client
    from tests.utils import unseen_update
    with override_settings(CACHEOPS_SENTINEL=sentinel_settings()):
        async def title():
            return (await Post.objects.cache().aget(pk=post.pk)).title
        assert in_loop(title) == 'a'
        assert in_loop(title) == 'a'  # a hit, over the loop's new connection: checked, trusted
        unseen_update(Post.objects.filter(pk=post.pk), title='b')
        raw_client().set(PRIMARY_KEY, 'the run_id of a dead primary')
        assert in_loop(title) == 'b'  # a new loop, a new connection: the cache was dropped


def test_sync_to_async_thread_hops_are_not_needed_for_hits(post):
    """A hit in a task started by sync code run through sync_to_async: still the loop's thread."""
    async def main():
        await sync_to_async(lambda: None)()
        return await async_ops(post)
    in_loop(main)
    with Reads() as seen:
        in_loop(main)
    assert_read_in_loop(seen, 7)
