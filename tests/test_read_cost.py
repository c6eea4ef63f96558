"""What a read costs Redis: a hit is one request; a miss stores race-free with two more
(conj-set mode: the pending marker, the store) or, in insideout mode, with one more once
its table has an epoch: the stamps and epochs the miss read protect its store. The store
is sent without waiting for its reply. And the keys a cached value depends on live at
least as long as the value."""
import gc
from contextlib import contextmanager
import hashlib
import warnings

import pytest
import redis
from django.db import connection
from django.test import override_settings
from django.db.models.sql.compiler import SQLCompiler

import cacheops.redis
from cacheops import chain, fingerprint, getset, invalidate_all
from cacheops.conf import settings
from cacheops.getset import PENDING
from cacheops.redis import _script, get_client

from tools.redis_server import private_redis
from .cluster import ON_CLUSTER, single_redis
from .models import Category, Locked, Post
from .utils import AbstractConnection, hand_packed, losing_replies, queries, warm

pytestmark = pytest.mark.django_db

# a cluster takes a round trip per table's slot on a miss, and an MGET one per node
# holding its keys: the counts below are one Redis'
counts_one_redis = single_redis('counts the round trips a read makes to one Redis')


@pytest.fixture
def category():
    category = Category.objects.create(title='c')
    Post.objects.create(title='a', category=category)
    return category


def titles(category, timeout=None):
    return [p.title for p in Post.objects.cache(timeout=timeout).filter(category=category)]


def test_a_hit_is_one_request(category, round_trips):
    post = Post.objects.nocache().get(category=category)
    for read in (lambda: titles(category), lambda: Post.objects.cache().filter(category=category).count(),
                 lambda: Post.objects.cache().get(pk=post.pk)):
        warm(read)
        round_trips.clear()
        _, count = queries(read)
        assert count == 0
        # on a cluster in insideout mode an MGET per slot: the value's, its table's
        assert len(round_trips) == (2 if ON_CLUSTER and settings.CACHEOPS_INSIDEOUT else 1)


@counts_one_redis
def test_a_cold_miss_makes_three_requests_or_two_in_insideout_mode(category, round_trips):
    other = Category.objects.create(title='other')
    warm(lambda: titles(other))  # scripts loaded, connection open, the table's epoch made
    round_trips.clear()
    assert titles(category) == ['a']
    # the read that missed, in conj-set mode the marker, the store
    assert len(round_trips) == (2 if settings.CACHEOPS_INSIDEOUT else 3)


@hand_packed
def test_a_miss_waits_for_no_reply_to_its_store(category, round_trips, awaited_replies):
    other = Category.objects.create(title='other')
    warm(lambda: titles(other))
    round_trips.clear()
    awaited_replies.clear()
    assert titles(category) == ['a']
    # the store is sent, but only the read (and in conj-set mode the marker) waited for
    assert len(awaited_replies) == len(round_trips) - 1 == (1 if settings.CACHEOPS_INSIDEOUT else 2)
    # and it was stored all the same
    _, count = queries(lambda: titles(category))
    assert count == 0


@counts_one_redis
@pytest.mark.skipif(not settings.CACHEOPS_INSIDEOUT, reason='insideout mode only: epochs')
def test_the_first_miss_on_a_table_makes_its_stamps_and_epoch_before_the_query(category, round_trips):
    round_trips.clear()
    assert titles(category) == ['a']
    assert len(round_trips) == 3  # the read, the stamps with the epoch, the store
    assert list(get_client().scan_iter(match='*epoch:tests_post'))
    round_trips.clear()
    assert Post.objects.cache().filter(title='a').count() == 1  # another condition
    assert len(round_trips) == 2


@counts_one_redis
def test_a_miss_on_conditions_already_cached_makes_three_requests_or_two_in_insideout_mode(
        category, round_trips):
    warm(lambda: Post.objects.cache().filter(category=category).count())  # the same condition
    round_trips.clear()
    assert titles(category) == ['a']
    assert len(round_trips) == (2 if settings.CACHEOPS_INSIDEOUT else 3)
    round_trips.clear()
    assert titles(category) == ['a']
    assert len(round_trips) == 1


def _condition_keys(category):
    return [key for key in get_client().scan_iter(match='*conj:*') if b'category_id=%d' % category.pk in key]


