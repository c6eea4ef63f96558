"""Bounded server work: an invalidation reads at most SERVER_READ_LIMIT conj set members
inside one script. A bigger set is renamed to a drain set that the client empties
DRAIN_CHUNK members at a time, so a huge set (anonymous users can grow one through
query-string variants of a cached view) never blocks Redis. A drain set left by a
process that died midway is drained by reapconjs. invalidate_all() flushes in the
background. (Conj-set mode: insideout mode has no member sets.)"""
import pytest
import redis
from django.test import override_settings

import cacheops
from cacheops import invalidation
from cacheops.redis import get_client, redis_client, run_script

from .cluster import redis_keys
from .models import Category, Post
from .utils import queries, warm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def conj_sets():
    with override_settings(CACHEOPS_INSIDEOUT=False):
        yield


@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setattr(invalidation, 'SERVER_READ_LIMIT', 5)
    monkeypatch.setattr(invalidation, 'DRAIN_CHUNK', 3)


@pytest.fixture
def category():
    return Category.objects.create(title='c')


def counts(category, n):
    """n cached queries, all registered in the conj set of category_id=<category>."""
    return [lambda i=i: Post.objects.cache().filter(category=category, pk__gte=-i).count()
            for i in range(n)]


def leftovers():
    return redis_keys('*handover:*')


def test_a_set_past_the_read_limit_is_drained_by_the_client_in_chunks(
        category, small_limits, redis_commands):
    cached = counts(category, 12)
    for count in cached:
        warm(count)
    redis_commands.clear()

    Post.objects.create(title='p', category=category)

    assert redis_commands.count('SRANDMEMBER') >= 4  # 12 members, 3 at a time
    for count in cached:
        assert queries(count) == (1, 1)
    assert leftovers() == []


def test_a_set_within_the_read_limit_is_invalidated_in_the_script(category, small_limits, redis_commands):
    cached = counts(category, 4)
    for count in cached:
        warm(count)
    redis_commands.clear()

    Post.objects.create(title='p', category=category)

    assert 'SRANDMEMBER' not in redis_commands
    for count in cached:
        assert queries(count) == (1, 1)


def test_a_whole_model_invalidation_drains_big_sets_too(category, small_limits, redis_commands):
    cached = counts(category, 12)
    for count in cached:
        warm(count)
    redis_commands.clear()

    cacheops.invalidate_model(Post)

    assert redis_commands.count('SRANDMEMBER') >= 4
    for count in cached:
        assert queries(count) == (0, 1)
    assert leftovers() == []


class ProcessDied(BaseException):
    """The process ends here: nothing catches it, as nothing runs after a kill."""


def left_by_a_dead_process(category, monkeypatch):
    """12 cached counts, then a write whose process dies as it starts draining their conj
    set: the counts are stale, their keys left in a drain set. Returns the counts."""
    cached = counts(category, 12)
    for count in cached:
        warm(count)

    def die(client, drain):
        raise ProcessDied

    monkeypatch.setattr(invalidation, 'drain_set', die)
    with pytest.raises(ProcessDied):
        Post.objects.create(title='p', category=category)
    monkeypatch.undo()
    assert queries(cached[0]) == (0, 0)  # stale: its key was left in the drain set
    return cached


def test_what_a_dead_process_left_to_drain_is_drained_by_reapconjs(category, small_limits, monkeypatch):
    cached = left_by_a_dead_process(category, monkeypatch)
    assert leftovers()

    stats = cacheops.reap_conjs()

    assert stats.drained == 1
    for count in cached:
        assert queries(count) == (1, 1)
    assert leftovers() == []


def posts_unprefixed(query):
    """No prefix for the posts table, one for the rest: invalidate_all() then deletes
    what it finds under 'other:' whole, and the posts' keys only through their conj keys."""
    return '' if query.tables == [Post._meta.db_table] else 'other:'


@override_settings(CACHEOPS_PREFIX=posts_unprefixed)
def test_invalidate_all_drains_what_a_dead_process_left_under_an_empty_prefix(
        category, small_limits, monkeypatch):
    cached = left_by_a_dead_process(category, monkeypatch)

    cacheops.invalidate_all()

    for count in cached:
        assert queries(count) == (1, 1)


def test_other_keys_named_like_handover_sets_are_left_alone():
    redis_client.sadd('handover:not-ours', 'tests:kept')
    redis_client.set('tests:kept', 'x')
    cacheops.reap_conjs()
    assert redis_client.get('tests:kept') == b'x'
    assert redis_client.smembers('handover:not-ours') == {b'tests:kept'}


def test_a_rerun_after_a_lost_reply_hands_over_the_drain_sets():
    # the handover set, the conj keys, then each one's drain set
    keys = ['handover:{t}:1', 'conj:{t}:a=1', 'conj:{t}:a=2', 'handover:{t}:1:1', 'handover:{t}:1:2']
    redis_client.sadd('conj:{t}:a=1', 'q:1', 'q:2', 'q:3')
    redis_client.sadd('conj:{t}:a=2', 'q:4')

    first = run_script('invalidate_conjs', keys, [2])
    redis_client.sadd('conj:{t}:a=1', 'q:5')  # registered after the first run
    again = run_script('invalidate_conjs', keys, [2])

    assert first == [[b'q:4'], [b'handover:{t}:1:1'], 2]  # both conj keys gone
    assert again == [[b'q:4'], [b'handover:{t}:1:1'], 0]
    assert redis_client.smembers('handover:{t}:1:1') == {b'q:1', b'q:2', b'q:3'}


def test_invalidate_all_flushes_in_the_background(redis_requests):
    with override_settings(CACHEOPS_PREFIX=None):
        cacheops.invalidate_all()
    flushes = [request for request in redis_requests if b'FLUSHDB' in request.upper()]
    assert flushes and all(b'ASYNC' in request.upper() for request in flushes)


def test_a_drain_that_fails_midway_is_replayed_to_the_end(category, small_limits, monkeypatch):
    cached = counts(category, 12)
    for count in cached:
        warm(count)
    keys = [key for key in redis_keys('*q:*')]
    client_class = type(get_client())
    srem, calls = client_class.srem, []

    def failing_srem(self, *args):
        calls.append(args)
        if len(calls) == 2:  # after the second chunk's keys are deleted
            raise redis.ConnectionError('injected')
        return srem(self, *args)

    monkeypatch.setattr(client_class, 'srem', failing_srem)
    Post.objects.create(title='p', category=category)  # a write never fails for the cache
    monkeypatch.undo()
    # replayed before the write's next cache call: drained past the failed step
    assert len(calls) > 2 and not invalidation.failed
    assert leftovers() == []
    assert not any(redis_client.exists(key) for key in keys)
