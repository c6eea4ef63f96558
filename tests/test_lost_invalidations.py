"""A lost invalidation outlives no process, and hides behind no other (issue 18, finding 1).

A writer that can't reach Redis keeps its invalidation to replay, and records it on disk
(cacheops/spool.py): when the writer dies first, or stays cut off for spool.ORPHAN_AGE,
another process of the host does it (cacheops/orphans.py). Each writer here is a forked
process whose Redis is a port nothing listens on (the writer cut off from Redis, the
others not), killed with SIGKILL while it holds what it kept.

CACHEOPS_TEST_NO_SPOOL=1 turns the records off, to show these tests fail without them.
"""
import multiprocessing
import os
import random
import signal
import time

import pytest
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import invalidation, spool
from cacheops.keys import prefix_for, schemes_key
from cacheops.redis import get_client
from tests.cluster import single_redis
from tests.models import Category, Post
from tests.test_stale_entries import CATEGORIES, POSTS, _reader, _stale_entries
from tests.utils import unseen_update, warm
from tools.redis_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)

UNPROTECTED = os.environ.get('CACHEOPS_TEST_NO_SPOOL') == '1'


@pytest.fixture
def spool_dir(tmp_path):
    path = str(tmp_path / 'spool')
    with override_settings(CACHEOPS_SPOOL_DIR=False if UNPROTECTED else path):
        yield path


def _titles(category_id):
    return [p.title for p in Post.objects.cache().filter(category_id=category_id)]


def _cut_off():
    """Settings whose Redis is a port nothing listens on."""
    return override_settings(CACHEOPS_REDIS='redis://127.0.0.1:%d/0' % free_port(), CACHEOPS_SENTINEL=None,
                             CACHEOPS_CLUSTER=None, CACHEOPS_CLIENT_CLASS=None)


def _cut_off_writer(post_id, done):
    """Save a post with Redis unreachable, say so, then wait to be killed."""
    with _cut_off():
        post = Post.objects.get(pk=post_id)
        post.title = 'new'
        post.save()  # committed; its invalidation is kept, and recorded
        done.send(len(invalidation.failed))
        time.sleep(600)


def _start_writer(post):
    """A forked writer that saved post while cut off from Redis, still alive, and what it kept."""
    connections.close_all()  # the child opens its own
    ctx = multiprocessing.get_context('fork')
    ours, theirs = ctx.Pipe()
    writer = ctx.Process(target=_cut_off_writer, args=(post.pk, theirs))
    writer.start()
    assert ours.poll(30), 'the writer never saved'
    return writer, ours.recv()


def _kill(writer):
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(10)
    assert writer.exitcode == -signal.SIGKILL


def _read_until_fresh(category_id, seconds):
    """The titles read from the cache, read again until they are ['new'] or seconds pass."""
    deadline = time.monotonic() + seconds
    while (titles := _titles(category_id)) != ['new'] and time.monotonic() < deadline:
        time.sleep(0.05)
    return titles


def test_a_writer_killed_while_it_holds_a_failed_invalidation_leaves_nothing_stale(spool_dir):
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)
    assert warm(lambda: _titles(category.pk)) == ['old']
    writer, kept = _start_writer(post)
    assert kept > 0  # it could not invalidate
    assert _titles(category.pk) == ['old']  # a live writer may still replay what it kept
    _kill(writer)
    # the next read of any process of the host, within spool.SWEEP_INTERVAL, does it
    assert _read_until_fresh(category.pk, 2 * spool.SWEEP_INTERVAL + 1) == ['new']
    if not UNPROTECTED:
        assert os.listdir(spool_dir) == []  # the record and the dead writer's lock are gone


def test_a_writer_cut_off_for_longer_than_orphan_age_has_its_record_done(spool_dir, monkeypatch):
    monkeypatch.setattr(spool, 'ORPHAN_AGE', 0.5)
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)
    assert warm(lambda: _titles(category.pk)) == ['old']
    writer, _ = _start_writer(post)
    try:
        # alive, still cut off: its record is done once it is ORPHAN_AGE old
        assert _read_until_fresh(category.pk, spool.ORPHAN_AGE + 2 * spool.SWEEP_INTERVAL + 1) == ['new']
    finally:
        _kill(writer)


