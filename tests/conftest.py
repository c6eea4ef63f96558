import os
from pathlib import Path
from urllib.parse import urlsplit

import hypothesis
import pytest
from django.conf import settings
from hypothesis.database import DirectoryBasedExampleDatabase
from django.test import TestCase

from cacheops import fingerprint
from cacheops.transaction import transaction_states
from tests import declared_keys
from tests.utils import AbstractConnection

# Hypothesis profiles, picked by HYPOTHESIS_PROFILE: 'ci' (the default) is reproducible
# and keeps no example database; 'long' searches many more examples, and keeps those that
# failed in .test-logs/ (ignored by git) to try them first next time.
hypothesis.settings.register_profile('ci', deadline=None, derandomize=True, database=None,
                                     print_blob=False)
# runtests.py's runs other than the differential test's own: a smoke test of its setup
hypothesis.settings.register_profile('smoke', hypothesis.settings.get_profile('ci'), max_examples=10)
hypothesis.settings.register_profile(
    'long', deadline=None, max_examples=1000, print_blob=False,
    database=DirectoryBasedExampleDatabase(Path(__file__).resolve().parent.parent / '.test-logs' / 'hypothesis'))
hypothesis.settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

_hidden_states = []  # the states in force before each hiding, innermost last


def _hide_open_transactions():
    states = transaction_states._states
    _hidden_states.append(states)
    transaction_states._states = type(states)(states.default_factory)


def _restore_open_transactions():
    transaction_states._states = _hidden_states.pop()


@pytest.fixture(autouse=True, scope='session')
def _testcase_transactions_are_invisible():
    """Make the atomic blocks Django's TestCase wraps tests in invisible to cacheops.

    Right after TestCase opens its atomic blocks (per class, then per test), cacheops'
    per-alias transaction states are swapped for empty ones, meaning "no transaction
    open", and they are restored right before the blocks are rolled back, so the
    blocks' exits find the states they entered. A plain per-test fixture can't do
    this: for unittest-style tests the per-test blocks open after every fixture ran.
    pytest-django's django_db marker runs tests through TestCase too.
    """
    enter, rollback = TestCase._enter_atomics.__func__, TestCase._rollback_atomics.__func__

    def _enter_atomics(cls):
        atomics = enter(cls)
        _hide_open_transactions()
        return atomics

    def _rollback_atomics(cls, atomics):
        _restore_open_transactions()
        rollback(cls, atomics)

    TestCase._enter_atomics = classmethod(_enter_atomics)
    TestCase._rollback_atomics = classmethod(_rollback_atomics)
    yield
    TestCase._enter_atomics, TestCase._rollback_atomics = classmethod(enter), classmethod(rollback)


@pytest.fixture(autouse=True, scope='session')
def _fingerprints_verified():
    """Every query fingerprint the suite computes is compiled too: one fingerprint meeting
    two different SQL statements fails the test that made it (see cacheops/fingerprint/)."""
    fingerprint.VERIFY = True
    yield
    fingerprint.VERIFY = False


@pytest.fixture(scope='session')
def _redis():
    try:
        from cacheops.redis import redis_client
    except ImportError:  # cacheops.redis not importable: flush through a client of our own
        import redis
        return redis.Redis.from_url(settings.CACHEOPS_REDIS)
    return redis_client


@pytest.fixture(scope='session')
def _undeclared_keys():
    """Subscriptions to what scripts publish of keys they touch undeclared (tests/declared_keys.py)."""
    if not declared_keys.ACTIVE:
        yield None
        return
    declared_keys.install()
    nodes = os.environ.get('CACHEOPS_TEST_CLUSTER')
    if nodes:
        addresses = nodes.split(',')
    else:
        url = urlsplit(settings.CACHEOPS_REDIS)
        addresses = ['%s:%d' % (url.hostname, url.port or 6379)]
    subscriptions = declared_keys.subscribers(addresses)
    yield subscriptions
    declared_keys.close(subscriptions)


@pytest.fixture(autouse=True)
def _scripts_touch_declared_keys_only(_undeclared_keys):
    """A test fails if a script it ran touched a key not in its KEYS."""
    yield
    if _undeclared_keys is not None:
        undeclared = declared_keys.published(_undeclared_keys)
        if undeclared:
            pytest.fail('scripts touched keys not in their KEYS: %s' % ', '.join(sorted(set(undeclared))))


@pytest.fixture(autouse=True)
def _flush_redis(_redis):
    """Every test starts with the run's Redis db empty."""
    _redis.flushdb()


@pytest.fixture(autouse=True)
def _replays_at_once(monkeypatch):
    """A kept invalidation is replayed at the next cache use, not REPLAY_INTERVAL after
    Redis failed the last try: tests that fail Redis and then heal it read on at once
    (tests/test_failed_invalidation.py tests the interval itself)."""
    from cacheops import failed, spool
    monkeypatch.setattr(failed, 'REPLAY_INTERVAL', 0)
    monkeypatch.setattr(failed, '_next_replay', 0.0)
    monkeypatch.setattr(failed, '_last_replay', failed.DONE)
    yield
    # what a test kept is dropped with it (fixtures clear invalidation.failed): its records
    # too, or another process of a later test would do them
    spool.clear_own()


# What cacheops sends to Redis (tests/test_write_cost.py, tests/test_read_cost.py)

def command_names(packed):
    """The names of the commands in a request as sent (RESP arrays of bulk strings)."""
    data = b''.join(packed) if isinstance(packed, (list, tuple)) else bytes(packed)
    names, at = [], 0
    while at < len(data):
        end = data.index(b'\r\n', at)
        count, at = int(data[at + 1:end]), end + 2
        for i in range(count):
            end = data.index(b'\r\n', at)
            length = int(data[at + 1:end])
            if i == 0:
                names.append(data[end + 2:end + 2 + length].decode().upper())
            at = end + 2 + length + 2
    return names


@pytest.fixture
def redis_commands(monkeypatch):
    """The names of the Redis commands cacheops sends while the test runs."""
    sent = []
    original = AbstractConnection.send_packed_command

    def recording(self, command, *args, **kwargs):
        sent.extend(command_names(command))
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, 'send_packed_command', recording)
    return sent


@pytest.fixture
def redis_requests(monkeypatch):
    """Every request cacheops sends while the test runs, as the bytes sent (a command's
    arguments, where redis_commands has its name only)."""
    sent = []
    original = AbstractConnection.send_packed_command

    def recording(self, command, *args, **kwargs):
        sent.append(b''.join(command) if isinstance(command, (list, tuple)) else bytes(command))
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, 'send_packed_command', recording)
    return sent


def _recorded(monkeypatch, method, record):
    """A list that gets record(args, result) of every call to AbstractConnection.<method>."""
    calls = []
    original = getattr(AbstractConnection, method)

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(record(args, result))
        return result

    monkeypatch.setattr(AbstractConnection, method, recording)
    return calls


@pytest.fixture
def round_trips(monkeypatch):
    """How many times a request (a command or a whole pipeline) is sent to Redis."""
    return _recorded(monkeypatch, 'send_packed_command', lambda args, result: args[0])


@pytest.fixture
def awaited_replies(monkeypatch):
    """How many replies cacheops waits for from Redis while the test runs."""
    return _recorded(monkeypatch, 'read_response', lambda args, result: result)
