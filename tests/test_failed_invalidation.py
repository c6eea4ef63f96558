"""An invalidation Redis refuses (out of memory, busy) never breaks the write, and until
it has been replayed this process reads the database, not a cache that may still hold
what the invalidation should have dropped."""
from unittest import mock

import pytest
import redis
from django.db import connection, transaction

from cacheops import invalidation, redis as cacheops_redis
from cacheops.signals import cache_invalidated
from cacheops.conf import insideout, prefix_func
from cacheops.keys import epoch_key, prefix_for
from tests.cluster import single_redis
from tests.models import CacheOnSaveProfile, Category, Post
from tests.utils import AbstractConnection, Worker, hand_packed, losing_replies, queries, warm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_pending_failures():
    yield
    invalidation.failed.clear()


def refused(name):
    """Redis answers EVALSHA of one script with an error, as with maxmemory + noeviction."""
    run_script = cacheops_redis.run_script

    def failing(script, *args, **kwargs):
        if script == name:
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return run_script(script, *args, **kwargs)
    return mock.patch.object(invalidation, 'run_script', failing)


def _cached_post():
    """A post, and a function reading its category's titles, cached with its title 'old'."""
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=cat)

    def titles():
        return [p.title for p in Post.objects.cache().filter(category=cat)]
    assert warm(titles) == ['old']
    return post, titles


def test_a_refused_invalidation_does_not_break_the_save():
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=cat)
    with refused('invalidate'):
        post.title = 'new'
        post.save()
    assert Post.objects.nocache().get().title == 'new'
    assert invalidation.failed


def test_while_it_is_pending_reads_go_to_the_database_then_caching_resumes():
    post, titles = _cached_post()
    with refused('invalidate'):
        post.title = 'new'
        post.save()
        # the stale entry is still in Redis, but is not read: the database is
        assert queries(titles) == (['new'], 1)
        assert queries(titles) == (['new'], 1)
    # Redis takes scripts again: the next read replays the invalidation, then caches
    assert queries(titles) == (['new'], 1)
    assert not invalidation.failed
    assert queries(titles) == (['new'], 0)


@pytest.mark.parametrize('budget', [0, 5000])
def test_cache_keys_whose_conj_sets_are_gone_are_kept_for_replay(monkeypatch, budget):
    """Past the server's budget (and always on a cluster) the invalidation script hands the
    cache keys back, their conj sets deleted: if deleting them fails, only the keys
    themselves remember what is stale."""
    monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', budget)
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))

    def titles():
        return [p.title for p in Post.objects.cache().filter(title='old')]
    assert warm(titles) == ['old']
    delete_keys = invalidation._delete_keys
    calls = []

    def failing_once(client, keys):
        calls.append(list(keys))
        if len(calls) == 1:
            raise redis.ConnectionError('connection reset while deleting')
        return delete_keys(client, keys)
    monkeypatch.setattr(invalidation, '_delete_keys', failing_once)

    post.title = 'new'
    post.save()  # doesn't fail; what failed is replayed before the cache is read again
    assert titles() == []
    assert not invalidation.failed
    if budget == 0 and not insideout():
        assert len(calls) == 2  # the failed delete, then its replay


# A reply lost after the script ran: the script is run again (redis-py's retries, or a
# replay), finds its conj sets gone, and takes the cache keys they referenced from the
# handover set its first run left.

def _cache_keys_given_back(reply):
    """An invalidation's reply handing cache keys back: invalidate.lua's {1, schemes,
    keys, ...} or invalidate_conjs.lua's {keys, ...}."""
    if not isinstance(reply, list) or not reply:
        return False
    keys = reply[2] if reply[0] == 1 else reply[0]
    return isinstance(keys, list) and any(isinstance(key, bytes) and b'q:' in key for key in keys)


