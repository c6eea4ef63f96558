"""Stores skip their replies (CLIENT REPLY SKIP) over connections of their own: a thread
keeps one for its stores and hot reads, so that its reads run after its stores, and
gives it back when it ends. None of this may leak a connection, make a read wait for
one, or cost a connection per thread."""
import gc
import os
import subprocess
import threading
import time

import pytest
import redis
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import cacheops.redis
from cacheops import cached_as, invalidation
from tools.redis_server import find_redis_server, free_port, ping, private_redis
from .models import All
from .test_redis_connection import MARKER, _conf, _store_by_script, allow_all_but
from .utils import Worker, hand_packed

pytestmark = [pytest.mark.django_db(transaction=True), hand_packed]

BUSY_LOOP = 'local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return 1'


class _Server:
    """A private redis-server that can be stopped and started again on its port."""

    def __init__(self):
        self.port, self.process = free_port(), None

    def start(self):
        self.process = subprocess.Popen(
            [find_redis_server(), '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not ping('redis://127.0.0.1:%d' % self.port):
            assert time.monotonic() < deadline, 'redis-server did not start'
            time.sleep(0.02)

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def server():
    server = _Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_idle_threads_keeping_store_connections_make_no_store_wait():
    """With a BlockingConnectionPool, threads sitting idle after a miss keep the store
    connections: another thread's store waits for its reply at once instead of blocking."""
    pool = redis.BlockingConnectionPool(max_connections=2, timeout=2, **_conf())
    with override_settings(CACHEOPS_REDIS={'connection_pool': pool}):
        _store_by_script('tests:warm', b'v')  # the probe
        store_pool = cacheops.redis._store_pools[pool]
        store_pool.release(cacheops.redis._take_held(store_pool)[1])
        idle, done = threading.Event(), []

        def miss_then_idle(tag):
            list(All.objects.filter(tag=tag))
            done.append(tag)
            idle.wait(10)
            connection.close()
        threads = [Worker(miss_then_idle, tag) for tag in (1, 2)]
        for thread in threads:
            thread.start()
        try:
            while len(done) < 2 and all(thread.is_alive() for thread in threads):  # a failed one's join raises
                time.sleep(0.01)
            started = time.monotonic()
            list(All.objects.filter(tag=3))  # a miss here: no store connection is free
            took = time.monotonic() - started
        finally:
            idle.set()
            for thread in threads:
                thread.join(10)
    assert took < 1, 'the miss took %.2f s: its store waited for a connection' % took


def test_a_store_failing_on_a_kept_connection_gives_it_back(server):
    """Nested cached calls: the inner store keeps its connection, Redis goes away while the
    outer one computes, and the outer store fails on that connection."""
    pool = redis.BlockingConnectionPool(max_connections=1, timeout=1, port=server.port)
    with override_settings(CACHEOPS_REDIS={'connection_pool': pool}, CACHEOPS_DEGRADE_ON_FAILURE=True):
        All.objects.create(tag=5)

        @cached_as(All, timeout=60)
        def outer():
            inner = [o.tag for o in All.objects.filter(tag=5)]  # a miss, stored
            server.stop()
            return inner

        with pytest.warns(RuntimeWarning):
            assert outer() == [5]
        server.start()
        store_pool = cacheops.redis._store_pools[pool]
        assert not store_pool._in_use_connections, 'kept by nobody, given back to nobody'


def test_a_store_failing_at_its_health_check_gives_its_connection_back(server):
    """redis-py PINGs a connection idle past health_check_interval before the store: a busy
    server refuses it, and the store fails, but its connection goes back to the pool."""
    redis.Redis(port=server.port).config_set('busy-reply-threshold', 20)
    with override_settings(CACHEOPS_REDIS={'port': server.port, 'health_check_interval': 1}):
        cacheops.redis.send_script('store', ['x', 'x:signal'], ['m', 'v', '0'])  # kept
        store_pool = cacheops.redis._store_pools[cacheops.redis.get_client().connection_pool]
        time.sleep(1.1)
        busy = Worker(lambda: redis.Redis(port=server.port).eval(BUSY_LOOP, 0, 3 * 10 ** 7))
        busy.start()
        time.sleep(0.05)
        try:
            with pytest.raises(redis.ResponseError):
                cacheops.redis.send_script('store', ['x', 'x:signal'], ['m', 'v', '0'])
        finally:
            busy.join()
        assert cacheops.redis._thread_held.held is None
        assert not store_pool._in_use_connections


def test_threads_ending_after_a_store_reuse_the_connections(server):
    """A thread per request (runserver, ASGI's per-request executor): the store connection
    a thread kept goes back to the pool as it is, for the next thread to use."""
    with override_settings(CACHEOPS_REDIS={'port': server.port}):
        All.objects.create(tag=1)
        list(All.objects.filter(tag=-1))  # the probe

        def request(i):
            list(All.objects.filter(tag=1000 + i))  # a miss, stored
            connection.close()
        raw = redis.Redis(port=server.port)
        before = raw.info('stats')['total_connections_received']
        for i in range(20):
            thread = Worker(request, i)
            thread.start()
            thread.join(10)
        made = raw.info('stats')['total_connections_received'] - before - 1  # -1: raw's own
    assert made <= 2, '%d connections made for 20 requests' % made


def test_any_later_command_of_the_thread_runs_after_its_store(server):
    """Not only the next cache read: redis-py's own commands (here a TTL, as a test of
    the key layout would) wait for the store this thread sent over its own connection."""
    # A private server: a pause holds back every client of a server, and the test
    # command's other runs share the default one.
    raw = redis.Redis(port=server.port)
    with override_settings(CACHEOPS_REDIS={'port': server.port}):
        _store(raw, 'tests:settled')  # the probe, and a first store
        raw.set('tests:settled', MARKER, ex=60)
        raw.execute_command('CLIENT', 'PAUSE', 10000, 'WRITE')  # holds the store back
        unpause = threading.Timer(0.3, lambda: redis.Redis(port=server.port).execute_command('CLIENT', 'UNPAUSE'))
        unpause.start()
        try:
            _store_by_script('tests:settled', b'w', marked=True)
            assert cacheops.redis.redis_client.get('tests:settled') == b'w'
        finally:
            unpause.join()


# Hot reads go over the connection the thread keeps, taken once: no pool checkout per hit.

def _checkouts(monkeypatch):
    """A list of the pools connections are taken from while the test runs."""
    taken = []
    for cls in (redis.ConnectionPool, redis.BlockingConnectionPool):
        original = cls.get_connection

        def recording(pool, *args, _original=original, **kwargs):
            taken.append(pool)
            return _original(pool, *args, **kwargs)
        monkeypatch.setattr(cls, 'get_connection', recording)
    return taken


def test_hits_take_no_connection_from_a_pool(monkeypatch):
    All.objects.create(tag=7)
    assert [o.tag for o in All.objects.filter(tag=7)] == [7]  # misses, stored
    assert All.objects.filter(tag=7).count() == 1
    taken = _checkouts(monkeypatch)
    for _ in range(5):
        assert [o.tag for o in All.objects.filter(tag=7)] == [7]
        assert All.objects.filter(tag=7).count() == 1
    assert taken == []


def test_a_thread_ending_after_hits_gives_its_connection_back():
    pool = redis.ConnectionPool(max_connections=1, **_conf())
    with override_settings(CACHEOPS_REDIS={'connection_pool': pool}):
        All.objects.create(tag=8)
        assert [o.tag for o in All.objects.filter(tag=8)] == [8]
        store_pool = cacheops.redis._store_pools[pool]
        store_pool.release(cacheops.redis._take_held(store_pool)[1])

        def hit():
            assert All.objects.filter(tag=8).count() == 1
            connection.close()
        for _ in range(3):  # with one connection in all: each thread found it free
            thread = Worker(hit)
            thread.start()
            thread.join(10)
            gc.collect()
            assert not store_pool._in_use_connections


def test_reads_with_no_connection_free_go_over_the_clients_pool():
    pool = redis.ConnectionPool(max_connections=1, **_conf())
    with override_settings(CACHEOPS_REDIS={'connection_pool': pool}):
        All.objects.create(tag=9)
        assert [o.tag for o in All.objects.filter(tag=9)] == [9]
        store_pool = cacheops.redis._store_pools[pool]
        _, taken = cacheops.redis._take_held(store_pool)  # the one connection, taken elsewhere
        try:
            with CaptureQueriesContext(connection) as queries:
                assert [o.tag for o in All.objects.filter(tag=9)] == [9]
            assert not queries.captured_queries
            assert cacheops.redis._thread_held.held is None
        finally:
            store_pool.release(taken)


def test_an_error_reply_gives_the_connection_up():
    client = cacheops.redis.get_client()
    client.sadd('tests:a-set', 'x')
    assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None
    held = cacheops.redis._thread_held.held
    with pytest.raises(redis.ResponseError, match='WRONGTYPE'):
        cacheops.redis.read_command(client, 'GET', 'tests:a-set')
    assert cacheops.redis._thread_held.held is not held
    assert held.connection is None
    client.set('tests:a-string', 'v')
    assert cacheops.redis.read_command(client, 'GET', 'tests:a-string') == b'v'


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='os.fork')
def test_a_forked_child_reads_over_a_connection_of_its_own():
    """The parent's connection is the parent's: a child reading over it would mix up
    their replies."""
    client = cacheops.redis.get_client()
    client.set('tests:parent', 'p')
    client.set('tests:child', 'c')
    assert cacheops.redis.read_command(client, 'GET', 'tests:parent') == b'p'
    parent_connection = cacheops.redis._thread_held.held.connection
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only
        ok = False
        try:
            ok = cacheops.redis._thread_held.held is None \
                and cacheops.redis.read_command(cacheops.redis.get_client(), 'GET', 'tests:child') == b'c' \
                and cacheops.redis._thread_held.held.connection is not parent_connection
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cacheops.redis.read_command(client, 'GET', 'tests:parent') == b'p'
    assert cacheops.redis._thread_held.held.connection is parent_connection


@pytest.mark.parametrize('args', [
    ('GET', 'q:0123'), ('MGET', 'q:1', 'conj:{t}:title=café', b'\x00raw'),
    ('EVALSHA', 'f' * 40, 2, 'k1', 'k2', b'marker', 3600, -1), ('GET', ''),
])
def test_commands_are_sent_as_redis_py_packs_them(args):
    assert cacheops.redis._pack_plain(args) == b''.join(redis.Connection().pack_command(*args))


@pytest.mark.parametrize('args', [('GET', 1.5), ('GET', True), ('GET', None)])
def test_other_arguments_are_left_to_redis_py(args):
    assert cacheops.redis._pack_plain(args) is None


def test_a_command_packed_again_is_packed_the_same():
    """Commands of str arguments are packed once (hits send the same ones again); one
    equal to another command but of other types is packed as itself (1 == 1.0 == True)."""
    client = cacheops.redis.get_client()
    assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None
    held = cacheops.redis._thread_held.held

    def packed(*args):
        return b''.join(cacheops.redis._packed_read(held, args))
    for args in [('MGET', 'q:1', 'conj:{t}:title=café'), ('GET', 1), ('GET', 1.0), ('GET', b'q:1')] * 2:
        assert packed(*args) == b''.join(redis.Connection().pack_command(*args))
    with pytest.raises(redis.DataError):  # as redis-py would, not b'1'
        packed('GET', True)


def test_a_client_encoding_otherwise_reads_what_it_stored():
    """Keys carry condition values (insideout mode reads them on a hit): they must be
    encoded as the client encodes what it stores."""
    with override_settings(CACHEOPS_REDIS=_conf(encoding='latin-1')):
        All.objects.create(tag=11, title='café')
        assert All.objects.filter(tag=11).count() == 1  # insideout mode: the table's epoch
        # a miss, its store sent by redis-py (which makes the stamp, in insideout mode)
        assert [o.tag for o in All.objects.filter(title='café')] == [11]
        with CaptureQueriesContext(connection) as queries:
            assert [o.tag for o in All.objects.filter(title='café')] == [11]
        assert not queries.captured_queries


# A server refusing CLIENT REPLY SKIP after all (an ACL changed, a busy spell) leaves a
# store's replies on the kept connection: a script run over it next runs once, and its
# reply is its own.

@pytest.fixture
def acl_server():
    with private_redis() as port:
        raw = redis.Redis(port=port)
        allow_all_but(raw, 'u')
        with override_settings(CACHEOPS_REDIS={'port': port, 'username': 'u'}):
            yield raw


def _store(raw, key):
    raw.set(key, MARKER, ex=60)
    cacheops.redis.send_script('store', [key, key + ':signal'], [MARKER, b'v', '0'])


def _refuse_skip_from_now(raw):
    for name in ('invalidate', 'invalidate_conjs'):  # loaded, as on a server in use
        raw.script_load(cacheops.redis._script(name)[0])
    raw.acl_setuser('u', enabled=True, commands=['-client|reply'])


def test_a_script_after_a_refused_skip_gets_its_own_reply(acl_server):
    raw = acl_server
    _store(raw, 'probe')  # the server skips replies
    raw.sadd('conj:{t}:b=1', 'q:9')
    _refuse_skip_from_now(raw)
    _store(raw, 'other')  # left on the kept connection: -NOPERM, then the store's :1
    assert cacheops.redis.run_script('invalidate_conjs', ['handover:{t}:1', 'conj:{t}:b=1', 'handover:{t}:1:1'],
                                     [1000]) == [[b'q:9'], [], 1]
    pool = cacheops.redis.get_client().connection_pool
    assert cacheops.redis._skips_replies[pool] is not True  # stores wait for a while


def test_an_invalidation_after_a_refused_skip_deletes_the_cache_keys(acl_server):
    raw = acl_server
    _store(raw, 'probe')
    raw.sadd('conj:{t}:a=1', 'q:1', 'q:2', 'q:3')
    raw.mset({'q:1': 'v1', 'q:2': 'v2', 'q:3': 'v3'})
    _refuse_skip_from_now(raw)
    _store(raw, 'other')
    invalidation.invalidate_conjs(cacheops.redis.get_client(), ['conj:{t}:a=1'])
    assert raw.exists('conj:{t}:a=1') == 0
    assert raw.mget('q:1', 'q:2', 'q:3') == [None, None, None], 'stale entries left'


def test_an_invalidation_past_the_budget_after_a_refused_skip_deletes_the_cache_keys(acl_server, monkeypatch):
    raw = acl_server
    monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', 0)  # as a big invalidation
    _store(raw, 'probe')
    raw.sadd('schemes:{t}', 'a')
    raw.sadd('conj:{t}:a=1', 'q:1', 'q:2')
    raw.mset({'q:1': 'v1', 'q:2': 'v2'})
    _refuse_skip_from_now(raw)
    _store(raw, 'other')
    monkeypatch.setattr(invalidation, 'schemes_key', lambda prefix, table: 'schemes:{t}')
    monkeypatch.setattr(cacheops.keys, 'conj_prefix', lambda prefix, table: 'conj:{t}:')
    invalidation.invalidate_rows('t', [{'a': '1'}])
    assert raw.exists('conj:{t}:a=1') == 0
    assert raw.mget('q:1', 'q:2') == [None, None], 'stale entries left'


def test_a_script_error_after_stores_is_raised_once():
    """An error reply after the PING is the script's own: raised, and not run again."""
    client = cacheops.redis.get_client()
    client.sadd('tests:a-set', 'x')
    _store_by_script('tests:stored', b'v')
    calls = []
    original = client.evalsha
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client, 'evalsha', lambda *args: calls.append(args) or original(*args))
        with pytest.raises(redis.ResponseError, match='WRONGTYPE'):
            cacheops.redis.run_script('prepare', ['tests:a-set', 'tests:signal'], [MARKER, 60])
    assert calls == []
    assert cacheops.redis.read_command(client, 'GET', 'tests:stored') == b'v'