def test_the_condition_keys_of_a_value_live_at_least_as_long_as_it(category):
    warm(lambda: Post.objects.cache(timeout=60).filter(category=category).count())
    keys = _condition_keys(category)
    assert keys
    client = get_client()
    assert all(60 < client.ttl(key) <= 70 for key in keys)  # past the value, by a margin
    titles(category, timeout=3600)  # a miss on the same condition, with a longer timeout
    assert all(client.ttl(key) > 3600 for key in _condition_keys(category))


@override_settings(CACHEOPS_PREFIX=None)
def test_stamp_keys_are_kept_per_dnfs_object_and_only_for_it():
    """Insideout hits need their stamp keys every time: kept per DNFs object, which the
    DNFs memo hands out again for the same query; another object gets its own."""
    from cacheops.getset import insideout_keys
    first = [('default', {'tests_post': [{'category_id': 1}]})]
    keys = insideout_keys(first)
    assert insideout_keys(first) is keys
    other = [('default', {'tests_post': [{'category_id': 2}]})]
    assert insideout_keys(other) != keys
    assert insideout_keys([('default', {'tests_post': [{'category_id': 1}]})]) == keys


def test_equal_querysets_share_their_dnfs_object(category):
    """What lets the stamp keys be kept per DNFs object."""
    def dnfs():
        return Post.objects.cache().filter(category=category)._cacheable_dnfs()
    assert dnfs()[0][1] is dnfs()[0][1]


@override_settings(CACHEOPS_PREFIX=lambda query: 'p:')
def test_stamp_keys_are_not_kept_with_a_prefix_function():
    """A prefix function may answer differently by request: its keys are made each time."""
    from cacheops.getset import insideout_keys
    dnfs = [('default', {'tests_post': [{'category_id': 1}]})]
    keys = insideout_keys(dnfs)
    assert insideout_keys(dnfs) is not keys and insideout_keys(dnfs) == keys
    assert keys[0][0].startswith('p:') and keys[1][0].startswith('p:')


# Conj-set mode: a miss builds its query while Redis places the pending marker, and
# queries the database only once the marker is placed.

def recorded_titles(category):
    """titles(), by a filter() call that is recorded (chain.py), its Query built on a miss."""
    return [p.title for p in Post.objects.cache().filter(category_id=category.pk)]


conj_sets_only = pytest.mark.skipif(settings.CACHEOPS_INSIDEOUT, reason='conj-set mode only: markers')


def _events(monkeypatch):
    """A list of what happens, in order: ('sent', command), ('reply', ...), 'built' (a
    recorded queryset's Query built), 'sql' (a database query)."""
    events = []
    prepare_sha = _script('prepare')[1].encode()
    original_send, original_read = AbstractConnection.send_packed_command, AbstractConnection.read_response
    original_replay = chain.replay

    def send(self, command, *args, **kwargs):
        packed = b''.join(command) if isinstance(command, list) else command
        events.append(('sent', 'prepare' if prepare_sha in packed else packed.split(b'\r\n')[2]))
        return original_send(self, command, *args, **kwargs)

    def read(self, *args, **kwargs):
        result = original_read(self, *args, **kwargs)
        events.append(('reply', result[0] if isinstance(result, list) and result else result))
        return result

    def replay(*args, **kwargs):
        events.append('built')
        return original_replay(*args, **kwargs)

    monkeypatch.setattr(AbstractConnection, 'send_packed_command', send)
    monkeypatch.setattr(AbstractConnection, 'read_response', read)
    monkeypatch.setattr(chain, 'replay', replay)
    return events


@pytest.fixture
def dnfs_known(category, monkeypatch):
    """The category's posts cached once, so that this process knows the query's conditions
    without building it, and then invalidated. Fingerprints aren't verified: that builds
    each query again."""
    monkeypatch.setattr(fingerprint, 'VERIFY', False)
    warm(lambda: recorded_titles(category))
    Post.objects.create(title='b', category=category)


@hand_packed
@conj_sets_only
def test_a_miss_builds_its_query_while_the_marker_is_placed_and_queries_after(
        category, dnfs_known, monkeypatch):
    events = _events(monkeypatch)
    with connection.execute_wrapper(lambda execute, *args: events.append('sql') or execute(*args)):
        assert sorted(recorded_titles(category)) == ['a', 'b']
    assert events.count('built') == 1
    assert events.index(('sent', 'prepare')) < events.index('built') \
        < events.index(('reply', b'mine')) < events.index('sql')