@pytest.mark.skipif(insideout(), reason='conj-set mode: cache keys are handed back')
# invalidate_model() raises a lost reply unless it is tried again: by the hand-packed
# layer's fallback to redis-py, or by redis-py's retries (none for a URL, redis-py 8)
@pytest.mark.parametrize('invalidate', ['save', pytest.param('invalidate_model', marks=hand_packed)])
def test_cache_keys_of_an_invalidation_whose_reply_was_lost_are_deleted(monkeypatch, invalidate):
    monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', 0)  # all handed back
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))

    def titles():
        return [p.title for p in Post.objects.cache().filter(title='old')]
    assert warm(titles) == ['old']
    key = Post.objects.cache().filter(title='old')._cache_key()
    for name in ('invalidate', 'invalidate_conjs'):  # loaded: its one retry is for the lost reply,
        cacheops_redis.get_client().script_load(cacheops_redis._script(name)[0])  # not spent on NOSCRIPT
    lost = losing_replies(monkeypatch, lambda _, reply: len(lost) == 0 and _cache_keys_given_back(reply))
    if invalidate == 'save':
        post.title = 'new'
        post.save()
    else:
        invalidation.invalidate_model(Post)
    monkeypatch.undo()
    assert lost
    assert not invalidation.failed
    assert cacheops_redis.get_client().get(key) is None
    assert not list(cacheops_redis.get_client().scan_iter(match='*handover*'))
    assert titles() == ([] if invalidate == 'save' else ['old'])


@pytest.mark.skipif(insideout(), reason='conj-set mode: cache keys are handed back')
def test_a_replay_gets_the_cache_keys_a_run_whose_reply_was_lost_left(monkeypatch):
    """The script ran, its reply was lost, and Redis stayed unreachable through the
    retries: the save goes on, and the replay, later, deletes those keys, with an epoch
    of its own (an older one brought back would validate a miss that read it)."""
    monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', 0)
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))

    def titles():
        return [p.title for p in Post.objects.cache().filter(title='old')]
    assert warm(titles) == ['old']
    key = Post.objects.cache().filter(title='old')._cache_key()
    client = cacheops_redis.get_client()
    epoch_key = next(client.scan_iter(match='*epoch*post'), None)
    down = []
    lost = losing_replies(monkeypatch, lambda _, reply: bool(down) or _cache_keys_given_back(reply) and
                           not down.append(True))
    post.title = 'new'
    post.save()
    assert lost
    assert invalidation.failed
    monkeypatch.undo()  # Redis is back
    first_epoch = epoch_key and client.get(epoch_key)
    assert client.get(key) is not None  # out of its conj sets, still there
    assert invalidation.retry_failed()  # as the next read does first
    assert client.get(key) is None
    if epoch_key:
        assert client.get(epoch_key) != first_epoch
    assert titles() == []


@pytest.mark.skipif(insideout(), reason='conj-set mode: cache keys are handed back')
def test_a_replay_failing_again_keeps_what_it_leaves(monkeypatch):
    """Replays run holding the lock on the failed list: one failing again adds to it."""
    monkeypatch.setattr(invalidation, 'SERVER_DELETE_BUDGET', 0)
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))
    assert warm(lambda: [p.title for p in Post.objects.cache().filter(title='old')]) == ['old']
    with refused('invalidate'):
        post.title = 'new'
        post.save()
    assert invalidation.failed

    def failing(client, keys):
        raise redis.ConnectionError('connection reset while deleting')
    monkeypatch.setattr(invalidation, '_delete_keys', failing)
    done = []

    def replay():  # named in the failure if it deadlocks
        done.append(invalidation.retry_failed())
    thread = Worker(replay)
    thread.start()
    thread.join(10)
    assert done == [False]
    assert invalidation.failed[0][0] is invalidation._delete_keys_again  # replayed first


def _flaky_invalidate(monkeypatch, ok_calls):
    real, calls = cacheops_redis.run_script, []

    def run_script(name, *args, **kwargs):
        if name == 'invalidate':
            calls.append(name)
            if len(calls) not in ok_calls:
                raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(invalidation, 'run_script', run_script)


# A replay failing again keeps what it keeps of itself first, not piled up behind it

