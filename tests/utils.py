"""Helpers the tests share: counting queries, proving a result is cached, counting renders."""
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext


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
