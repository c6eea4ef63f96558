"""The time-based cache keeps invariant 1 too: an invalidate() that runs while a value is
being computed is never overwritten by that value."""
import threading

import pytest

from cacheops import CacheMiss, cached
from .utils import Worker


@pytest.fixture
def held():
    """A function whose first call stops after computing, until released."""
    computed, release, version = threading.Event(), threading.Event(), ['old']

    @cached(timeout=60)
    def value():
        result = version[0]
        if not computed.is_set():
            computed.set()
            assert release.wait(10)
        return result
    return value, computed, release, version


def test_invalidate_during_the_computation_wins(held):
    value, computed, release, version = held
    results = []
    thread = Worker(lambda: results.append(value()))
    thread.start()
    assert computed.wait(10)
    version[0] = 'new'
    value.invalidate()  # the data changed while 'old' was being computed
    release.set()
    thread.join(10)
    assert results == ['old']
    with pytest.raises(CacheMiss):
        value.key().get()  # 'old' was not stored
    assert value() == 'new'
    assert value.key().get() == 'new'


def test_without_invalidation_the_computed_value_is_stored(held):
    value, computed, release, version = held
    release.set()
    assert value() == 'old'
    version[0] = 'new'
    assert value() == 'old'