def test_failed_does_not_grow_with_every_read_while_redis_refuses(monkeypatch):
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))
    _flaky_invalidate(monkeypatch, ok_calls={2})  # only the first replay gets through
    post.title = 'new'
    post.save()
    kept = len(invalidation.failed)  # the step, the save's invalidation, cache_on_save
    for _ in range(50):
        assert [p.title for p in Post.objects.cache().filter(title='x')] == []
    assert len(invalidation.failed) <= kept, len(invalidation.failed)


# A replay that reads the cache reads the database, not retry_failed() again

def test_a_failed_cache_on_save_is_replayed_once(monkeypatch):
    from cacheops import getset
    name = '_insideout' if insideout() else '_conj_sets'
    monkeypatch.setattr(getset, name, lambda *a: (_ for _ in ()).throw(redis.ConnectionError('down')))
    obj = CacheOnSaveProfile.objects.create()  # cache_on_save fails: kept to replay
    assert invalidation.failed
    monkeypatch.undo()
    assert list(Category.objects.cache().filter(title='x')) == []  # RecursionError here
    assert not invalidation.failed
    assert CacheOnSaveProfile.objects.cache().get(pk=obj.pk) == obj


# A script run again with the same arguments (redis-py retrying a lost reply) never
# brings back an epoch a later write replaced

@single_redis('loses a reply on a client of the one server, or rebuilds it from CACHEOPS_REDIS')
@pytest.mark.skipif(not insideout(), reason='epochs are made by insideout misses')
def test_a_rerun_never_brings_back_a_replaced_epoch(monkeypatch):
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))
    warm(lambda: [p.title for p in Post.objects.cache().filter(title='old')])
    raw = redis.Redis(connection_pool=redis.ConnectionPool(
        **cacheops_redis.get_client().connection_pool.connection_kwargs))
    epoch = next(k for k in raw.scan_iter(match='*epoch:*') if k.endswith(b'post'))
    original, seen = AbstractConnection.read_response, {}

    def read(self, *args, **kwargs):
        reply = original(self, *args, **kwargs)
        # invalidate.lua's reply: done, the schemes in use, no keys left, counts, no drain sets
        invalidated = isinstance(reply, list) and len(reply) == 6 and reply[0] == 1 and reply[2] == []
        if invalidated and not seen and not getattr(read, 'inside', False):
            read.inside = True
            seen['first'] = raw.get(epoch)  # the script ran: its epoch
            raw.set(epoch, b'another-write')  # another process's write, invalidated
            read.inside = False
            self.disconnect()
            raise redis.ConnectionError('injected: the reply was lost')
        return reply
    monkeypatch.setattr(AbstractConnection, 'read_response', read)
    post.title = 'new'
    post.save()
    monkeypatch.undo()
    assert seen
    assert raw.get(epoch) != seen['first'], 'the first run\'s epoch is back'


# invalidate_all()'s handover sets are under the prefix of the keys they come from

@pytest.mark.skipif(prefix_func() is None, reason='with CACHEOPS_PREFIX (CACHEOPS_TEST_PREFIX=1)')
def test_invalidate_all_keeps_its_handover_sets_under_the_prefix(monkeypatch):
    warm(lambda: [p.title for p in Post.objects.cache().filter(title='old')])
    real, keys = cacheops_redis.run_script, []

    def run_script(name, k=(), *args, **kwargs):
        if name == 'invalidate_conjs':
            keys.append(k[0])
        return real(name, k, *args, **kwargs)
    monkeypatch.setattr(invalidation, 'run_script', run_script)
    invalidation.invalidate_all()
    assert keys
    assert all(key.startswith('p:') for key in keys), keys


# A replay started by a read inside a transaction runs at once: the transaction's
# rollback can't lose it

def test_a_replay_from_a_read_in_a_rolled_back_transaction_is_not_lost(monkeypatch):
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=cat)
    cats = lambda: [c.title for c in Category.objects.cache().filter(pk=cat.pk)]  # noqa: E731
    assert warm(cats) == ['c']
    _flaky_invalidate(monkeypatch, ok_calls=set())
    post.title = 'new'
    post.save()  # [its step, the save]
    cat.title = 'c2'
    cat.save()  # not run: failures pending; kept alone
    monkeypatch.undo()  # Redis is back
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        list(Post.objects.cache().filter(title='x'))  # replays
        1 / 0
    assert cats() == ['c2']