def test_a_record_covers_only_the_tables_the_write_touched(spool_dir):
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)
    assert warm(lambda: _titles(category.pk)) == ['old']
    assert warm(lambda: [c.title for c in Category.objects.cache().filter(pk=category.pk)]) == ['c']
    writer, _ = _start_writer(post)
    _kill(writer)
    assert _read_until_fresh(category.pk, 2 * spool.SWEEP_INTERVAL + 1) == ['new']
    with CaptureQueriesContext(connection) as queries:
        assert [c.title for c in Category.objects.cache().filter(pk=category.pk)] == ['c']
    assert len(queries) == 0, 'the category table was not written: its entries stay'


@single_redis('makes one table\'s schemes key a string on the run\'s Redis')
def test_an_invalidation_redis_keeps_refusing_does_not_hold_back_the_others(spool_dir):
    """A kept invalidation that Redis refuses for good (WRONGTYPE here) is kept, and the
    ones after it are still sent: the entries they drop are dropped for other processes."""
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)
    assert warm(lambda: _titles(category.pk)) == ['old']
    client = get_client()
    client.delete(schemes_key(prefix_for(['default'], ['tests_category']), 'tests_category'))
    client.set(schemes_key(prefix_for(['default'], ['tests_category']), 'tests_category'), 'not a set')
    category.title = 'd'
    category.save()  # refused: WRONGTYPE
    assert invalidation.failed
    post.title = 'new'
    post.save()
    # this process reads the database while it keeps one; another reads the cache
    assert _titles_read_by_another_process(category.pk) == ['new'], \
        "the post's invalidation waited behind the refused one"


def _send_titles(category_id, pipe):
    invalidation.failed.clear()  # the parent's, copied by the fork
    pipe.send(_titles(category_id))


def _titles_read_by_another_process(category_id):
    connections.close_all()
    ctx = multiprocessing.get_context('fork')
    ours, theirs = ctx.Pipe()
    reader = ctx.Process(target=_send_titles, args=(category_id, theirs))
    reader.start()
    assert ours.poll(30), 'the reader never read'
    titles = ours.recv()
    reader.join(10)
    return titles


# CACHEOPS_SPOOL_DIR: checked as FILE_CACHE_DIR is (a record is JSON, never unpickled, but
# whoever writes one can make every process drop the cache)

@pytest.mark.parametrize('value', [42, ['/tmp']], ids=['number', 'list'])
def test_a_spool_dir_that_is_no_path_is_a_system_check_error(value):
    from tests.test_config_errors import cacheops_messages
    with override_settings(CACHEOPS_SPOOL_DIR=value):
        messages = cacheops_messages()
    assert [m.id for m in messages] == ['cacheops.E015']
    assert 'CACHEOPS_SPOOL_DIR must be a path, None or False' in messages[0].msg


def test_a_spool_dir_others_can_write_is_refused(tmp_path):
    from tests.test_config_errors import cacheops_messages
    path = tmp_path / 'shared'
    path.mkdir()
    path.chmod(0o777)
    with override_settings(CACHEOPS_SPOOL_DIR=str(path)):
        messages = cacheops_messages()
        assert [m.id for m in messages] == ['cacheops.E015']
        assert 'others can write in it' in messages[0].msg


def test_the_spool_is_made_private_and_turned_off_by_false(tmp_path):
    path = tmp_path / 'spool'
    with override_settings(CACHEOPS_SPOOL_DIR=str(path)):
        spool.keep(everything=True)
        assert oct(path.stat().st_mode & 0o777) == oct(0o700)
        assert len([n for n in os.listdir(path) if n.endswith('.json')]) == 1
        spool.clear_own()
        assert [n for n in os.listdir(path) if n.endswith('.json')] == []
    with override_settings(CACHEOPS_SPOOL_DIR=False):
        spool.keep(everything=True)
        assert spool.spool_dir() is None and not spool.has_own()


# What a record covers: the tables a write touched, where the kept call tells them

