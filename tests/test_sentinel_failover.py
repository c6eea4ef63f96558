"""A Sentinel failover under load, on real servers: a primary, its replica and three
sentinels (tools/redis_server.sentinel_group). Readers and writers run in several
processes while the primary is killed; the sentinels promote the replica. Invariant 2 of
docs/design.md: every save and delete succeeds throughout; invariant 1: once the load
stops, every cached result equals the database. Reads may degrade meanwhile. And an
invalidation the primary acknowledged but its replica never got, the primary dying
then, leaves nothing stale on the promoted replica (docs/design.md, "A new primary").

It takes a few seconds of servers and processes, so it runs where it tells most: on
PostgreSQL (both save paths) and in insideout mode on SQLite; CACHEOPS_TEST_FAILOVER=1
runs it anywhere.
"""
import logging
import multiprocessing
import os
import random
import time
import traceback
import warnings

import django
import pytest
from django.db import connections
from django.test import override_settings

from cacheops import getset
from cacheops.failed import failed, retry_failed
from cacheops.redis import get_client
from tests.cluster import ON_CLUSTER
from tests.models import Category, Post
from tests.test_stale_entries import (CATEGORIES, POSTS, _cached_titles, _db_titles, _slow_select,
                                     _stale_entries)
from tools.redis_server import call, sentinel_group

_DB = os.environ.get('CACHEOPS_TEST_DB', 'sqlite')
_WANTED = os.environ.get('CACHEOPS_TEST_FAILOVER') == '1' or _DB == 'postgresql' or (
    os.environ.get('CACHEOPS_TEST_INSIDEOUT') == '1' and django.VERSION[:2] == (6, 1))

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(ON_CLUSTER, reason='a cluster fails over by itself, without Sentinel'),
    pytest.mark.skipif(not _WANTED, reason='seconds of servers and processes: run on PostgreSQL and on '
                                           "Django 6.1's insideout run (CACHEOPS_TEST_FAILOVER=1: here too)"),
]

READERS = 2
WRITERS = 2
LOAD_BEFORE_KILL = 1.5  # seconds of load on the first primary, and of reads after the failover
DEGRADED = 'cacheops: the cache is unavailable'


def sentinel_settings(group):
    return override_settings(
        CACHEOPS_SENTINEL={'locations': group.sentinels, 'service_name': group.service,
                           'socket_timeout': 1, 'sentinel_kwargs': {'socket_timeout': 0.5}},
        CACHEOPS_DEGRADE_ON_FAILURE=True)


class _Kept(logging.Handler):
    """Counts the invalidations kept to replay (run_safely logs each tried, at debug level)."""

    def __init__(self, counts):
        super().__init__(logging.DEBUG)
        self.counts = counts

    def emit(self, record):
        if 'will retry' in record.getMessage():
            self.counts['kept'] += 1


def _worker(work, stop, results, *args):
    """Run work(stop, counts, *args) in a forked child; put its counts, and what it raised, on results."""
    counts = {'name': work.__name__, 'ops': 0, 'degraded': 0, 'kept': 0, 'errors': []}
    shown = warnings.showwarning

    def count_degraded(message, category, *rest, **kwargs):
        if DEGRADED in str(message):
            counts['degraded'] += 1
        else:
            shown(message, category, *rest, **kwargs)

    warnings.simplefilter('always', RuntimeWarning)
    warnings.showwarning = count_degraded
    logging.getLogger('cacheops').addHandler(_Kept(counts))
    logging.getLogger('cacheops').setLevel(logging.DEBUG)  # a forked child: nobody else's
    try:
        work(stop, counts, *args)
        # what failed during the failover is replayed on the promoted primary before the end
        for _ in range(50):
            if not failed or retry_failed():
                break
            time.sleep(0.1)
        counts['left_to_replay'] = len(failed)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        counts['errors'].append(traceback.format_exc())
    finally:
        connections.close_all()
        results.put(counts)


def _read(stop, counts, category_ids, post_ids):
    getset._Computed.__call__ = _slow_select(getset._Computed.__call__)
    rnd = random.Random()
    while not stop.is_set():
        try:
            if rnd.random() < 0.5:
                list(Post.objects.filter(category_id=rnd.choice(category_ids)).cache())
            else:
                Post.objects.cache().get(pk=rnd.choice(post_ids))
        except Post.DoesNotExist:
            pass  # a writer deleted it, and is making it again
        except Exception:  # noqa: BLE001 - a read raising, not degrading, is reported
            counts['errors'].append(traceback.format_exc())
        counts['ops'] += 1


def _write(stop, counts, category_ids, post_ids):
    """Save and delete (then make again, pk and all) only this writer's posts: no writer races
    another, so anything raised is the cache's doing."""
    rnd = random.Random()
    while not stop.is_set():
        pk = rnd.choice(post_ids)
        try:
            post = Post.objects.nocache().get(pk=pk)
            if rnd.random() < 0.2:
                post.delete()
                Post.objects.create(pk=pk, title='t%d' % rnd.randrange(10 ** 6),
                                    category_id=rnd.choice(category_ids))
            else:
                post.category_id = rnd.choice(category_ids)
                post.title = 't%d' % rnd.randrange(10 ** 6)
                post.save()
        except Exception:  # noqa: BLE001
            counts['errors'].append(traceback.format_exc())
        counts['ops'] += 1
        time.sleep(rnd.random() * 0.005)