def _refusing(monkeypatch):
    """Redis refuses the invalidation script while down[0]."""
    real, down = invalidation.run_script, [True]

    def run_script(name, *args, **kwargs):
        if down[0] and name == 'invalidate':
            raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(invalidation, 'run_script', run_script)
    return down


@pytest.mark.django_db(transaction=True)
def test_a_replay_inside_the_writing_transaction_runs_before_its_commit(monkeypatch):
    """A write's invalidation inside a transaction waits for the commit, whatever is
    pending: replays run at once, and one run before the commit would let a read in
    between cache the old row, for good."""
    cat = Category.objects.create(title='c')
    other = Category.objects.create(title='o')
    post = Post.objects.create(title='old', category=cat)
    titles = lambda: [p.title for p in Post.objects.cache().filter(category=cat)]  # noqa: E731
    assert titles() == ['old']
    down = _refusing(monkeypatch)
    other.title = 'o1'
    other.save()  # committed, its invalidation refused: failed = [it]
    with transaction.atomic():
        post.title = 'new'
        post.save()  # retry_failed() fails: its invalidation is queued for the commit all the same
        down[0] = False  # Redis is back
        other.title = 'o2'
        other.save()  # retry_failed() replays what failed before, not the post's
        assert not invalidation.failed

        def reader():  # another process reads between the replay and the commit
            try:
                assert titles() == ['old']  # the committed row, cached
            finally:
                connection.close()
        thread = Worker(reader)
        thread.start()
        thread.join()
    assert Post.objects.nocache().get().title == 'new'
    assert titles() == ['new'], 'stale for good: nothing invalidated the post at commit'


