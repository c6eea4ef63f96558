"""Redis connection settings: CACHEOPS_REDIS as a dict, a URL or empty,
CACHEOPS_SENTINEL, CACHEOPS_CLIENT_CLASS. The client is created lazily and
rebuilt when these settings change (override_settings)."""
import gc
import os
import threading
import time

import pytest
import redis
import redis.sentinel
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils.module_loading import import_string

import cacheops.redis
from .cluster import single_redis
from .models import All, Category, Post
from .utils import AbstractConnection, Worker, hand_packed

pytestmark = [pytest.mark.django_db, single_redis(
    'the client built from CACHEOPS_REDIS or Sentinel, its connection pool and the connection a '
    'thread keeps past redis-py, which a cluster client never uses')]


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


def test_sentinel_options_beyond_the_required_go_to_sentinel():
    """The client is built without connecting: no sentinel needs to run here."""
    conf = {'locations': [('127.0.0.1', 26379)], 'service_name': 'svc', 'db': 3,
            'socket_timeout': 0.5, 'socket_connect_timeout': 0.25,
            'sentinel_kwargs': {'socket_timeout': 0.125}}
    with override_settings(CACHEOPS_SENTINEL=conf):
        pool = client().connection_pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        assert pool.service_name == 'svc'
        kwargs = pool.connection_kwargs
        assert (kwargs['db'], kwargs['socket_timeout'], kwargs['socket_connect_timeout']) == (3, 0.5, 0.25)
        assert pool.sentinel_manager.sentinel_kwargs['socket_timeout'] == 0.125
        assert [s.connection_pool.connection_kwargs['port'] for s in pool.sentinel_manager.sentinels] == [26379]


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


# What a kept connection would break (a connection per thread was tried and undone)

@pytest.mark.django_db(transaction=True)
def test_idle_threads_hold_no_connection():
    """Threads that used the cache and sit idle (a thread pool's) leave the pool's
    connections to others: with max_connections=2, a fifth thread still reads."""
    url = raw_client().connection_pool.connection_kwargs
    conf = {k: v for k, v in url.items() if k in ('host', 'port', 'db', 'path', 'password')}
    obj = All.objects.create(tag=7)
    idle, results = threading.Event(), []

    def read_then_idle(wait):
        try:
            results.append([o.pk for o in All.objects.filter(tag=7)])
        except Exception as e:  # reported by the test thread
            results.append(e)
        if wait:
            idle.wait(10)
            connection.close()

    with override_settings(CACHEOPS_REDIS={**conf, 'max_connections': 2}):
        threads = [Worker(read_then_idle, True) for _ in range(4)]
        for thread in threads:
            thread.start()
            while len(results) < threads.index(thread) + 1:
                threading.Event().wait(0.01)
        read_then_idle(False)
        idle.set()
        for thread in threads:
            thread.join(10)
    assert results == [[obj.pk]] * 5


def test_a_connection_the_server_closed_is_replaced():
    """After a Redis restart or an idle timeout, reads and invalidations go on."""
    from cacheops import invalidation
    category = Category.objects.create(title='c')
    assert list(Post.objects.cache().filter(category=category)) == []
    raw = raw_client()
    db = run_redis_db()
    mine = raw.client_id()
    for info in raw.client_list():
        if int(info['db']) == db and int(info['id']) != mine:
            raw.client_kill_filter(_id=info['id'])
    Post.objects.create(title='p', category=category)  # invalidates
    assert not invalidation.failed
    assert [p.title for p in Post.objects.cache().filter(category=category)] == ['p']


# Stores are sent without waiting for their reply (CLIENT REPLY SKIP)

MARKER = b'\x00cacheops:pending:' + b'0' * 16


def _store_by_script(key, value, marked=False):
    """Store value at key the way a miss does, through the marker placed before it."""
    if not marked:
        raw_client().set(key, MARKER, ex=60)
    cacheops.redis.send_script('store', [key, key + ':signal'], [MARKER, value, '0'])