def test_a_record_of_a_write_names_its_model_and_multi_table_parents_tables():
    from cacheops.events.deletes import _M2oChanges
    from cacheops.events.receivers import _invalidate_dicts_lookup
    from cacheops.orphans import describe_call
    from cacheops.query import cache_on_save
    from tests.models import Vehicle
    prefix = prefix_for(['default'], ['tests_post'])
    assert describe_call(invalidation.invalidate_dicts, (Post, [{}]), {'using': 'default'}) == \
        {'tables': [(prefix, 'tests_post')]}
    assert describe_call(_invalidate_dicts_lookup, (Post, [{}], 'default'), {}) == \
        {'tables': [(prefix, 'tests_post')]}
    category_table = (prefix_for(['default'], ['tests_category']), 'tests_category')
    assert describe_call(invalidation.invalidate_model, (Category,), {}) == {'tables': [category_table]}
    changes = _M2oChanges()
    changes.whole.add(Post)
    assert describe_call(changes.invalidate, ('default',), {}) == {'tables': [(prefix, 'tests_post')]}
    assert describe_call(lambda: None, (), {}) == {'everything': True}  # it can't tell
    assert describe_call(cache_on_save, (Post(), 'default'), {}) is None  # a store leaves nothing stale
    parents = [table for _, table in describe_call(invalidation.invalidate_model, (Vehicle,), {})['tables']]
    assert parents == [Vehicle._meta.db_table, *(p._meta.db_table for p in Vehicle._meta.get_parent_list())]


def _dead_owner_recording_everything():
    ctx = multiprocessing.get_context('fork')
    child = ctx.Process(target=lambda: (spool.keep(everything=True), os._exit(0)))
    child.start()
    child.join(10)
    assert child.exitcode == 0


def test_a_record_of_everything_drops_everything_cached(spool_dir):
    category = Category.objects.create(title='c')
    assert warm(lambda: [c.title for c in Category.objects.cache().filter(pk=category.pk)]) == ['c']
    unseen_update(Category.objects.filter(pk=category.pk), title='d')
    _dead_owner_recording_everything()
    deadline = time.monotonic() + 2 * spool.SWEEP_INTERVAL + 1
    while (titles := [c.title for c in Category.objects.cache().filter(pk=category.pk)]) == ['c'] \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert titles == ['d']


# Under load: readers and writers in several processes, the writers cut off from Redis
# and killed in the middle of their saves

def _cut_off_writer_saving(category_ids, post_ids):
    with _cut_off():
        rnd = random.Random()
        while True:  # until killed; a save raising ends it early, which the test sees
            post = Post.objects.nocache().get(pk=rnd.choice(post_ids))
            post.category_id = rnd.choice(category_ids)
            post.title = 't%d' % rnd.randrange(10 ** 6)
            post.save()
            time.sleep(rnd.random() * 0.005)


def test_killed_writers_under_load_leave_no_stale_entry(spool_dir):
    categories = [Category.objects.create(title='c%d' % i) for i in range(CATEGORIES)]
    category_ids = [c.pk for c in categories]
    post_ids = [Post.objects.create(title='p%d' % i, category=categories[i % CATEGORIES]).pk
                for i in range(POSTS)]
    stale = []
    for _ in range(3):
        connections.close_all()
        ctx = multiprocessing.get_context('fork')
        deadline = time.time() + 1.5
        readers = [ctx.Process(target=_reader, args=(category_ids, post_ids, deadline)) for _ in range(2)]
        writers = [ctx.Process(target=_cut_off_writer_saving, args=(category_ids, post_ids))
                   for _ in range(2)]
        for process in readers + writers:
            process.start()
        time.sleep(0.75)  # the readers cache what the writers' saves leave stale meanwhile
        assert all(writer.exitcode is None for writer in writers), 'a save raised'
        for writer in writers:
            _kill(writer)
        for reader in readers:
            reader.join(60)
            assert reader.exitcode == 0, 'a reader failed'
        time.sleep(spool.SWEEP_INTERVAL)  # the readers' last sweep may be a second old
        stale += _stale_entries(category_ids, post_ids)
    assert stale == [], '%d stale entries, e.g. %r' % (len(stale), stale[:3])