@single_redis('loses a reply on a client of the one server, or rebuilds it from CACHEOPS_REDIS')
@pytest.mark.skipif(not insideout(), reason='epochs are made by insideout misses')
def test_invalidate_model_rerun_never_brings_back_a_replaced_epoch(monkeypatch, settings):
    """A client configured to retry runs replace_epochs.lua again after its reply was
    lost: the epoch it sets is derived from the one there, not the one it set before."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    ck = cacheops_redis.get_client().connection_pool.connection_kwargs
    kwargs = {'host': ck['host'], 'port': ck['port'], 'db': ck['db'],
              'retry': Retry(NoBackoff(), 2)}  # a client configured to retry
    settings.CACHEOPS_REDIS = kwargs
    assert cacheops_redis.get_client().connection_pool.get_connection().retry._retries == 2
    Post.objects.create(title='old', category=Category.objects.create(title='c'))
    [p.title for p in Post.objects.cache().filter(title='old')]
    raw = redis.Redis(connection_pool=redis.ConnectionPool(
        **cacheops_redis.get_client().connection_pool.connection_kwargs))
    epoch = next(k for k in raw.scan_iter(match='*epoch:*') if k.endswith(b'post'))
    original, seen = AbstractConnection.read_response, {}

    def read(self, *args, **kwargs):
        reply = original(self, *args, **kwargs)
        if armed and not seen and type(reply) is int:  # replace_epochs.lua's
            seen['first'] = raw.get(epoch)  # the SET ran: its epoch
            raw.set(epoch, b'another-write')  # another process's write, invalidated
            self.disconnect()
            raise redis.ConnectionError('injected: the reply was lost')
        return reply
    monkeypatch.setattr(AbstractConnection, 'read_response', read)
    armed = True
    invalidation.invalidate_model(Post)
    armed = False
    monkeypatch.undo()
    assert seen
    assert raw.get(epoch) != seen['first'], "the first run's epoch is back"


def test_an_epoch_key_of_another_type_does_not_wedge_invalidation():
    post = Post.objects.create(title='old', category=Category.objects.create(title='c'))
    client = cacheops_redis.get_client()
    client.sadd(epoch_key(prefix_for(['default'], ['tests_post']), 'tests_post'), 'x')
    post.title = 'new'
    post.save()
    assert not invalidation.failed, invalidation.failed



def test_a_replay_failing_for_another_reason_is_logged_and_dropped(caplog):
    """A cache_invalidated receiver raising as an invalidation is replayed: the read that
    replayed it goes on, and so does every later one, instead of each raising it."""
    post, titles = _cached_post()
    with refused('invalidate'):
        post.title = 'new'
        post.save()

    def failing(sender, **kwargs):
        raise ValueError('a receiver failing')
    cache_invalidated.connect(failing)
    try:
        assert queries(titles) == (['new'], 1)
        assert queries(titles) == (['new'], 0)  # replayed: the stale entry is gone
    finally:
        cache_invalidated.disconnect(failing)
    assert not invalidation.failed
    assert 'a receiver failing' in caplog.text


@pytest.mark.skipif(redis.VERSION < (4, 1), reason='redis-py has cluster errors from 4.1 on')
def test_a_cluster_moving_its_slots_is_a_redis_failure_like_any():
    """redis-py's cluster errors (a slot not covered during a failover) are no RedisError:
    the write goes on, and the invalidation is kept until it can be replayed."""
    post, titles = _cached_post()
    slot_moved = redis.exceptions.SlotNotCoveredError('failover')
    failover = mock.patch.object(invalidation, 'run_script', side_effect=slot_moved)
    with failover:
        post.title = 'new'
        post.save()
        assert invalidation.failed
        assert not invalidation.retry_failed()
        assert queries(titles) == (['new'], 1)  # the database, while it is pending
    assert invalidation.failed
    assert queries(titles) == (['new'], 1)  # replayed
    assert not invalidation.failed
    assert queries(titles) == (['new'], 0)


# Replays don't hold reads: after Redis failed one, the next is tried REPLAY_INTERVAL
# later, by one thread at a time; meanwhile reads go to the database at once

class DownKept:
    """A kept invalidation whose Redis is down: each try fails (counted)."""

    def __init__(self):
        self.tries = 0
        self.healed = False

    def __call__(self):
        self.tries += 1
        if not self.healed:
            raise redis.ConnectionError('injected: Redis down')


def test_after_a_failed_replay_reads_wait_for_no_retry_until_the_interval(monkeypatch):
    from cacheops import failed
    monkeypatch.setattr(failed, 'REPLAY_INTERVAL', 3600)
    post = Post.objects.create(title='a', category=Category.objects.create(title='c'))
    kept = DownKept()
    invalidation.failed.append((kept, (), {}))

    for _ in range(5):
        assert queries(lambda: [p.title for p in Post.objects.cache().filter(pk=post.pk)]) == (['a'], 1)

    assert kept.tries == 1  # the first read tried; the others went on without Redis
    kept.healed = True
    monkeypatch.setattr(failed, '_next_replay', 0.0)  # the interval is over
    assert queries(lambda: [p.title for p in Post.objects.cache().filter(pk=post.pk)]) == (['a'], 1)
    assert kept.tries == 2 and not invalidation.failed
    assert queries(lambda: [p.title for p in Post.objects.cache().filter(pk=post.pk)]) == (['a'], 0)


@pytest.mark.django_db(transaction=True)  # the reader runs in a thread of its own
def test_a_read_never_waits_for_another_threads_replay():
    import threading
    post = Post.objects.create(title='a', category=Category.objects.create(title='c'))
    replaying, release = threading.Event(), threading.Event()

    def slow_kept():  # a replay waiting on a Redis that is slow to answer
        replaying.set()
        release.wait(10)

    invalidation.failed.append((slow_kept, (), {}))
    replayer = Worker(lambda: list(Post.objects.cache().filter(pk=post.pk)))
    replayer.start()
    assert replaying.wait(5)
    try:
        reader = Worker(lambda: [p.title for p in Post.objects.cache().filter(title='a')])
        reader.start()
        reader.join(5)  # fails the test if the read waits for the replay
    finally:
        release.set()
        replayer.join()
