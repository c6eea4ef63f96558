"""Dog-pile prevention for querysets: with lock=True one reader computes, the others wait."""
import threading
import time
from unittest import mock

import pytest
from django.db import connection

from cacheops import getset
from tests.cluster import client_class
from tests.models import Category, Post
from tests.utils import Worker

pytestmark = pytest.mark.django_db(transaction=True)

READERS = 4


def _read_concurrently(qs_factory):
    """Start READERS threads reading the same queryset at once; count the computations."""
    computes = []
    compute_once = getset._Computed.__call__

    def slow_compute(self):
        if not self.done:
            computes.append(threading.current_thread().name)
            time.sleep(0.3)  # a heavy query: the others arrive while it runs
        return compute_once(self)

    results, start = [], threading.Barrier(READERS)

    def reader():
        try:
            start.wait()
            results.append([p.title for p in qs_factory()])
        finally:
            connection.close()

    with mock.patch.object(getset._Computed, '__call__', slow_compute):
        threads = [Worker(reader, name='r%d' % i) for i in range(READERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    return computes, results


@pytest.fixture
def category():
    category = Category.objects.create(title='c')
    Post.objects.create(title='p', category=category)
    return category


def test_with_lock_one_reader_computes_the_others_wait(category):
    computes, results = _read_concurrently(
        lambda: Post.objects.filter(category=category).cache(lock=True))
    assert len(computes) == 1
    assert results == [['p']] * READERS


def test_without_lock_every_reader_computes(category):
    computes, results = _read_concurrently(lambda: Post.objects.filter(category=category).cache())
    assert len(computes) == READERS
    assert results == [['p']] * READERS


def test_waiters_block_in_redis_not_in_a_polling_loop(category):
    waits = []
    original = client_class().brpoplpush

    def brpoplpush(self, *args, **kwargs):
        waits.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    with mock.patch.object(client_class(), 'brpoplpush', brpoplpush):
        computes, results = _read_concurrently(
            lambda: Post.objects.filter(category=category).cache(lock=True))
    assert len(computes) == 1
    assert len(waits) == READERS - 1  # each waiter blocks once


def test_lock_costs_nothing_on_a_hit(category):
    qs = lambda: Post.objects.filter(category=category).cache(lock=True)  # noqa: E731
    list(qs())
    with mock.patch.object(client_class(), 'brpoplpush') as wait, \
            mock.patch.object(client_class(), 'set', side_effect=AssertionError('a hit must not lock')):
        assert [p.title for p in qs()] == ['p']
    assert not wait.called
