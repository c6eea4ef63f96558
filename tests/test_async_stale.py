"""Invariant 1 with async readers: a miss of the async API stores with the sync protocol
(in a thread, query/async_reads.py), so a reader that SELECTs before a write and stores
after it leaves no stale entry; and async readers racing writers in several processes
leave none either. getset.PROTECT_STORES=False shows the tests can fail."""
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import SyncToAsync
from django.db import connections

from cacheops import getset
from tests.models import Category, Post
from tests.test_async import in_loop
from tests.test_stale_entries import (STATES, _db_titles, _interleave_reader_and_writer, _slow_select,
                                      _stale_entries, run_readers_and_writers)

pytestmark = pytest.mark.django_db(transaction=True)


async def _async_titles(category_id):
    return [p.title async for p in Post.objects.filter(category_id=category_id).cache()]


async def _async_get(pk):
    return await Post.objects.cache().aget(pk=pk)


def _async_cached_titles(category):
    return in_loop(_async_titles, category.pk)


@pytest.mark.parametrize('state', STATES)
def test_an_async_reader_storing_after_a_write_leaves_no_stale_entry(state):
    category = _interleave_reader_and_writer(state, read_titles=_async_cached_titles)
    assert _async_cached_titles(category) == _db_titles(category) == ['new']


@pytest.mark.parametrize('state', STATES)
def test_without_protection_the_async_reader_leaves_a_stale_entry(monkeypatch, state):
    monkeypatch.setattr(getset, 'PROTECT_STORES', False)
    category = _interleave_reader_and_writer(state, read_titles=_async_cached_titles)
    assert _db_titles(category) == ['new']
    assert _async_cached_titles(category) == ['old']  # stale: what the protection prevents


def _async_reader(category_ids, post_ids, deadline):
    """A process reading through the async API: hits in its event loop, misses in a thread."""
    getset._Computed.__call__ = _slow_select(getset._Computed.__call__)
    # forked from a test process whose asgiref worker thread the child lacks: the executor
    # would wait for it forever
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
    rnd = random.Random()

    async def read():
        while time.time() < deadline:
            if rnd.random() < 0.5:
                await _async_titles(rnd.choice(category_ids))
            else:
                await _async_get(rnd.choice(post_ids))
    in_loop(read)
    connections.close_all()


def test_async_readers_and_writers_in_several_processes_leave_no_stale_entry(monkeypatch):
    # CACHEOPS_TEST_UNPROTECTED=1 shows this test failing without the protection
    if os.environ.get('CACHEOPS_TEST_UNPROTECTED') == '1':
        monkeypatch.setattr(getset, 'PROTECT_STORES', False)
    stale = run_readers_and_writers(reader=_async_reader)
    assert stale == [], '%d stale entries, e.g. %r' % (len(stale), stale[:3])


def test_what_async_readers_cached_reads_as_the_database_in_the_loop():
    """After the load, the async API reads (its hits in the loop) what the database holds."""
    categories = [Category.objects.create(title='c%d' % i) for i in range(2)]
    posts = [Post.objects.create(title='p%d' % i, category=categories[i % 2]) for i in range(4)]
    category_ids, post_ids = [c.pk for c in categories], [p.pk for p in posts]
    in_loop(_async_titles, category_ids[0])
    Post.objects.filter(pk=post_ids[0]).update(title='changed')
    assert _stale_entries(category_ids, post_ids) == []
    assert _async_cached_titles(categories[0]) == _db_titles(categories[0])
