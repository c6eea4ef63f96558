"""A Redis Cluster moving slots and failing over under load (docs/design.md, "Redis
Cluster"): readers and writers in several processes on PostgreSQL while the slot of a
table's conj keys (and of some cache keys) is migrated a few keys at a time, and then
the primary serving it is killed, so its replica takes over. Writes never raise, reads
fall back to the database (CACHEOPS_DEGRADE_ON_FAILURE) or retry, and after each round
every cached result equals the database.

Each test starts a cluster of its own (3 primaries, a replica each, failing over within
about 2 s). CACHEOPS_TEST_UNPROTECTED=1 runs it with getset.PROTECT_STORES = False, to
show that it can fail.
"""
import logging
import multiprocessing
import os
import random
import time
import warnings
from importlib.util import find_spec

import django
import pytest
from django.db import connections
from django.test import override_settings

from cacheops import getset
from cacheops.failed import failed, retry_failed
from cacheops.keys import schemes_key
from tests import settings as test_settings
from tests.models import Category, Post
from tests.test_stale_entries import CATEGORIES, POSTS, _slow_select, _stale_entries
from tools.cluster_faults import cluster_ports, error_replies, failing_over_within, kill_primary, migrate_slots
from tools.redis_server import cluster_for_run

from .settings import cluster_nodes

# A test of 10 to 15 s, in one run of the matrix per storage mode: CI's budget has no room
# for it in every run, and the PostgreSQL runs are those with readers and writers that
# never wait on each other's locks (SQLite's one writer would serialize them).
MODE_RUNS = {False: (6, 1), True: (5, 2)}  # insideout: the Django version of its run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(test_settings.DB != 'postgresql',
                       reason='PostgreSQL runs only: readers and writers that never wait on a '
                              "database lock, and CI's budget has room for this test in two runs"),
    pytest.mark.skipif(find_spec('redis.cluster') is None, reason='redis-py 4.0 has no cluster client'),
]

ROUND_SECONDS = 0.8
# What happens to the cluster in the middle of each round, in order
EVENTS = ['', 'migrate', '', 'kill', '', '']
REPLAY_SECONDS = 15  # a writer's invalidations kept for replay, retried this long at the end


@pytest.fixture
def cluster():
    with cluster_for_run(primaries=3, replicas=1) as nodes:
        failing_over_within(nodes, 1000)
        settings = {'CACHEOPS_REDIS': {}, 'CACHEOPS_CLUSTER': {'startup_nodes': cluster_nodes(nodes)},
                    'CACHEOPS_DEGRADE_ON_FAILURE': True}
        with override_settings(**settings):
            yield nodes