@conj_sets_only
def test_a_get_miss_queries_only_once_the_marker_is_placed(category, monkeypatch):
    post = Post.objects.nocache().get(category=category)
    events = _events(monkeypatch)
    with connection.execute_wrapper(lambda execute, *args: events.append('sql') or execute(*args)):
        assert Post.objects.cache().get(pk=post.pk) == post
    assert events.index(('sent', 'prepare')) < events.index(('reply', b'mine')) < events.index('sql')


@hand_packed
@conj_sets_only
def test_a_get_miss_compiles_its_sql_once_while_the_marker_is_placed(category, monkeypatch):
    post = Post.objects.nocache().get(category=category)
    events = _events(monkeypatch)
    original = SQLCompiler.as_sql

    def as_sql(self, *args, **kwargs):
        events.append('compiled')
        return original(self, *args, **kwargs)
    monkeypatch.setattr(SQLCompiler, 'as_sql', as_sql)
    with connection.execute_wrapper(lambda execute, *args: events.append('sql') or execute(*args)):
        assert Post.objects.cache().get(pk=post.pk) == post
    assert events.count('compiled') == 1
    assert events.index(('sent', 'prepare')) < events.index('compiled') \
        < events.index(('reply', b'mine')) < events.index('sql')
    monkeypatch.undo()
    assert queries(lambda: Post.objects.cache().get(pk=post.pk)) == (post, 0)