@hand_packed
def test_a_store_returns_while_redis_holds_it_back(private_server):
    """Redis holding writes back (CLIENT PAUSE) doesn't hold back the read that stores:
    the store runs when Redis lets it, and this thread's next command sees it."""
    # A private server: a pause holds back every client of a server, and the test
    # command's other runs share the default one.
    raw = redis.Redis(port=private_server)
    with override_settings(CACHEOPS_REDIS={'port': private_server}):
        raw.set('tests:paused', MARKER, ex=60)
        _store_by_script('tests:paused', b'before', marked=True)  # the probe, before writes are paused
        raw.set('tests:paused', MARKER, ex=60)
        raw.execute_command('CLIENT', 'PAUSE', 10000, 'WRITE')
        try:
            _store_by_script('tests:paused', b'value', marked=True)
            assert raw.get('tests:paused') == MARKER  # not stored yet
        finally:
            raw.execute_command('CLIENT', 'UNPAUSE')
        assert cacheops.redis.get_client().get('tests:paused') == b'value'


def allow_all_but(raw, name, *refused):
    """Make an ACL user who may do everything but the `refused` commands ('-echo')."""
    # Not raw.acl_setuser(): it takes channels from redis-py 4.3 on.
    raw.execute_command('ACL', 'SETUSER', name, 'on', 'nopass', '~*', '&*', '+@all', *refused)


@pytest.fixture
def user_without_client_reply():
    """CACHEOPS_REDIS as a user who may not use CLIENT REPLY, as some proxies refuse it."""
    raw = raw_client()
    name = 'cacheops-tests-no-client-reply-%d' % os.getpid()
    allow_all_but(raw, name, '-client|reply')
    kwargs = run_redis_kwargs()
    conf = {k: v for k, v in kwargs.items() if k in ('host', 'port', 'db', 'path')}
    if 'path' in conf:
        conf['unix_socket_path'] = conf.pop('path')
    try:
        with override_settings(CACHEOPS_REDIS={**conf, 'username': name}):
            yield
    finally:
        raw.acl_deluser(name)


@hand_packed
def test_stores_wait_for_their_reply_where_client_reply_is_refused(
        user_without_client_reply, django_assert_num_queries, awaited_replies):
    with pytest.raises(redis.ResponseError):  # the user can't, indeed
        client().execute_command('CLIENT', 'REPLY', 'ON')
    _store_by_script('tests:refused', b'value')
    assert cacheops.redis._skips_replies[client().connection_pool] is not True
    assert client().get('tests:refused') == b'value'
    awaited_replies.clear()
    assert_caching_works(django_assert_num_queries)
    assert client().ping()  # no reply was left unread on the connection


def _replies_a_store_waits_for(awaited_replies, key, value):
    raw_client().set(key, MARKER, ex=60)
    cacheops.redis._settle(cacheops.redis.get_client().connection_pool)  # the last store
    awaited_replies.clear()
    _store_by_script(key, value, marked=True)
    count = len(awaited_replies)
    assert client().get(key) == value
    return count


@hand_packed
def test_a_pool_that_stopped_skipping_replies_asks_the_server_again_later(
        user_without_client_reply, awaited_replies):
    """After a refusal (an ACL, a server busy for a while) stores wait for their replies,
    and the server is asked again some time later."""
    pool = client().connection_pool
    _store_by_script('tests:again', b'v')
    ask_again = cacheops.redis._skips_replies[pool]
    assert ask_again is not True and ask_again > time.monotonic() + 50
    # the store's own reply, no probe meanwhile
    assert _replies_a_store_waits_for(awaited_replies, 'tests:again', b'w') == 1
    cacheops.redis._skips_replies[pool] = time.monotonic() - 1  # time to ask again
    _store_by_script('tests:again', b'x')
    assert cacheops.redis._skips_replies[pool] > ask_again  # asked: refused again


@hand_packed
def test_a_server_that_skips_replies_again_is_found_to(awaited_replies):
    pool = client().connection_pool
    _store_by_script('tests:again', b'v')
    assert cacheops.redis._skips_replies[pool] is True
    cacheops.redis._stop_skipping_replies(pool)  # as after a busy server's refusal
    assert _replies_a_store_waits_for(awaited_replies, 'tests:again', b'w') == 1
    cacheops.redis._skips_replies[pool] = time.monotonic() - 1  # time to ask again
    _store_by_script('tests:again', b'x')
    assert cacheops.redis._skips_replies[pool] is True
    assert _replies_a_store_waits_for(awaited_replies, 'tests:again', b'y') == 0


def _conf(**options):
    conf = {k: v for k, v in run_redis_kwargs().items() if k in ('host', 'port', 'db', 'path')}
    if 'path' in conf:
        conf['unix_socket_path'] = conf.pop('path')
    return {**conf, **options}