# A script whose reply is read later (prepare.lua, while a miss builds its query) goes
# over the thread's connection too, lent to the reply until it is read.

def _prepare_args(key):
    return ('prepare', [key, key + ':signal'], [MARKER, 60])


def test_a_started_script_goes_over_the_kept_connection_and_gives_it_back(monkeypatch):
    client = cacheops.redis.get_client()
    assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None
    held = cacheops.redis._thread_held.held
    taken = _checkouts(monkeypatch)
    reply = cacheops.redis.start_script(*_prepare_args('tests:started'))
    assert cacheops.redis._thread_held.held is None  # lent to the reply
    assert reply() == [b'mine', MARKER]
    assert cacheops.redis._thread_held.held is held and held.connection is not None
    assert taken == []


def test_a_read_while_a_started_script_is_pending_gets_its_own_reply():
    # read when the test runs, not at import: a cluster run has no CACHEOPS_REDIS
    with override_settings(CACHEOPS_REDIS=_conf(socket_timeout=10)):  # a reply taken by another: no hang
        client = cacheops.redis.get_client()
        client.set('tests:read', 'r')
        assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None
        held = cacheops.redis._thread_held.held
        store_pool = held.store_pool
        reply = cacheops.redis.start_script(*_prepare_args('tests:started'))
        assert cacheops.redis.read_command(client, 'GET', 'tests:read') == b'r'  # over another
        other = cacheops.redis._thread_held.held
        assert other is not held
        assert reply() == [b'mine', MARKER]
        assert cacheops.redis._thread_held.held is other  # one connection kept, the other given back
        assert held.connection is None
        assert len(store_pool._in_use_connections) == 1


