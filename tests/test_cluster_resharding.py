"""A slot caught half migrated on a Redis Cluster (docs/design.md, "Redis Cluster"): a
script whose keys the source node holds only some of gets TRYAGAIN until the slot has
moved, and redis-py gives up after a few tries ('TTL exhausted'). Reads then go to the
database, writes go through with their invalidation kept, and once the slot has moved
the invalidation is replayed and nothing stale is left. The load of readers and writers
through a migration and a failover is tests/test_cluster_failover.py's.
"""
import os
import warnings

import pytest
from django.test import override_settings

from cacheops.failed import failed
from cacheops.keys import schemes_key
from tools.cluster_faults import migrating
from .cluster import cluster_only
from .models import Category, Post

pytestmark = [pytest.mark.django_db(transaction=True),
              cluster_only('slots migrate between the nodes of a cluster')]


def _titles(category, cache=True):
    qs = Post.objects.filter(category=category)
    return [p.title for p in (qs.cache() if cache else qs.nocache())]


def _table_slot():
    from redis.crc import key_slot
    return key_slot(schemes_key('', Post._meta.db_table).encode())


def test_a_table_whose_slot_is_half_migrated_is_read_from_the_database_and_written(caplog):
    nodes = os.environ['CACHEOPS_TEST_CLUSTER']
    category, other = Category.objects.create(title='c'), Category.objects.create(title='d')
    post = Post.objects.create(title='old', category=category)
    assert _titles(category) == ['old']  # cached: the table's schemes set and conj keys made
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True), migrating(nodes, _table_slot()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', RuntimeWarning)
            # a miss registers in the table's slot, which answers TRYAGAIN
            assert _titles(other) == []
        assert any('cache is unavailable' in str(w.message) for w in caught)
        post.title = 'new'
        post.save()  # its invalidation, in the same slot, is refused: kept, not raised
        # never run half served: its handover set, in KEYS, is on neither node yet
        assert failed and 'TTL exhausted' in caplog.text
        assert _titles(category) == ['new']  # while it is kept, from the database
    # the slot moved: the next read replays the invalidation first
    assert _titles(category) == _titles(category, cache=False) == ['new']
    assert not failed
    assert _titles(other) == []
