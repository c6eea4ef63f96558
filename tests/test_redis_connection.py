"""Redis connection settings: CACHEOPS_REDIS as a dict, a URL or empty,
CACHEOPS_SENTINEL, CACHEOPS_CLIENT_CLASS. The client is created lazily and
rebuilt when these settings change (override_settings)."""
import os
import threading
from unittest import mock

import pytest
import redis
import redis.sentinel
from django.conf import settings
from django.test import override_settings
from django.utils.module_loading import import_string

import cacheops.redis
from .models import All

pytestmark = pytest.mark.django_db


class CountingRedis(redis.Redis):
    """A custom client class, see test_client_class."""
    calls = 0

    def execute_command(self, *args, **kwargs):
        type(self).calls += 1
        return super().execute_command(*args, **kwargs)


def run_redis_kwargs():
    """Connection kwargs of the Redis this test run uses."""
    conf = settings.CACHEOPS_REDIS
    client = redis.Redis.from_url(conf) if isinstance(conf, str) else redis.Redis(**conf)
    return client.connection_pool.connection_kwargs


def run_redis_db():
    return int(run_redis_kwargs().get('db') or 0)


def raw_client():
    conf = settings.CACHEOPS_REDIS
    return redis.Redis.from_url(conf) if isinstance(conf, str) else redis.Redis(**conf)


def assert_caching_works(django_assert_num_queries):
    obj = All.objects.create(tag=42)
    qs = All.objects.filter(tag=42)
    with django_assert_num_queries(1):
        assert list(qs) == [obj]
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=42)) == [obj]
    return qs


def client():
    return cacheops.redis.redis_client


def test_dict_setting(django_assert_num_queries):
    kwargs = run_redis_kwargs()
    if 'path' in kwargs:
        conf = {'unix_socket_path': kwargs['path'], 'db': run_redis_db()}
    else:
        conf = {'host': kwargs['host'], 'port': kwargs['port'], 'db': run_redis_db(),
                'socket_timeout': 3}
    if kwargs.get('password'):
        conf['password'] = kwargs['password']
    with override_settings(CACHEOPS_REDIS=conf):
        assert client().ping()
        used = client().connection_pool.connection_kwargs
        assert int(used['db']) == run_redis_db()
        if 'host' in conf:
            assert (used['host'], int(used['port'])) == (conf['host'], int(conf['port']))
            assert used['socket_timeout'] == 3
        qs = assert_caching_works(django_assert_num_queries)
        assert raw_client().exists(qs._cache_key())


def test_url_setting(django_assert_num_queries):
    kwargs = run_redis_kwargs()
    if 'path' in kwargs:
        url = 'unix://%s?db=%d' % (kwargs['path'], run_redis_db())
    else:
        url = 'redis://%s:%s/%d' % (kwargs['host'], kwargs['port'], run_redis_db())
    if kwargs.get('password'):
        url = url.replace('://', '://:%s@' % kwargs['password'], 1)
    with override_settings(CACHEOPS_REDIS=url):
        assert client().ping()
        used = client().connection_pool.connection_kwargs
        assert int(used['db']) == run_redis_db()
        qs = assert_caching_works(django_assert_num_queries)
        assert raw_client().exists(qs._cache_key())


def test_empty_setting_means_localhost_defaults():
    with override_settings(CACHEOPS_REDIS={}):
        used = client().connection_pool.connection_kwargs
        assert used.get('host', 'localhost') in ('localhost', '127.0.0.1')
        assert int(used.get('port', 6379)) == 6379
        assert int(used.get('db', 0)) == 0


def address(kwargs):
    return tuple(kwargs.get(name) for name in ('host', 'port', 'path', 'db'))


def test_client_is_rebuilt_after_override():
    before = address(client().connection_pool.connection_kwargs)
    assert int(before[-1] or 0) == run_redis_db()
    with override_settings(CACHEOPS_REDIS={}):
        assert int(client().connection_pool.connection_kwargs.get('db', 0)) == 0
    assert address(client().connection_pool.connection_kwargs) == before
    assert client().ping()


def test_sentinel(django_assert_num_queries):
    location = os.environ.get('CACHEOPS_TEST_SENTINEL')
    if not location:
        if os.environ.get('CI'):
            pytest.fail('CACHEOPS_TEST_SENTINEL is not set in CI: the sentinel test must run')
        pytest.skip('no sentinel (CACHEOPS_TEST_SENTINEL is not set)')
    host, port = location.rsplit(':', 1)
    conf = {
        'locations': [(host, int(port))],
        'service_name': 'cacheops-test',
        'socket_timeout': 3,
        'db': run_redis_db(),
    }
    with override_settings(CACHEOPS_SENTINEL=conf):
        assert client().ping()
        assert isinstance(client().connection_pool, redis.sentinel.SentinelConnectionPool)
        assert client().connection_pool.service_name == 'cacheops-test'
        qs = assert_caching_works(django_assert_num_queries)
        # sentinel points at the run's Redis, so the entry is there
        assert raw_client().exists(qs._cache_key())


def test_client_class(django_assert_num_queries):
    path = __name__ + '.CountingRedis'
    cls = import_string(path)
    cls.calls = 0
    with override_settings(CACHEOPS_CLIENT_CLASS=path):
        assert isinstance(client(), cls)
        assert client().ping()
        assert_caching_works(django_assert_num_queries)
        assert cls.calls > 1
    assert not isinstance(client(), cls)


# A connection per thread (cacheops.redis.get_client)

def test_each_thread_keeps_a_client_on_a_connection_of_its_own():
    from cacheops.redis import get_client
    mine = get_client()
    assert get_client() is mine and mine.connection is not None
    assert mine.connection_pool is client().connection_pool  # the shared client's pool
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(get_client()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine and theirs[0].connection is not mine.connection
    assert mine.ping()


def test_the_thread_client_follows_the_settings():
    from cacheops.redis import get_client
    before = get_client()
    with override_settings(CACHEOPS_REDIS={}):
        assert get_client() is not before
        assert int(get_client().connection_pool.connection_kwargs.get('db', 0)) == 0
    after = get_client()
    assert after is not before and after.ping()


def test_a_forked_child_does_not_use_its_parents_connection():
    from cacheops.redis import get_client
    parent = get_client()
    parent.set('cacheops-fork-test', 'parent')
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and exit without running the parent's cleanup
        try:
            child = get_client()
            ok = child is not parent and child.connection is not parent.connection \
                and child.get('cacheops-fork-test') == b'parent'
            os.write(write, b'1' if ok else b'0')
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b'1'
    assert parent.get('cacheops-fork-test') == b'parent'  # the parent's connection still works
    parent.delete('cacheops-fork-test')


def test_with_redis_down_at_first_use_the_shared_client_answers():
    from cacheops import redis as cacheops_redis
    error = redis.exceptions.ConnectionError('injected: redis is down')
    result = []

    def first_use():
        with mock.patch.object(redis.connection.ConnectionPool, 'get_connection', side_effect=error):
            result.append(cacheops_redis.get_client())
        result.append(cacheops_redis.get_client())  # Redis back: a client of its own
    thread = threading.Thread(target=first_use)
    thread.start()
    thread.join()
    assert result[0] is client()._wrapped
    assert result[1] is not result[0] and result[1].ping()