@hand_packed
@pytest.mark.parametrize('blocking', [False, True], ids=['ConnectionPool', 'BlockingConnectionPool'])
def test_stores_keep_to_the_pools_limits(blocking):
    """The store connections' pool has the client pool's max_connections, but never
    blocks: a store finding none free waits for its reply on the client's at once."""
    if blocking:
        conf = {'connection_pool': redis.BlockingConnectionPool(max_connections=1, timeout=0.1,
                                                                **_conf())}
    else:
        conf = _conf(max_connections=1)
    with override_settings(CACHEOPS_REDIS=conf):
        _store_by_script('tests:full', b'v')
        store_pool = cacheops.redis._store_pools[client().connection_pool]
        assert type(store_pool) is redis.ConnectionPool
        assert store_pool.max_connections == 1
        # the one store connection, kept for this thread's next read: taken elsewhere
        _, taken = cacheops.redis._take_held(store_pool)
        try:
            _store_by_script('tests:full', b'w')
        finally:
            store_pool.release(taken)
        assert client().get('tests:full') == b'w'


def test_the_read_after_a_store_goes_over_the_stores_connection(monkeypatch):
    """Redis orders commands only within a connection: this thread's next read must find
    what it stored."""
    sent, send = [], AbstractConnection.send_packed_command

    def recording(self, command, *args, **kwargs):
        sent.append((self, b'EVAL' in b''.join(command) if isinstance(command, list) else b'EVAL' in command))
        return send(self, command, *args, **kwargs)
    _store_by_script('tests:order', b'v')  # the probe, and a first store
    monkeypatch.setattr(AbstractConnection, 'send_packed_command', recording)
    raw_client().set('tests:order', MARKER, ex=60)
    sent.clear()
    _store_by_script('tests:order', b'w', marked=True)
    assert cacheops.redis.read_command(cacheops.redis.get_client(), 'GET', 'tests:order') == b'w'
    (store_connection, is_store), (read_connection, is_read_store) = sent
    assert is_store and not is_read_store
    assert read_connection is store_connection


@hand_packed
def test_a_thread_ending_after_a_store_gives_its_connection_back(round_trips):
    with override_settings(CACHEOPS_REDIS=_conf(max_connections=1)):
        _store_by_script('tests:ended', b'v')  # the probe
        store_pool = cacheops.redis._store_pools[client().connection_pool]
        store_pool.release(cacheops.redis._take_held(store_pool)[1])
        thread = Worker(lambda: _store_by_script('tests:ended', b'w'))
        thread.start()
        thread.join(10)
        gc.collect()
        raw_client().set('tests:ended', MARKER, ex=60)
        round_trips.clear()
        _store_by_script('tests:ended', b'x', marked=True)
        # the one store connection was free: the store skipped its reply (EVAL, not the
        # EVALSHA of a store waiting for its reply on the client's pool)
        sent = b''.join(part for request in round_trips
                        for part in (request if isinstance(request, list) else [request]))
        assert b'EVAL\r\n' in sent and b'EVALSHA' not in sent
        assert client().get('tests:ended') == b'x'


def test_a_custom_client_class_sees_the_store():
    cls = CountingRedis
    with override_settings(CACHEOPS_CLIENT_CLASS=__name__ + '.CountingRedis'):
        client().ping()
        cls.calls = 0
        _store_by_script('tests:counted', b'value')
        assert cls.calls == 1
        assert client().get('tests:counted') == b'value'


@hand_packed
def test_a_store_whose_sending_failed_is_sent_again(monkeypatch):
    """A connection that fails as the store is written (the server went away) is
    replaced, and the store sent again, as any command is."""
    _store_by_script('tests:warm', b'v')  # the probe done
    original = AbstractConnection.send_packed_command
    failures = []

    def fail_once(self, command, *args, **kwargs):
        if not failures:
            failures.append(command)
            self.disconnect()
            raise redis.ConnectionError('injected')
        return original(self, command, *args, **kwargs)

    raw_client().set('tests:resent', MARKER, ex=60)
    monkeypatch.setattr(AbstractConnection, 'send_packed_command', fail_once)
    _store_by_script('tests:resent', b'value', marked=True)
    monkeypatch.undo()
    assert failures
    assert client().get('tests:resent') == b'value'


# Hits read on a pooled connection directly (cacheops.redis.read_command)

