"""The records of kept invalidations (cacheops/spool.py, cacheops/orphans.py): what they
hold, who does them, and how they stay private. tests/test_lost_invalidations.py shows
them at work with writers killed; these are the parts one by one."""
import asyncio
import multiprocessing
import os
import tempfile

import pytest
import redis
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import failed, invalidation, orphans, spool
from cacheops.conf import _derived
from cacheops.redis import get_client, redis_client
from tests.models import Category, Post
from tests.utils import unseen_update, warm

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spool_dir(tmp_path):
    path = str(tmp_path / 'spool')
    with override_settings(CACHEOPS_SPOOL_DIR=path):
        yield path


def _records(path):
    return sorted(name for name in os.listdir(path) if name.endswith('.json') and not name.startswith('.'))


# Refused replays keep what they kept

@override_settings(CACHEOPS_INSIDEOUT=False)  # conj-set mode: cache keys are handed back
def test_a_replay_redis_refuses_midway_keeps_the_steps_that_ran(spool_dir, monkeypatch):
    """A kept invalidate_model() replayed: its script ran (the conj sets are gone, their
    cache keys in a handover set), then Redis refused the UNLINK (READONLY). The step that
    holds the handover set is kept: the call, run again, finds no conj sets."""
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)

    def titles():
        return [p.title for p in Post.objects.cache().filter(category_id=category.pk)]
    assert warm(titles) == ['old']
    unseen_update(Post.objects.filter(pk=post.pk), title='new')
    real_client = invalidation.get_client
    monkeypatch.setattr(invalidation, 'get_client', lambda: (_ for _ in ()).throw(redis.ConnectionError('down')))
    invalidation.run_safely(invalidation.invalidate_model, Post)  # kept
    monkeypatch.setattr(invalidation, 'get_client', real_client)
    client = get_client()
    unlink, calls = client.unlink, []

    def refusing_once(*keys):
        calls.append(keys)
        if len(calls) == 1:
            raise redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica.")
        return unlink(*keys)
    monkeypatch.setattr(client, 'unlink', refusing_once)
    assert failed._replay() == failed.REFUSED
    assert failed._replay() == failed.DONE
    with CaptureQueriesContext(connection) as queries:
        assert titles() == ['new']
    assert len(queries) == 1


# What a record holds

def test_sets_a_step_kept_are_recorded_as_text_and_drained_by_others(spool_dir):
    """A drain set's name comes from Redis as bytes: it is recorded all the same, and the
    process doing the record drains it."""
    redis_client.set('q:cached', 'x')
    redis_client.sadd('handover:{t}:1:2', 'q:cached')
    name = next(redis_client.scan_iter(match='handover:*'))
    assert isinstance(name, bytes)
    with failed.failed_lock:
        failed.keep_step(lambda client, drain: None, (None, name), [name])
    [record] = _records(spool_dir)
    orphans.do_records([spool._read(os.path.join(spool_dir, record))])
    assert not redis_client.exists('q:cached')
    assert not redis_client.exists('handover:{t}:1:2')


def test_a_step_kept_again_by_a_refused_replay_is_kept_once(spool_dir):
    def step(client, keys):
        pass
    replay = invalidation._replay(step)
    for _ in range(3):
        failed.keep_step(invalidation._replay(step), (None, ['k']), [])
    assert [kept for kept, _, _ in failed.failed if kept.step is step] == [failed.failed[0][0]]
    assert replay.step is step


def test_after_the_queue_collapsed_a_record_done_by_another_is_written_again(spool_dir, monkeypatch):
    monkeypatch.setattr(failed, 'MAX_KEPT', 2)
    for _ in range(3):
        failed._keep(invalidation.invalidate_model, (Post,), {})
    assert failed.failed[0][0] is failed._everything and spool.has_everything()
    for name in _records(spool_dir):  # done by another process: the owner cut off for long
        os.unlink(os.path.join(spool_dir, name))
    failed._keep(invalidation.invalidate_model, (Post,), {})
    assert spool.has_everything()
    assert any(spool._read(os.path.join(spool_dir, name)).get('everything') for name in _records(spool_dir))


# Who does a record

def _aged(path, monkeypatch):
    monkeypatch.setattr(spool, 'ORPHAN_AGE', -1.0)


def test_a_live_owners_aged_records_are_done_by_one_sweeper_at_a_time(spool_dir, monkeypatch):
    """Another live process's record past ORPHAN_AGE: whoever holds its .sweep lock does it;
    the others leave it."""
    ours, theirs = multiprocessing.get_context('fork').Pipe()

    def owner():
        spool.keep(tables=[('', 'tests_post')])
        theirs.send(1)
        theirs.recv()  # alive until told
    child = multiprocessing.get_context('fork').Process(target=owner)
    child.start()
    try:
        assert ours.poll(10)
        ours.recv()
        _aged(spool_dir, monkeypatch)
        [record] = _records(spool_dir)
        token = record.split('.', 1)[0]
        done = []
        held = spool._lock_free(os.path.join(spool_dir, token + spool.SWEEP_SUFFIX))
        assert held is not None
        spool.sweep(done.extend)  # another sweeper at it: this one leaves it
        os.close(held)
        assert done == [] and _records(spool_dir) == [record]
        spool.sweep(done.extend)
        assert done and done[0]['tables'] == [['', 'tests_post']]
        assert _records(spool_dir) == []
    finally:
        ours.send(1)
        child.join(10)


def test_a_live_owners_young_records_are_not_read_again_and_again(spool_dir, monkeypatch):
    spool.keep(tables=[('', 'tests_post')])
    [record] = _records(spool_dir)
    os.rename(os.path.join(spool_dir, record), os.path.join(spool_dir, 'alive-1' + record[record.index('.'):]))
    lock = spool._lock_free(os.path.join(spool_dir, 'alive-1.lock'))  # its owner, alive
    reads = []
    monkeypatch.setattr(spool, '_read', lambda filename: reads.append(filename))
    try:
        spool.sweep(lambda records: None)
    finally:
        os.close(lock)
    assert reads == []  # its age is in its name


# A private directory

def test_the_default_spool_stays_private_under_a_umask_of_002(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    umask = os.umask(0o002)
    try:
        with override_settings(CACHEOPS_SPOOL_DIR=None):
            spool.keep(everything=True)
            spool.clear_own()
            _derived.clear()  # the next process
            path = spool.spool_dir()
            assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
            assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == oct(0o700)
    finally:
        os.umask(umask)


def test_an_async_read_never_raises_for_the_spool(tmp_path):
    shared = tmp_path / 'shared'
    shared.mkdir()
    shared.chmod(0o777)
    Category.objects.create(title='c')
    with override_settings(CACHEOPS_SPOOL_DIR=str(shared)):
        spool.next_sweep = 0.0
        assert asyncio.run(Category.objects.cache().acount()) == 1
