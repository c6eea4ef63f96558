"""An invalidation Redis refuses (out of memory, busy) never breaks the write, and until
it has been replayed this process reads the database, not a cache that may still hold
what the invalidation should have dropped."""
from unittest import mock

import pytest
import redis

from cacheops import invalidation, redis as cacheops_redis
from cacheops.conf import insideout
from tests.models import Category, Post
from tests.utils import queries, warm

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


def test_a_refused_invalidation_does_not_break_the_save():
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=cat)
    with refused('invalidate'):
        post.title = 'new'
        post.save()
    assert Post.objects.nocache().get().title == 'new'
    assert invalidation.failed


def test_while_it_is_pending_reads_go_to_the_database_then_caching_resumes():
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=cat)
    titles = lambda: [p.title for p in Post.objects.cache().filter(category=cat)]  # noqa: E731
    assert warm(titles) == ['old']
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
