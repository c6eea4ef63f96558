"""Helpers the tests share: counting queries, proving a result is cached, counting
renders, losing Redis replies, threads whose errors fail the test."""
import threading

import pytest
import redis
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext
try:
    from redis.connection import AbstractConnection
except ImportError:  # redis-py before 4.5, where Connection is the others' base class
    from redis.connection import Connection as AbstractConnection

from cacheops import no_invalidation
from cacheops.redis.held import PLAIN_REDIS
from .cluster import ON_CLUSTER

# A test of cacheops.redis's hand-packed layer (the connection a thread keeps, stores sent
# without their reply, scripts read later, its fallbacks to redis-py on a lost connection):
# there is no such layer with CACHEOPS_PLAIN_REDIS=1
# (nor on a Redis Cluster, whose client it bypasses)
hand_packed = pytest.mark.skipif(PLAIN_REDIS or ON_CLUSTER,
                                 reason='no hand-packed layer: CACHEOPS_PLAIN_REDIS=1, or a Redis Cluster')


class Worker(threading.Thread):
    """A thread running target(*args) whose error, or hang, fails the test at join()."""

    def __init__(self, target, *args, name=None):
        # daemon: a worker still hung after its test failed must not keep the run from exiting
        super().__init__(target=target, args=args, name=name, daemon=True)
        # Thread.run() forgets its target: kept for the message of a hang
        self.what = getattr(target, '__qualname__', repr(target))
        self.error = None

    def run(self):
        # an error left to the thread would only be printed (or warned of), and the test
        # would go on as if the thread had done its part
        try:
            super().run()
        except BaseException as e:
            self.error = e

    def join(self, timeout=30):
        super().join(timeout)
        if self.is_alive():
            raise AssertionError('%s (thread %s) still running after %s s' % (self.what, self.name, timeout))
        if self.error is not None:
            raise self.error


def queries(func, using=DEFAULT_DB_ALIAS):
    """(func(), how many queries it ran on that database)."""
    with CaptureQueriesContext(connections[using]) as ctx:
        result = func()
    return result, len(ctx)


def warm(func, using=DEFAULT_DB_ALIAS):
    """Call func twice, a miss then a hit that runs no query, proving its result is cached
    before a test changes anything; return the result."""
    result, misses = queries(func, using)
    assert misses >= 1, 'expected a miss'
    again, hits = queries(func, using)
    assert hits == 0, 'expected the result to be cached'
    assert again == result
    return result


class Tick:
    """A template context value counting how many times a block's body was rendered."""

    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1
        return self.count


def losing_replies(monkeypatch, lose):
    """Lose the Redis replies for which lose(connection, reply) is true, after Redis sent
    them: the connection drops as they come. Returns the list of replies lost."""
    original, lost = AbstractConnection.read_response, []

    def read(self, *args, **kwargs):
        reply = original(self, *args, **kwargs)
        if lose(self, reply):
            lost.append(reply)
            self.disconnect()
            raise redis.ConnectionError('injected: the reply was lost')
        return reply
    monkeypatch.setattr(AbstractConnection, 'read_response', read)
    return lost


def unseen_update(qs, **kwargs):
    """qs.update(**kwargs) the cache is not told of, as by a program without cacheops:
    what only the database knows (update() invalidates, CACHEOPS_INVALIDATE_UPDATES)."""
    with no_invalidation:
        return qs.update(**kwargs)
