"""Dog-pile prevention for @cached_as(lock=True): one caller computes, the others block
in Redis until its result is there (bounded by CACHEOPS_LOCK_WAIT), then read it.

The interleavings are forced, not timed: the first caller's function waits on an
event, and the test releases it only once the second caller is seen blocking in
the client's brpoplpush (hooked to report it).
"""
import multiprocessing
import threading
import time
from unittest import mock

import pytest
from django.db import connection, connections
from django.test import override_settings

from cacheops import cached_as
from .cluster import client_class, own_client, with_client_options
from .models import Category, Post
from .utils import Worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def category():
    category = Category.objects.create(title='c')
    Post.objects.create(title='p', category=category)
    return category


class Heavy:
    """A function body that tells who entered it and holds until released."""

    def __init__(self, *names):
        self.runs = []
        self.entered = {name: threading.Event() for name in names}
        self.release = threading.Event()

    def __call__(self):
        name = threading.current_thread().name
        self.runs.append(name)
        self.entered[name].set()
        assert self.release.wait(30), 'never released'
        return [p.title for p in Post.objects.all()] + [name]


class Waits(list):
    """Names of the threads that blocked waiting for a dog-pile lock, and an event per arrival."""

    def __init__(self):
        super().__init__()
        self.arrived = threading.Event()


@pytest.fixture
def waits():
    waits = Waits()
    original = client_class().brpoplpush

    def brpoplpush(self, *args, **kwargs):
        waits.append(threading.current_thread().name)
        waits.arrived.set()
        return original(self, *args, **kwargs)

    with mock.patch.object(client_class(), 'brpoplpush', brpoplpush):
        yield waits


def in_thread(func, name, results):
    def run():
        try:
            results[name] = func()
        finally:
            connection.close()
    thread = Worker(run, name=name)
    thread.start()
    return thread


def call_while_the_owner_computes(func, heavy, waits):
    """func in thread 'first', then in 'second' once 'first' computes; {thread: result}.

    'first' is released once 'second' is seen waiting for the lock.
    """
    results = {}
    first = in_thread(func, 'first', results)
    assert heavy.entered['first'].wait(10)
    second = in_thread(func, 'second', results)
    assert waits.arrived.wait(10), 'the second caller did not wait'
    heavy.release.set()
    first.join(30)
    second.join(30)
    return results


def test_with_lock_the_function_runs_once(category, waits):
    heavy = Heavy('first', 'second')
    results = call_while_the_owner_computes(cached_as(Post, lock=True)(heavy), heavy, waits)
    assert heavy.runs == ['first']
    assert waits == ['second']
    assert results == {'first': ['p', 'first'], 'second': ['p', 'first']}


def test_several_waiters(category, waits):
    heavy = Heavy('first', 'waiter0', 'waiter1', 'waiter2')
    func = cached_as(Post, lock=True)(heavy)
    results = {}
    threads = [in_thread(func, 'first', results)]
    assert heavy.entered['first'].wait(10)
    for name in ('waiter0', 'waiter1', 'waiter2'):
        waits.arrived.clear()
        threads.append(in_thread(func, name, results))
        assert waits.arrived.wait(10), '%s did not wait' % name
    heavy.release.set()
    for thread in threads:
        thread.join(30)
    assert heavy.runs == ['first']
    assert waits == ['waiter0', 'waiter1', 'waiter2']
    assert set(map(tuple, results.values())) == {('p', 'first')}


def test_without_lock_every_caller_computes(category):
    heavy = Heavy('first', 'second')
    func = cached_as(Post)(heavy)
    results = {}
    first = in_thread(func, 'first', results)
    assert heavy.entered['first'].wait(10)
    second = in_thread(func, 'second', results)
    assert heavy.entered['second'].wait(10), 'the second caller did not compute'
    heavy.release.set()
    first.join(30)
    second.join(30)
    assert sorted(heavy.runs) == ['first', 'second']


@override_settings(CACHEOPS={'tests.post': {'lock': True}, 'tests.*': {}},
                   CACHEOPS_DEFAULTS={'timeout': 60})
def test_lock_none_takes_the_profiles_lock(category, waits):
    heavy = Heavy('first', 'second')
    results = call_while_the_owner_computes(cached_as(Post)(heavy), heavy, waits)
    assert heavy.runs == ['first']
    assert results == {'first': ['p', 'first'], 'second': ['p', 'first']}