@conj_sets_only
def test_a_get_miss_whose_compiling_fails_early_queries_as_django_would(category, monkeypatch):
    """Compiling while the marker is placed is only a head start: when it fails, the miss
    compiles again as it would have, and fails or not as Django does."""
    post = Post.objects.nocache().get(category=category)
    original, calls = SQLCompiler.as_sql, []

    def failing_first(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError('not now')
        return original(self, *args, **kwargs)
    monkeypatch.setattr(SQLCompiler, 'as_sql', failing_first)
    assert Post.objects.cache().get(pk=post.pk) == post
    assert len(calls) == 2
    monkeypatch.undo()
    assert queries(lambda: Post.objects.cache().get(pk=post.pk)) == (post, 0)


def test_a_get_miss_leaves_no_cyclic_garbage(category):
    """Nothing a miss sets up (a compiler handed to Django, say) outlives it in a cycle
    that only the garbage collector would free: a process that disables it, or freezes
    it, would grow by every miss."""
    post = Post.objects.nocache().get(category=category)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            invalidate_all()
            gc.collect()
            assert Post.objects.cache().get(pk=post.pk) == post
            assert gc.collect() == 0
    finally:
        gc.enable()


def test_the_checksum_of_stamps_is_their_digest_however_often_asked():
    """Insideout hits check it each time; it is memoized by the stamps themselves."""
    for stamps in ([b'a', b'b'], [b'a', b'c'], [b'a', b'b'], [b'b', b'a'], [b'x'], [b'x']):
        assert getset._checksum(stamps) == hashlib.sha1(b' '.join(stamps)).hexdigest().encode()


def _marker_at(key):
    data = get_client().get(key)
    return data is not None and data.startswith(PENDING)


@conj_sets_only
@pytest.mark.parametrize('error', [ValueError('cannot build'), KeyboardInterrupt()])
def test_a_query_failing_to_build_leaves_no_marker(category, dnfs_known, monkeypatch, error):
    def failing(*args, **kwargs):
        raise error
    qs = Post.objects.cache().filter(category_id=category.pk)
    key = qs._cache_key()
    monkeypatch.setattr(chain, 'replay', failing)
    with pytest.raises(type(error)):
        list(qs)
    assert not _marker_at(key)
    monkeypatch.setattr(chain, 'replay', _original_replay)
    assert sorted(warm(lambda: recorded_titles(category))) == ['a', 'b']


_original_replay = chain.replay


@contextmanager
def _own_redis():
    """A Redis of this test's own to use, or the run's cluster, which is the run's own."""
    if ON_CLUSTER:
        yield
        return
    with private_redis() as port, override_settings(CACHEOPS_REDIS={'port': port}):
        yield


def test_a_miss_after_the_scripts_were_flushed_loads_them_again(category):
    """On a server of its own: a flush empties the script cache of the whole server (a
    cluster's, on a cluster run: its primaries each, as after a failover)."""
    with _own_redis():
        assert warm(lambda: recorded_titles(category)) == ['a']  # its conditions known
        Post.objects.create(title='b', category=category)
        get_client().script_flush()
        assert sorted(recorded_titles(category)) == ['a', 'b']
        assert warm(lambda: Post.objects.cache().filter(category=category).count()) == 2
        assert queries(lambda: recorded_titles(category))[1] == 0


@hand_packed
@conj_sets_only
def test_a_marker_whose_reply_was_lost_is_placed_again(category, dnfs_known, monkeypatch):
    """The connection fails after the script was sent: it is run again over another
    (redis-py's retries), and the miss stores all the same."""
    original = AbstractConnection.read_response
    failed = []

    def failing_once(self, *args, **kwargs):
        if not failed:
            failed.append(True)
            self.disconnect()
            raise redis.ConnectionError('lost')
        return original(self, *args, **kwargs)

    def replay(*args, **kwargs):  # the marker's reply is read after the query is built
        monkeypatch.setattr(AbstractConnection, 'read_response', failing_once)
        return _original_replay(*args, **kwargs)
    monkeypatch.setattr(chain, 'replay', replay)
    assert sorted(recorded_titles(category)) == ['a', 'b']
    monkeypatch.undo()
    assert failed
    assert queries(lambda: recorded_titles(category))[1] == 0


def _lose_the_markers_reply(monkeypatch):
    """prepare.lua runs, but its reply is lost with its connection before it is read: the
    replies lost (it is run again)."""
    original_start, sent_over = getset.start_script, []
    lost = losing_replies(monkeypatch, lambda connection, _: not lost and any(
        connection is sender for sender in sent_over))

    def start(*args, **kwargs):
        reply = original_start(*args, **kwargs)
        sent = isinstance(reply, (cacheops.redis._PendingReply, cacheops.redis._HeldReply))
        if args[0] == 'prepare' and sent and not sent_over:
            sent_over.append(reply.connection)
        return reply
    monkeypatch.setattr(getset, 'start_script', start)
    return lost


@hand_packed
@conj_sets_only
def test_a_locked_miss_whose_marker_reply_was_lost_doesnt_wait_for_itself(monkeypatch):
    Locked.objects.create(title='x')
    qs = Locked.objects.cache().filter(title='x')
    assert [o.title for o in qs] == ['x']
    Locked.objects.create(title='x')  # invalidates: the next miss knows its conditions
    lost = _lose_the_markers_reply(monkeypatch)
    waits = []
    monkeypatch.setattr(getset, '_wait_for_owner', lambda *args: waits.append(args))
    assert [o.title for o in Locked.objects.cache().filter(title='x')] == ['x', 'x']
    assert lost and lost[0][0] == b'mine'
    assert waits == []
    monkeypatch.undo()
    assert queries(lambda: [o.title for o in Locked.objects.cache().filter(title='x')]) == (['x', 'x'], 0)


def _redis_gone(monkeypatch):
    def gone(self, *args, **kwargs):
        self.disconnect()
        raise redis.ConnectionError('gone')
    monkeypatch.setattr(AbstractConnection, 'read_response', gone)
    monkeypatch.setattr(AbstractConnection, 'send_packed_command', gone)


@pytest.fixture
def degrading():
    """CACHEOPS_DEGRADE_ON_FAILURE, set before dnfs_known (a setting change forgets them)."""
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True):
        yield


@conj_sets_only
def test_an_interrupt_while_building_is_raised_whatever_redis_does(degrading, category, dnfs_known, monkeypatch):
    def interrupted(*args, **kwargs):  # once: a query built again would be computed
        monkeypatch.setattr(chain, 'replay', _original_replay)
        _redis_gone(monkeypatch)
        raise KeyboardInterrupt
    monkeypatch.setattr(chain, 'replay', interrupted)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the cache is unavailable
        with pytest.raises(KeyboardInterrupt):
            recorded_titles(category)


@conj_sets_only
def test_a_failing_query_fails_once_whatever_redis_does(degrading, category, dnfs_known, monkeypatch):
    """Redis gone while the query fails: the query's error is raised, not Redis', which
    would have made a degrading read query again."""
    executed = []

    def failing(execute, *args):
        executed.append(True)
        _redis_gone(monkeypatch)
        raise ValueError('the query failed')
    with warnings.catch_warnings(), connection.execute_wrapper(failing):
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match='the query failed'):
            recorded_titles(category)
    assert executed == [True]