def test_a_started_script_after_a_refused_skip_gets_its_own_reply(acl_server):
    raw = acl_server
    _store(raw, 'probe')
    raw.sadd('conj:{t}:b=1', 'q:9')
    _refuse_skip_from_now(raw)
    _store(raw, 'other')  # left on the kept connection: -NOPERM, then the store's :1
    reply = cacheops.redis.start_script('invalidate_conjs', ['handover:{t}:1', 'conj:{t}:b=1', 'handover:{t}:1:1'],
                                          [1000])
    assert reply() == [[b'q:9'], [], 1]


def test_a_started_script_never_read_leaves_no_reply_behind():
    client = cacheops.redis.get_client()
    client.set('tests:read', 'r')
    assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None
    held = cacheops.redis._thread_held.held
    reply = cacheops.redis.start_script(*_prepare_args('tests:started'))
    del reply
    gc.collect()
    assert held.connection is None  # dropped with the reply on it, not given back as it is
    for _ in range(3):
        assert cacheops.redis.read_command(client, 'GET', 'tests:read') == b'r'


def test_an_interrupt_as_a_started_script_is_sent_leaves_no_reply_behind(monkeypatch):
    """A signal's exception (KeyboardInterrupt, a task's time limit) landing as the send
    returns: the reply left on the connection is no later command's."""
    client = cacheops.redis.get_client()
    client.set('tests:read', 'r')
    assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None
    original = cacheops.redis.scripts._send_over_held

    def sent_then_interrupted(*args):
        original(*args)
        raise KeyboardInterrupt
    monkeypatch.setattr(cacheops.redis.scripts, '_send_over_held', sent_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        cacheops.redis.start_script(*_prepare_args('tests:started'))
    monkeypatch.undo()
    gc.collect()
    for _ in range(3):
        assert cacheops.redis.read_command(client, 'GET', 'tests:read') == b'r'


@pytest.mark.parametrize('value', [
    pytest.param(bytearray(b'v'), marks=pytest.mark.skipif(
        redis.VERSION < (8,), reason='redis-py takes a bytearray argument from 8.0 on')),
    memoryview(bytearray(b'v')),
])
def test_a_script_argument_redis_py_takes_goes_over_the_kept_connection(value):
    """A serializer may give a bytearray or a memoryview, which redis-py sends as bytes
    (and which can't be hashed)."""
    client = cacheops.redis.get_client()
    assert cacheops.redis.read_command(client, 'GET', 'tests:nothing') is None  # a connection kept
    client.set('tests:x', MARKER)
    cacheops.redis.run_script('store', ['tests:x', 'tests:x:signal'], [MARKER, value, '0'])
    assert client.get('tests:x') == b'v'