def _start(ctx, stops, results, category_ids, post_ids):
    connections.close_all()  # children open their own connections
    procs = [ctx.Process(target=_worker, args=(_read, stops[0], results, category_ids, post_ids))
             for _ in range(READERS)]
    procs += [ctx.Process(target=_worker, args=(_write, stops[1], results, category_ids, post_ids[n::WRITERS]))
              for n in range(WRITERS)]
    for p in procs:
        p.start()
    return procs


def _collect(procs, results):
    reports = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0, 'a worker died'
    return reports


def _rows():
    categories = [Category.objects.create(title='c%d' % i) for i in range(CATEGORIES)]
    category_ids = [c.pk for c in categories]
    post_ids = [Post.objects.create(title='p%d' % i, category=categories[i % CATEGORIES]).pk
                for i in range(POSTS)]
    return category_ids, post_ids


def _served_by():
    """The port of the server cacheops' client talks to, as that server says."""
    return int(get_client().info('server')['tcp_port'])


def run_through_failover(group):
    """Readers and writers, the primary killed under them; the writers stop once the
    replica is promoted (later writes would invalidate again what the outage's writes
    missed), replaying what they kept, the readers go on. (The killed primary's port, the
    promoted one's, every worker's report, the failover's seconds, the rows.)"""
    category_ids, post_ids = _rows()
    ctx = multiprocessing.get_context('fork')
    readers_stop, writers_stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = _start(ctx, (readers_stop, writers_stop), results, category_ids, post_ids)
    try:
        time.sleep(LOAD_BEFORE_KILL)
        killed = group.kill_primary()
        started = time.monotonic()
        promoted = group.wait_for_failover(killed)
        took = time.monotonic() - started
        writers_stop.set()
        time.sleep(LOAD_BEFORE_KILL)
    finally:
        readers_stop.set()
        writers_stop.set()
    return killed[1], promoted[1], _collect(procs, results), took, (category_ids, post_ids)


def test_a_sentinel_failover_under_load_loses_no_write_and_leaves_no_stale_entry():
    with sentinel_group() as group, sentinel_settings(group):
        first = _served_by()
        killed, promoted, reports, took, (category_ids, post_ids) = run_through_failover(group)
        errors = [error for report in reports for error in report['errors']]
        assert errors == [], '%d raised, e.g.\n%s' % (len(errors), errors[0])
        writes = [r for r in reports if r['name'] == '_write']
        assert all(r['ops'] > 0 for r in reports)
        assert [r['left_to_replay'] for r in writes] == [0] * WRITERS
        assert first == killed != promoted == _served_by()
        stale = _stale_entries(category_ids, post_ids)
        assert stale == [], '%d stale entries, e.g. %r' % (len(stale), stale[:3])
        print('failover %.1f s; %d writes, %d invalidations kept to replay; %d reads, %d degraded' % (
            took, sum(r['ops'] for r in writes), sum(r['kept'] for r in writes),
            sum(r['ops'] for r in reports if r['name'] == '_read'), sum(r['degraded'] for r in reports)))


# Replication is asynchronous: the primary acknowledges an invalidation before its replica
# has it. Dying then, it leaves the promoted replica with what the invalidation deleted.

def _lost_on_failover(group, write):
    """write() on the primary while its replica's link is down (the replica stopped, the
    primary dropped it), then the primary killed and the replica promoted."""
    group.in_sync()
    primary = group.primary()[1]
    with group.paused(group.replicas()[0]):
        assert call(primary, 'CLIENT', 'KILL', 'TYPE', 'slave') == 1  # 'replica' from Redis 5 only
        write()
        killed = group.kill_primary()
    group.wait_for_failover(killed)


def test_an_invalidation_the_promoted_replica_never_got_leaves_no_stale_entry():
    with sentinel_group() as group, sentinel_settings(group):
        category = Category.objects.create(title='c')
        post = Post.objects.create(title='old', category=category)
        assert _cached_titles(category) == ['old']

        def save():
            post.title = 'new'
            post.save()
        _lost_on_failover(group, save)
        assert not failed  # the primary acknowledged the invalidation
        # the first read may meet the dead primary's connection and degrade
        assert [_cached_titles(category) for _ in range(3)] == [['new']] * 3
        assert _db_titles(category) == ['new']


def test_a_new_connection_to_the_same_primary_keeps_the_cache_and_a_hit_stays_one_request(
        django_assert_num_queries, round_trips):
    with sentinel_group() as group, sentinel_settings(group):
        category = Category.objects.create(title='c')
        Post.objects.create(title='old', category=category)
        assert _cached_titles(category) == ['old']
        get_client().connection_pool.disconnect()  # as a restarted process would connect
        with django_assert_num_queries(0):
            assert _cached_titles(category) == ['old']
        round_trips.clear()
        with django_assert_num_queries(0):
            assert _cached_titles(category) == ['old']
        assert len(round_trips) == 1
