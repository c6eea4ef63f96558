"""A Redis restored from a snapshot written before some invalidations brings their
entries back. The first connection to it sees a new run_id where cacheops:primary names
the old one, and drops the cache before cacheops trusts the server (docs/design.md, "A
new primary, a restored Redis"). On a real redis-server, SAVEd and restarted."""
import asyncio

import pytest
import redis
from django.test import override_settings

import cacheops
from cacheops.redis import get_client
from cacheops.redis.primary import PRIMARY_KEY

from .models import Category, Post
from .utils import queries
from tools.redis_server import restartable_redis

pytestmark = pytest.mark.django_db


@pytest.fixture
def server():
    with restartable_redis() as server:
        url = 'redis://127.0.0.1:%d/0' % server.port
        with override_settings(CACHEOPS_REDIS=url, CACHEOPS_CLUSTER=None, CACHEOPS_SENTINEL=None):
            yield server


def raw(server):
    return redis.Redis(port=server.port)


def reconnect():
    """Drop the pool's connections, as a restart does to them: the next command connects."""
    get_client().connection_pool.disconnect()


@pytest.fixture
def post():
    return Post.objects.create(title='old', category=Category.objects.create(title='c'))


def titles(post):
    return [p.title for p in Post.objects.cache().filter(category=post.category_id)]


def test_a_redis_restored_from_an_older_snapshot_serves_nothing_stale(server, post):
    assert titles(post) == ['old']
    raw(server).save()  # the snapshot holds the entry
    post.title = 'new'
    post.save()  # the invalidation deletes it
    assert queries(lambda: titles(post)) == (['new'], 1)

    server.restart()  # the snapshot is loaded: the deleted entry is back
    reconnect()

    assert queries(lambda: titles(post)) == (['new'], 1)  # dropped, not served
    assert queries(lambda: titles(post)) == (['new'], 0)  # and cached again
    assert raw(server).get(PRIMARY_KEY) == raw(server).info('server')['run_id'].encode()


def test_a_new_data_set_is_marked_not_dropped(server, post):
    raw(server).set('other:data', 'x')  # an empty Redis, or one flushed, has nothing stale

    assert titles(post) == ['old']

    assert raw(server).get('other:data') == b'x'
    assert raw(server).get(PRIMARY_KEY) == raw(server).info('server')['run_id'].encode()


def test_the_same_server_keeps_the_cache_on_a_new_connection(server, post):
    assert titles(post) == ['old']
    reconnect()
    assert queries(lambda: titles(post)) == (['old'], 0)


@override_settings(CACHEOPS_PREFIX=None)
def test_invalidate_all_marks_the_flushed_data_set_at_once(server, post):
    """Or a snapshot taken before a connection writes the mark again would pass, restored,
    for a new data set."""
    assert titles(post) == ['old']
    cacheops.invalidate_all()
    assert raw(server).get(PRIMARY_KEY) == raw(server).info('server')['run_id'].encode()


@pytest.mark.django_db(transaction=True)  # the async reads' misses query in a thread of their own
def test_async_reads_of_a_restored_redis_serve_nothing_stale(server, post):
    """Read in an event loop of its own, with no sync thread above it (async_to_sync's
    reads take the sync client): a hit is the async client's."""
    async def titles_in_the_loop():
        return [p.title async for p in Post.objects.cache().filter(category=post.category_id)]

    assert asyncio.run(titles_in_the_loop()) == ['old']
    raw(server).save()
    post.title = 'new'
    post.save()
    assert asyncio.run(titles_in_the_loop()) == ['new']

    server.restart()

    assert asyncio.run(titles_in_the_loop()) == ['new']  # a new loop, a new client: it connects
