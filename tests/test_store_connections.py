"""Stores skip their replies (CLIENT REPLY SKIP) over connections of their own: a thread
keeps its last one for its next cache read, and gives it back if it ends first. None of
this may leak a connection, make a read wait for one, or cost a connection per thread."""
import subprocess
import threading
import time

import pytest
import redis
from django.db import connection
from django.test import override_settings

import cacheops.redis
from cacheops import cached_as
from tools.redis_server import find_redis_server, free_port, ping
from .models import All
from .test_redis_connection import MARKER, _conf, _store_by_script

pytestmark = pytest.mark.django_db(transaction=True)

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
        threads = [threading.Thread(target=miss_then_idle, args=(tag,)) for tag in (1, 2)]
        for thread in threads:
            thread.start()
        try:
            while len(done) < 2:
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
        busy = threading.Thread(target=lambda: redis.Redis(port=server.port).eval(BUSY_LOOP, 0, 3 * 10 ** 7))
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
            thread = threading.Thread(target=request, args=(i,))
            thread.start()
            thread.join(10)
        made = raw.info('stats')['total_connections_received'] - before - 1  # -1: raw's own
    assert made <= 2, '%d connections made for 20 requests' % made


def test_any_later_command_of_the_thread_runs_after_its_store():
    """Not only the next cache read: redis-py's own commands (here a TTL, as a test of
    the key layout would) wait for the store this thread sent over its own connection."""
    raw = redis.Redis(**_conf())
    _store_by_script('tests:settled', b'v')  # the probe, and a first store
    raw.set('tests:settled', MARKER, ex=60)
    raw.execute_command('CLIENT', 'PAUSE', 10000, 'WRITE')  # holds the store back
    unpause = threading.Timer(0.3, lambda: redis.Redis(**_conf()).execute_command('CLIENT', 'UNPAUSE'))
    unpause.start()
    try:
        _store_by_script('tests:settled', b'w', marked=True)
        assert cacheops.redis.redis_client.get('tests:settled') == b'w'
    finally:
        unpause.join()
