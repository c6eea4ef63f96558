"""Issue 18, finding 6: an exception that is not a Redis error inside an invalidation (a
CACHEOPS_PREFIX function failing, a cache_invalidated receiver raising) never makes a
save or a commit raise once the database has the write, never skips the rest of the
commit's queue, is logged with its traceback, and leaves nothing stale readable: an
invalidation that did not happen is kept pending, as one Redis refused."""
import logging
import threading

import pytest
from django.db import transaction
from django.test import override_settings

from cacheops import invalidation
from cacheops.signals import cache_invalidated
from tests.models import All, CacheOnSaveProfile, Category, Post
from tests.test_failed_invalidation import _cached_post as cached_post
from tests.utils import queries, warm

pytestmark = pytest.mark.django_db(transaction=True)

BROKEN = set()  # tables whose prefix fails, as one taken from a request fails outside one


def failing_prefix(query):
    broken = BROKEN.intersection(query.tables)
    if broken:
        raise LookupError('no current request for %s' % ', '.join(sorted(broken)))
    return 'p:'


@pytest.fixture(autouse=True)
def no_pending_failures():
    yield
    BROKEN.clear()
    invalidation.failed.clear()


@pytest.fixture
def raising_receiver():
    """The senders it was sent by, as it raises for each."""
    senders = []

    def receiver(sender, **kwargs):
        senders.append(sender)
        raise ValueError('a receiver failing')
    cache_invalidated.connect(receiver)
    yield senders
    cache_invalidated.disconnect(receiver)


def cached_tags():
    obj = All.objects.create(tag=1)

    def tags():
        return [o.tag for o in All.objects.cache().filter(pk=obj.pk)]
    assert warm(tags) == [1]
    return obj, tags


def tracebacks(caplog, text):
    return [r for r in caplog.records if r.name == 'cacheops' and r.exc_info
            and text in str(r.exc_info[1])]


def test_a_raising_cache_invalidated_receiver_never_breaks_a_save(raising_receiver, caplog):
    post, titles = cached_post()
    post.title = 'new'
    post.save()  # raised ValueError before
    assert queries(titles) == (['new'], 1)  # the invalidation itself ran
    assert not invalidation.failed
    assert tracebacks(caplog, 'a receiver failing')


def test_a_raising_receiver_never_breaks_a_commit_nor_skips_its_queue(raising_receiver, caplog):
    post, titles = cached_post()
    obj, tags = cached_tags()
    caplog.clear()
    raising_receiver.clear()
    with transaction.atomic():
        post.title = 'new'
        post.save()
        obj.tag = 2
        obj.save()
    assert set(raising_receiver) == {Post, All}
    assert len(tracebacks(caplog, 'a receiver failing')) == len(raising_receiver)
    assert queries(titles) == (['new'], 1)
    assert queries(tags) == ([2], 1)


@override_settings(CACHEOPS_PREFIX=failing_prefix)
def test_a_failing_prefix_never_breaks_a_save_and_leaves_nothing_stale(caplog):
    post, titles = cached_post()
    BROKEN.add(Post._meta.db_table)
    post.title = 'new'
    post.save()  # raised LookupError before
    assert tracebacks(caplog, 'no current request')
    assert invalidation.failed  # kept, as an invalidation Redis refused
    BROKEN.clear()
    # the next read replays it first: the entry cached before the save is gone
    assert queries(titles) == (['new'], 1)
    assert not invalidation.failed
    assert queries(titles) == (['new'], 0)


@override_settings(CACHEOPS_PREFIX=failing_prefix)
def test_a_failing_prefix_never_breaks_a_commit_nor_skips_its_queue(caplog):
    post, titles = cached_post()
    obj, tags = cached_tags()
    BROKEN.add(Post._meta.db_table)
    with transaction.atomic():
        post.title = 'new'
        post.save()
        obj.tag = 2
        obj.save()
    assert Post.objects.nocache().get().title == 'new'
    assert len(tracebacks(caplog, 'no current request')) == 1
    # the invalidation after the failing one ran at the commit, not kept behind it
    assert [f for f, args, kwargs in invalidation.failed if All in args] == []
    # while the failed one is pending, this process reads the database
    assert queries(tags) == ([2], 1)
    assert queries(tags) == ([2], 1)
    BROKEN.clear()
    assert queries(titles) == (['new'], 1)
    assert not invalidation.failed
    assert queries(titles) == (['new'], 0)
    assert queries(tags) == ([2], 1)  # invalidated at the commit: a miss, then cached
    assert queries(tags) == ([2], 0)


@override_settings(CACHEOPS_PREFIX=failing_prefix)
def test_an_invalidation_failing_again_on_replay_stays_pending(caplog):
    post, titles = cached_post()
    BROKEN.add(Post._meta.db_table)
    post.title = 'new'
    post.save()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger='cacheops'):
        category = Category.objects.create(title='other')  # its invalidation runs, past the broken one
    assert not tracebacks(caplog, 'no current request')  # logged once, when it first failed
    assert [f for f, args, kwargs in invalidation.failed if Category in args] == []
    assert len(invalidation.failed) == 1
    BROKEN.clear()
    assert queries(titles) == (['new'], 1)
    assert not invalidation.failed
    assert category.pk


def test_a_cache_on_save_failing_is_logged_and_not_kept(caplog):
    """Storing a saved instance only stores: failing, it leaves nothing stale to replay."""
    obj = CacheOnSaveProfile(title='a')
    obj.lock = threading.Lock()  # no pickle takes it
    obj.save()  # raised TypeError before
    assert tracebacks(caplog, 'pickle')
    assert not invalidation.failed