@override_settings(CACHEOPS_LOCK_WAIT=1)
def test_the_wait_is_bounded(category, waits):
    """An owner that never finishes: a waiter gives up after CACHEOPS_LOCK_WAIT and computes."""
    heavy = Heavy('stuck', 'waiter')
    func = cached_as(Post, lock=True)(heavy)
    results = {}
    stuck = in_thread(func, 'stuck', results)
    assert heavy.entered['stuck'].wait(10)
    waiter = in_thread(func, 'waiter', results)
    assert waits.arrived.wait(10), 'the waiter did not wait'
    assert heavy.entered['waiter'].wait(20), 'the waiter never gave up waiting'
    heavy.release.set()
    waiter.join(30)
    stuck.join(30)
    assert heavy.runs == ['stuck', 'waiter']
    assert results['waiter'] == ['p', 'waiter']


def test_a_hit_with_lock_costs_what_a_hit_without_lock_costs(category):
    commands = []
    original = client_class().execute_command

    def execute_command(self, *args, **kwargs):
        commands.append(args[0])
        return original(self, *args, **kwargs)

    def body():
        return 1

    with_lock = cached_as(Post, lock=True, extra='lock')(body)
    without_lock = cached_as(Post, extra='no lock')(body)
    with_lock()
    without_lock()
    with mock.patch.object(client_class(), 'execute_command', execute_command):
        with_lock()
        hit_with_lock = list(commands)
        commands.clear()
        without_lock()
    assert hit_with_lock == commands
    assert 'BRPOPLPUSH' not in hit_with_lock


# Processes

def _signals():
    return own_client()


def _heavy_in_process():
    signals = _signals()
    signals.incr('test:runs')
    signals.rpush('test:started', 1)
    assert signals.blpop('test:release', 30), 'never released'
    return [p.title for p in Post.objects.all()]


heavy_in_process = cached_as(Post, lock=True)(_heavy_in_process)


def _call_in_process():
    def brpoplpush(self, *args, **kwargs):
        _signals().rpush('test:waiting', 1)
        return original(self, *args, **kwargs)

    original = client_class().brpoplpush
    client_class().brpoplpush = brpoplpush
    try:
        _signals().rpush('test:results', repr(heavy_in_process()))
    finally:
        connections.close_all()


def test_with_lock_the_function_runs_once_across_processes(category):
    signals = _signals()
    connections.close_all()  # the children open their own connections
    ctx = multiprocessing.get_context('fork')
    owner = ctx.Process(target=_call_in_process)
    owner.start()
    assert signals.blpop('test:started', 30)
    waiter = ctx.Process(target=_call_in_process)
    waiter.start()
    assert signals.blpop('test:waiting', 30), 'the second process did not wait'
    signals.rpush('test:release', 1)
    owner.join(30)
    waiter.join(30)
    assert (owner.exitcode, waiter.exitcode) == (0, 0)
    assert int(signals.get('test:runs')) == 1
    assert signals.lrange('test:results', 0, -1) == [b"['p']", b"['p']"]


@override_settings(CACHEOPS_LOCK_WAIT=1)
def test_an_owner_that_fails_releases_the_lock(category, waits):
    runs = []

    @cached_as(Post, lock=True)
    def flaky():
        runs.append(1)
        if len(runs) == 1:
            raise ValueError('the first run fails')
        return 'ok'

    with pytest.raises(ValueError):
        flaky()
    assert flaky() == 'ok'
    assert waits == []  # the next caller did not wait for the failed one


def test_a_wait_longer_than_the_socket_timeout(category, waits):
    heavy = Heavy('first', 'second')
    func = cached_as(Post, lock=True)(heavy)
    results = {}
    with override_settings(**with_client_options(socket_timeout=1), CACHEOPS_LOCK_WAIT=30):
        first = in_thread(func, 'first', results)
        assert heavy.entered['first'].wait(10)
        second = in_thread(lambda: _or_error(func), 'second', results)
        assert waits.arrived.wait(10), 'the second caller did not wait'
        time.sleep(2)  # the owner is slow: longer than the socket timeout
        heavy.release.set()
        first.join(30)
        second.join(30)
    assert results['second'] == ['p', 'first']
    assert heavy.runs == ['first']


def _or_error(func):
    try:
        return func()
    except Exception as e:
        return e