@hand_packed
def test_a_read_whose_connection_failed_is_retried(monkeypatch, django_assert_num_queries):
    qs = assert_caching_works(django_assert_num_queries)
    original = AbstractConnection.read_response
    failures = []

    def fail_once(self, *args, **kwargs):
        if not failures:
            failures.append(self)
            self.disconnect()
            raise redis.ConnectionError('injected')
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, 'read_response', fail_once)
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=42)) == list(qs)
    assert failures


def test_a_custom_client_class_sees_the_reads(django_assert_num_queries):
    with override_settings(CACHEOPS_CLIENT_CLASS=__name__ + '.CountingRedis'):
        assert_caching_works(django_assert_num_queries)
        CountingRedis.calls = 0
        with django_assert_num_queries(0):
            list(All.objects.filter(tag=42))
        assert CountingRedis.calls == 1


def test_a_single_connection_client(django_assert_num_queries):
    kwargs = run_redis_kwargs()
    conf = {k: v for k, v in kwargs.items() if k in ('host', 'port', 'db', 'password')}
    if 'path' in kwargs:
        conf['unix_socket_path'] = kwargs['path']
    with override_settings(CACHEOPS_REDIS={**conf, 'single_connection_client': True}):
        assert client().connection is not None
        assert_caching_works(django_assert_num_queries)


@pytest.fixture
def private_server():
    from tools.redis_server import private_redis
    with private_redis() as port:
        yield port


@hand_packed
def test_the_probe_gives_up_skipping_where_echo_is_refused(private_server):
    """The probe's replies can't be counted then: the connection is dropped instead."""
    raw = redis.Redis(port=private_server)
    allow_all_but(raw, 'noecho', '-echo')
    with override_settings(CACHEOPS_REDIS={'port': private_server, 'username': 'noecho',
                                           'socket_timeout': 5}):
        raw.set('k', MARKER)
        cacheops.redis.send_script('store', ['k', 'k:signal'], [MARKER, 'v', '0'])
        assert cacheops.redis._skips_replies[client().connection_pool] is not True
        assert client().get('k') == b'v'


BUSY_LOOP = 'local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return 1'


READERS = {
    'hot-path read': lambda client_, key: cacheops.redis.read_command(client_, 'GET', key),
    "redis-py's command path": lambda client_, key: client_.get(key),
}


@hand_packed
@pytest.mark.parametrize('reader', list(READERS))
def test_replies_to_stores_a_busy_server_refused_reach_no_read(monkeypatch, private_server, reader):
    """A script running past busy-reply-threshold makes Redis refuse CLIENT REPLY SKIP and
    answer the store after all: no read takes those replies for its own, through
    cacheops' reads or redis-py's own commands, in busy spells after the server was
    asked again too."""
    monkeypatch.setattr(cacheops.redis.held, 'ASK_AGAIN_AFTER', 0.2)
    read = READERS[reader]
    raw = redis.Redis(port=private_server)
    raw.config_set('busy-reply-threshold', 20)
    keys = 200
    for i in range(keys):
        raw.set('k%d' % i, 'v%d' % i)
    with override_settings(CACHEOPS_REDIS={'port': private_server}):
        client_ = cacheops.redis.get_client()
        cacheops.redis.send_script('store', ['x', 'x:signal'], [MARKER, 'v', '0'])
        assert cacheops.redis._skips_replies[client_.connection_pool] is True
        wrong, busy_errors, i = [], 0, 0
        for _ in range(3):  # spells of 0.3 s, 0.3 s apart: the server is asked again between
            busy = Worker(lambda: redis.Redis(port=private_server).eval(BUSY_LOOP, 0, 10 ** 7))
            busy.start()
            deadline = time.monotonic() + 0.3
            while busy.is_alive() or time.monotonic() < deadline:
                try:
                    cacheops.redis.send_script('store', ['x', 'x:signal'], [MARKER, 'v', '0'])
                    value = read(client_, 'k%d' % (i % keys))
                except redis.ResponseError as e:  # busy: the store or the read refused
                    assert str(e).startswith('BUSY'), e
                    busy_errors += 1
                else:
                    if value != b'v%d' % (i % keys):
                        wrong.append(value)
                i += 1
            busy.join()
        assert busy_errors, 'the server was never busy'
        assert not wrong, 'a read took the reply meant for another command'
        assert [read(client_, 'k%d' % i) for i in range(3)] == [b'v0', b'v1', b'v2']