class _Counted(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if 'will retry' in record.getMessage():  # run_safely, at debug level
            self.count += 1


def _child(role, results, stop, category_ids, post_ids):
    """A reader or a writer until stop is set; puts what it saw in results."""
    kept = _Counted()
    logging.getLogger('cacheops').addHandler(kept)  # an invalidation kept for replay
    logging.getLogger('cacheops').setLevel(logging.DEBUG)  # a forked child: nobody else's
    seen = {'role': role, 'ops': 0, 'raised': 0, 'errors': [], 'degraded': 0, 'kept': 0, 'left': 0}
    rnd = random.Random()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', RuntimeWarning)
        if role == 'reader':
            getset._Computed.__call__ = _slow_select(getset._Computed.__call__)
        while not stop.is_set():
            try:
                (_read if role == 'reader' else _write)(rnd, category_ids, post_ids)
            except Exception as e:  # noqa: BLE001 - counted: the test fails on any
                seen['raised'] += 1
                if len(seen['errors']) < 3:
                    seen['errors'].append(repr(e))
            seen['ops'] += 1
        if role == 'writer':
            # a process lives on and replays what Redis refused: so does this one, before
            # the cache is compared with the database
            deadline = time.monotonic() + REPLAY_SECONDS
            while failed and not retry_failed() and time.monotonic() < deadline:
                time.sleep(0.1)
            seen['left'] = len(failed)
        seen['degraded'] = sum('cacheops' in str(w.message) for w in caught)
    seen['kept'] = kept.count
    results.put(seen)
    connections.close_all()


def _read(rnd, category_ids, post_ids):
    if rnd.random() < 0.5:
        list(Post.objects.filter(category_id=rnd.choice(category_ids)).cache())
    else:
        Post.objects.cache().get(pk=rnd.choice(post_ids))


def _write(rnd, category_ids, post_ids):
    post = Post.objects.nocache().get(pk=rnd.choice(post_ids))
    post.category_id = rnd.choice(category_ids)
    post.title = 't%d' % rnd.randrange(10 ** 6)
    post.save()
    time.sleep(rnd.random() * 0.005)


def _run_round(event, readers=3, writers=2):
    """Readers and writers for ROUND_SECONDS, the event done in the middle; what the children saw."""
    connections.close_all()  # children open their own connections
    ctx = multiprocessing.get_context('fork')
    results, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_child, args=(role, results, stop, *event.ids))
             for role in ['reader'] * readers + ['writer'] * writers]
    start = time.monotonic()
    for p in procs:
        p.start()
    time.sleep(ROUND_SECONDS / 4)
    event()
    time.sleep(max(ROUND_SECONDS / 4, start + ROUND_SECONDS - time.monotonic()))
    stop.set()
    seen = [results.get(timeout=REPLAY_SECONDS + 30) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0, 'a worker died'
    return seen


class Events:
    """The slot migration and the failover, on the cluster the test started."""

    def __init__(self, nodes, category_ids, post_ids):
        self.nodes, self.ids, self.name = nodes, (category_ids, post_ids), ''
        # the table's conj keys and schemes set (one slot: they carry its tag) and the
        # cache keys of two of the hottest reads
        self.keys = [schemes_key('', Post._meta.db_table),
                     *(Post.objects.filter(category_id=c).cache()._cache_key() for c in category_ids[:2])]
        self.done = {}

    def __call__(self):
        if self.name == 'migrate':
            self.done['moved'] = migrate_slots(self.nodes, self.keys, batch=2, pause=0.1)
        elif self.name == 'kill':
            self.done['killed'] = kill_primary(self.nodes, self.keys[0])


def _figures(rounds):
    total = {}
    for seen in rounds:
        for child in seen:
            for name in ('ops', 'raised', 'degraded', 'kept', 'left'):
                key = f"{child['role']}s {name}"
                total[key] = total.get(key, 0) + child[name]
    return total


def _in_its_run(insideout, name):
    version = MODE_RUNS[insideout]
    return pytest.param(insideout, id=name, marks=pytest.mark.skipif(
        django.VERSION[:2] != version,
        reason='this storage mode runs on Django %d.%d only: a 15 s test, in one run of the matrix' % version))


@pytest.mark.parametrize('insideout', [_in_its_run(False, 'conj sets'), _in_its_run(True, 'insideout')])
def test_slots_moving_and_a_primary_failing_over_leave_no_stale_entry(insideout, cluster, monkeypatch):
    if os.environ.get('CACHEOPS_TEST_UNPROTECTED') == '1':
        monkeypatch.setattr(getset, 'PROTECT_STORES', False)
    with override_settings(CACHEOPS_INSIDEOUT=insideout):
        categories = [Category.objects.create(title='c%d' % i) for i in range(CATEGORIES)]
        category_ids = [c.pk for c in categories]
        post_ids = [Post.objects.create(title='p%d' % i, category=categories[i % CATEGORIES]).pk
                    for i in range(POSTS)]
        events = Events(cluster, category_ids, post_ids)
        rounds, stale = [], []
        for name in EVENTS:
            events.name = name
            rounds.append(_run_round(events))
            stale += [(name, *entry) for entry in _stale_entries(category_ids, post_ids)]
    figures = _figures(rounds)
    errors = [e for seen in rounds for child in seen for e in child['errors']]
    killed, promoted, lost = events.done['killed']
    figures.update(moved=events.done['moved'], killed=killed, promoted=promoted, lost_bytes=lost,
                   replies=error_replies(cluster))
    assert set(events.done['moved']) and promoted in cluster_ports(cluster)
    assert figures['writers raised'] == 0, (figures, errors)
    assert figures['readers raised'] == 0, (figures, errors)
    assert figures['writers left'] == 0, figures  # every kept invalidation replayed
    assert stale == [], '%d stale entries, e.g. %r; %r' % (len(stale), stale[:3], figures)
    print(figures)
