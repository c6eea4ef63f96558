"""Issue 18, finding 2: with CACHEOPS_DEGRADE_ON_FAILURE every Redis error a read meets
falls back to the database, not only a lost connection: out of memory (maxmemory with
noeviction), BUSY (a script running long), READONLY (a replica: a primary demoted by a
failover), NOPERM (an ACL) and WRONGTYPE (a key of another type). Each is produced by a
real Redis: a private server for those that are server-wide. A save meeting them never
fails, and nothing is stale once Redis is healthy. A value that can't be decoded is a
miss, logged once."""
import asyncio
import logging

import pytest
import redis
from django.test import override_settings

from cacheops import invalidation
from cacheops.conf import insideout
from cacheops.redis import get_client
from tests.cluster import single_redis
from tests.models import Category, Post
from tests.utils import Worker, queries
from tools.redis_server import private_redis

pytestmark = [pytest.mark.django_db, single_redis('private servers and their faults')]


@pytest.fixture(autouse=True)
def no_pending_failures():
    yield
    invalidation.failed.clear()


@pytest.fixture
def category():
    cat = Category.objects.create(title='c')
    Post.objects.create(title='old', category=cat)
    return cat


@pytest.fixture
def other():
    """A category whose posts are not cached yet: reading them is a miss, which writes."""
    return Category.objects.create(title='other')


def titles(cat):
    return [p.title for p in Post.objects.cache().filter(category=cat)]


def degraded(url):
    return override_settings(CACHEOPS_REDIS=url, CACHEOPS_CLUSTER={}, CACHEOPS_DEGRADE_ON_FAILURE=True)


def reads_the_database(cat, expected):
    """Two reads of titles(cat), each from the database, none raising."""
    for _ in range(2):
        assert queries(lambda: titles(cat)) == (expected, 1)


def save_then_healthy(cat, make_healthy):
    """A save while Redis refuses, then, Redis healthy, reads that equal the database."""
    post = Post.objects.get(category=cat)
    post.title = 'new'
    post.save()  # never raises
    make_healthy()
    assert queries(lambda: titles(cat)) == (['new'], 1)
    assert queries(lambda: titles(cat)) == (['new'], 0)
    assert not invalidation.failed


def fill(raw):
    """Ballast well past a maxmemory set after it: with noeviction Redis refuses every
    write, with OOM (redis-py: OutOfMemoryError, a ResponseError)."""
    raw.set('ballast', b'x' * 2 * 1024 * 1024)
    raw.config_set('maxmemory', '1mb')
    with pytest.raises(redis.ResponseError, match='maxmemory'):
        raw.set('probe', 1)


def test_out_of_memory_reads_fall_back_and_saves_go_through(category, other):
    with private_redis('--maxmemory-policy', 'noeviction') as port:
        url = 'redis://127.0.0.1:%d/0' % port
        raw = redis.Redis.from_url(url)
        with degraded(url):
            assert titles(category) == ['old']  # cached, before Redis is full
            fill(raw)
            reads_the_database(other, [])
            save_then_healthy(category, lambda: raw.config_set('maxmemory', 0))


def test_busy_reads_fall_back(category):
    with private_redis('--lua-time-limit', '10') as port:
        url = 'redis://127.0.0.1:%d/0' % port
        raw = redis.Redis.from_url(url)
        busy = Worker(lambda: redis.Redis.from_url(url).eval('while true do end', 0))

        def killed():
            raw.script_kill()
            with pytest.raises(redis.ResponseError, match='killed'):
                busy.join()
        with degraded(url):
            busy.start()
            while True:  # until the script is past the limit and every other client hears BUSY
                try:
                    raw.ping()
                except redis.ResponseError as e:
                    assert 'BUSY' in str(e)
                    break
            try:
                reads_the_database(category, ['old'])
                save_then_healthy(category, killed)
            finally:
                if busy.is_alive():
                    killed()


def test_readonly_reads_fall_back(category, other):
    """A replica (of a primary that doesn't answer) refuses writes, as a primary demoted
    by a failover does: a miss's marker is a write."""
    with private_redis() as port:
        url = 'redis://127.0.0.1:%d/0' % port
        raw = redis.Redis.from_url(url)
        with degraded(url):
            assert titles(category) == ['old']
            raw.replicaof('127.0.0.1', 1)
            reads_the_database(other, [])
            save_then_healthy(category, lambda: raw.replicaof('NO', 'ONE'))


def test_noperm_reads_fall_back(category, other):
    with private_redis() as port:
        raw = redis.Redis(port=port)
        raw.acl_setuser('web', enabled=True, passwords=['+pw'], keys=['*'], commands=['+@all'])
        url = 'redis://web:pw@127.0.0.1:%d/0' % port
        with degraded(url):
            assert titles(category) == ['old']
            raw.acl_setuser('web', commands=['-evalsha', '-eval', '-script'])
            reads_the_database(other, [])
            save_then_healthy(category, lambda: raw.acl_setuser('web', commands=['+@all']))


def test_wrongtype_reads_fall_back(category):
    """A set at the cache key: GET answers WRONGTYPE (insideout's MGET reads it as missing,
    and its store replaces it)."""
    qs = Post.objects.cache().filter(category=category)
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True):
        get_client().sadd(qs._cache_key(), 'not a value')
        if insideout():
            assert queries(lambda: titles(category)) == (['old'], 1)
        else:
            reads_the_database(category, ['old'])
            get_client().delete(qs._cache_key())
        save_then_healthy(category, lambda: None)


@pytest.mark.parametrize('data', [b'\x80\x05garbage', b'foreign bytes', b'\x00\xff' * 20])
def test_a_value_that_cannot_be_decoded_is_a_miss_logged_once(category, caplog, data):
    qs = Post.objects.cache().filter(category=category)
    assert titles(category) == ['old']
    key = qs._cache_key()
    checksum = get_client().get(key)[:40] if insideout() else b''  # a value of the right stamps
    for _ in range(2):
        get_client().set(key, checksum + data)
        with caplog.at_level(logging.WARNING, logger='cacheops'):
            assert queries(lambda: titles(category)) == (['old'], 1)
        assert queries(lambda: titles(category)) == (['old'], 0)  # stored again over it
    logged = [r for r in caplog.records if r.name == 'cacheops' and 'decode' in r.getMessage()]
    assert len(logged) == 1, logged


@pytest.mark.django_db(transaction=True)
def test_wrongtype_async_reads_fall_back(category):
    """The event loop's own reads (a hit read in the loop, no async_to_sync above it)
    degrade on any Redis error too."""
    async def count():
        return await Post.objects.cache().filter(category=category).acount()
    assert asyncio.run(count()) == 1  # cached: the next one is read in the loop
    key = Post.objects.cache().filter(category=category)._cache_key('count')
    assert get_client().delete(key) == 1
    get_client().sadd(key, 'not a value')
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True):
        assert asyncio.run(count()) == 1
