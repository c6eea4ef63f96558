"""The read/store protocol split by slot on a Redis Cluster (docs/design.md, "Redis
Cluster"): a cache key's marker, signal and lock in its slot, each table's registration
in the table's, and every registration in place before the database is read, whoever
placed the marker. The same interleavings on one Redis are tests/test_stale_entries.py's."""
from unittest import mock

import pytest
from django.test import override_settings

from cacheops import getset
from cacheops.conf import settings
from cacheops.keys import lock_key, signal_key
from cacheops.redis import run_script
from .cluster import cluster_only
from .models import Category, Post

try:
    from redis.crc import key_slot
except ImportError:  # redis-py 4.0: no cluster support, so no slots to compare
    key_slot = None

pytestmark = pytest.mark.django_db(transaction=True)


class ClusterLikeRedis:
    """A client class as redis-py's RedisCluster looks to cacheops: it has get_nodes."""
    def get_nodes(self):
        return []


@pytest.mark.skipif(key_slot is None, reason='redis-py 4.0 has no redis.crc, nor a cluster')
@pytest.mark.parametrize('key', ['q:0123abcd', 'c:x}y', 'p{site}q:0123abcd'])
def test_a_keys_signal_and_lock_share_its_slot_on_a_cluster(key):
    with override_settings(CACHEOPS_CLIENT_CLASS=ClusterLikeRedis, CACHEOPS_CLUSTER={}):
        for beside in (signal_key(key), lock_key(key)):
            assert key_slot(beside.encode()) == key_slot(key.encode())


def test_a_keys_signal_and_lock_keep_their_names_on_one_redis():
    with override_settings(CACHEOPS_CLUSTER={}, CACHEOPS_CLIENT_CLASS=None):
        assert (signal_key('q:0123abcd'), lock_key('q:0123abcd')) == ('q:0123abcd:signal', 'q:0123abcd:lock')


@cluster_only('one Redis places the marker and registers the key in one script')
@pytest.mark.skipif(settings.CACHEOPS_INSIDEOUT, reason='conj-set mode only: markers')
def test_a_reader_finding_a_marker_not_yet_registered_registers_before_it_reads():
    """Another reader placed its marker and was stopped before registering: a reader
    finding that marker registers the key itself, so a write between its SELECT and its
    store drops the store."""
    category = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=category)
    qs = Post.objects.filter(category=category).cache()
    key = qs._cache_key()
    # the other reader's marker, its registrations not made yet
    marker = getset.new_marker()
    assert run_script('prepare', [key, signal_key(key)], [marker, 60])[0] == b'mine'
    compute_once = getset._Computed.__call__

    def write_after_select(self):
        value = compute_once(self)
        post.title = 'new'
        post.save()  # committed and invalidated before the store
        return value

    with mock.patch.object(getset._Computed, '__call__', write_after_select):
        assert [p.title for p in qs] == ['old']
    assert [p.title for p in Post.objects.filter(category=category).cache()] == ['new']
