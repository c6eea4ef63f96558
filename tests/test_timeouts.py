"""Connections time out by default (issue 18, finding 5): against a Redis that accepts
connections and never answers, a save() returns, its invalidation kept to replay.
Settings, and a URL's query, choose other timeouts."""
import socket

import pytest
from django.test import override_settings

from cacheops import invalidation
from cacheops.redis import client as redis_client_module
from cacheops.redis import get_client

from .cluster import ON_CLUSTER
from .models import Category, Post
from .utils import Worker

pytestmark = pytest.mark.django_db

ONE_REDIS = {'CACHEOPS_CLUSTER': None, 'CACHEOPS_SENTINEL': None}


def options():
    client = get_client()
    pool = getattr(client, 'connection_pool', None)
    return pool.connection_kwargs if pool is not None else client.nodes_manager.connection_kwargs


@pytest.mark.parametrize('conf', ['redis://127.0.0.1:6379/3', {'host': '127.0.0.1', 'db': 3}])
def test_connections_time_out_by_default(conf):
    with override_settings(CACHEOPS_REDIS=conf, **ONE_REDIS):
        assert options()['socket_timeout'] == 3.0
        assert options()['socket_connect_timeout'] == 1.0


def test_a_unix_socket_gets_the_read_timeout():
    with override_settings(CACHEOPS_REDIS='unix:///tmp/no-such.sock', **ONE_REDIS):
        assert options()['socket_timeout'] == 3.0


@pytest.mark.parametrize('conf', ['redis://127.0.0.1:6379/3?socket_timeout=7',
                                  {'host': '127.0.0.1', 'db': 3, 'socket_timeout': 7}])
def test_settings_choose_other_timeouts(conf):
    with override_settings(CACHEOPS_REDIS=conf, **ONE_REDIS):
        assert options()['socket_timeout'] == 7
        assert options()['socket_connect_timeout'] == 1.0


def test_sentinel_connections_time_out_by_default():
    sentinel = {'locations': [('127.0.0.1', 1)], 'service_name': 'nowhere', 'socket_timeout': 0.5}
    with override_settings(CACHEOPS_SENTINEL=sentinel, CACHEOPS_CLUSTER=None):
        assert options()['socket_timeout'] == 0.5
        assert options()['socket_connect_timeout'] == 1.0


@pytest.mark.skipif(not ON_CLUSTER, reason='a Redis Cluster only: building its client connects')
def test_cluster_connections_time_out_by_default():
    assert options()['socket_connect_timeout'] == 1.0


@pytest.fixture
def silent_redis():
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed: the test is over
                return

    acceptor = Worker(accept)
    acceptor.start()
    yield listener.getsockname()[1]
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone doesn't)
    listener.close()
    for conn in accepted:
        conn.close()
    acceptor.join()


@pytest.fixture
def kept_invalidations_dropped():
    """The invalidations the silent Redis made us keep are dropped after the test. Made
    with ONE_REDIS, their keys lack the cluster's hash tags: on a cluster run every replay
    would fail (CROSSSLOT), and every later test of the process read the database."""
    yield
    invalidation.failed.clear()


@pytest.mark.django_db(transaction=True)  # the save runs in a thread of its own
def test_a_save_against_a_redis_that_never_answers_returns(silent_redis, monkeypatch,
                                                           kept_invalidations_dropped):
    # short, and one try (redis-py 6 and later try 11 times), so the test takes a second
    monkeypatch.setattr(redis_client_module, 'DEFAULT_TIMEOUTS',
                        {'socket_connect_timeout': 0.2, 'socket_timeout': 0.2})
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    conf = {'host': '127.0.0.1', 'port': silent_redis, 'retry': Retry(NoBackoff(), 0)}
    category = Category.objects.create(title='c')
    with override_settings(CACHEOPS_REDIS=conf, CACHEOPS_DEGRADE_ON_FAILURE=True, **ONE_REDIS):
        saving = Worker(lambda: Post.objects.create(title='p', category=category))
        saving.start()
        saving.join(10)  # fails the test if the save still waits on Redis
        assert invalidation.failed  # its invalidation, kept to replay
    assert Post.objects.filter(title='p').exists()


def test_async_connections_time_out_by_default():
    from asgiref.sync import async_to_sync

    from cacheops.redis import async_client

    if async_client.aioredis is None:
        pytest.skip('redis-py 4.0 has no redis.asyncio: async reads take the sync client')

    async def its_options():
        client = async_client.async_client()
        return client.client.connection_pool.connection_kwargs

    with override_settings(CACHEOPS_REDIS='redis://127.0.0.1:6379/3', **ONE_REDIS):
        options = async_to_sync(its_options)()
    assert options['socket_timeout'] == 3.0 and options['socket_connect_timeout'] == 1.0
