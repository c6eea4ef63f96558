"""The test tools themselves: tests.utils.Worker, a thread whose error or hang fails the test."""
import threading

import pytest

from .utils import Worker


class Interrupted(BaseException):
    """Not an Exception: what an `except Exception` in a worker would let through."""


def test_an_assertion_failing_in_a_worker_fails_at_join():
    def check():
        assert 1 + 1 == 3, 'wrong in the worker'
    worker = Worker(check)
    worker.start()
    with pytest.raises(AssertionError, match='wrong in the worker'):
        worker.join(10)


@pytest.mark.parametrize('error', [KeyError('k'), Interrupted('stop')])
def test_a_workers_exception_is_raised_at_join_as_it_was(error):
    def fail():
        raise error
    worker = Worker(fail)
    worker.start()
    with pytest.raises(type(error)) as raised:
        worker.join(10)
    assert raised.value is error


def test_a_hanging_worker_fails_after_the_timeout():
    release = threading.Event()

    def hang():
        release.wait(10)
    worker = Worker(hang, name='hanging')
    worker.start()
    try:
        with pytest.raises(AssertionError, match=r'hang \(thread hanging\) still running after 0.1 s'):
            worker.join(0.1)
    finally:
        release.set()
    worker.join(10)


def test_a_worker_that_succeeds_joins_quietly():
    done = []
    worker = Worker(lambda *args: done.append(args), 1, 2, name='adder')
    assert worker.daemon and worker.name == 'adder'
    worker.start()
    worker.join(10)
    assert done == [(1, 2)]
