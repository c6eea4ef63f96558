"""The Redis layout on a single Redis, which tools outside cacheops read:
`<prefix>conj:<db_table>:<field>=<value>&...` and `<prefix>schemes:<db_table>`.
In conj-set mode a conj key is a set holding cache keys; in insideout mode it is a
random stamp, and a cached value starts with the checksum of its stamps. On a Redis
Cluster the table is a hash tag: `<prefix>conj:{<db_table>}:...`."""
import hashlib
import os

import pytest
from django.test import override_settings

import cacheops.redis
from cacheops.conf import settings as cacheops_settings
from cacheops.keys import conj_prefix, schemes_key
from .cluster import ON_CLUSTER
from .models import All, Category, Post

pytestmark = pytest.mark.django_db

PREFIX = 'p:' if os.environ.get('CACHEOPS_TEST_PREFIX') == '1' else ''
POST = Post._meta.db_table
TABLE = '{%s}' if ON_CLUSTER else '%s'  # a table as its keys hold it

INSIDEOUT = bool(cacheops_settings.CACHEOPS_INSIDEOUT)


def r():
    return cacheops.redis.redis_client


def as_str(value):
    return value.decode() if isinstance(value, bytes) else value


def assert_references(conj, cache_key):
    """The conj key references the cache key: set member, or stamp in its checksum."""
    if INSIDEOUT:
        assert r().type(conj) == b'string'
        value = r().get(cache_key)
        stamps = [r().get(conj)]  # the queries below have one condition key each
        assert value[:40] == hashlib.sha1(b' '.join(stamps)).hexdigest().encode()
    else:
        assert cache_key in {as_str(m) for m in r().smembers(conj)}


@pytest.fixture
def cat():
    return Category.objects.create(title='c')


def test_cache_key_has_prefix_and_lives_for_timeout(cat):
    qs = Post.objects.cache(timeout=300).filter(category=cat)
    list(qs)
    key = qs._cache_key()
    assert key.startswith(PREFIX)
    assert r().exists(key)
    assert 290 < r().ttl(key) <= 300


def test_conj_key_for_exact_condition(cat):
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    conj = '%sconj:%s:category_id=%s' % (PREFIX, TABLE % POST, cat.pk)
    assert r().exists(conj)
    assert_references(conj, qs._cache_key())
    schemes = {as_str(m) for m in r().smembers('%sschemes:%s' % (PREFIX, TABLE % POST))}
    assert 'category_id' in schemes


def test_conj_key_without_conditions(cat):
    qs = Post.objects.cache().all()
    list(qs)
    conj = '%sconj:%s:' % (PREFIX, TABLE % POST)
    assert_references(conj, qs._cache_key())


def test_conj_key_with_several_fields(cat):
    table = All._meta.db_table
    qs = All.objects.filter(category=cat, tag=7)
    list(qs)
    candidates = ['%sconj:%s:category_id=%s&tag=7' % (PREFIX, TABLE % table, cat.pk),
                  '%sconj:%s:tag=7&category_id=%s' % (PREFIX, TABLE % table, cat.pk)]
    existing = [c for c in candidates if r().exists(c)]
    assert existing == candidates[:1]  # columns in a stable, sorted order
    assert_references(existing[0], qs._cache_key())


def test_invalidation_removes_conj_and_cache_key(cat):
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    conj = '%sconj:%s:category_id=%s' % (PREFIX, TABLE % POST, cat.pk)
    assert r().exists(qs._cache_key()) and r().exists(conj)
    Post.objects.create(title='p', category=cat)
    assert not r().exists(conj)
    # insideout leaves the value, which no longer validates, to expire or be evicted
    assert r().exists(qs._cache_key()) == INSIDEOUT


def test_conj_key_outlives_every_key_registered_in_it(cat):
    conj = '%sconj:%s:category_id=%s' % (PREFIX, TABLE % POST, cat.pk)
    short = Post.objects.cache(timeout=100).filter(category=cat)
    list(short)
    assert r().ttl(conj) > r().ttl(short._cache_key())
    longer = Post.objects.cache(timeout=300).filter(category=cat).order_by('title')
    list(longer)
    assert r().ttl(conj) > r().ttl(longer._cache_key())
    # registered when the conj key has about as long to live as its timeout: TTL, in
    # whole seconds, says it has the timeout, but it has a little less
    later = Post.objects.cache(timeout=300).filter(category=cat).order_by('-title')
    r().pexpire(conj, 300 * 1000 - 300)
    list(later)
    assert r().pttl(conj) > r().pttl(later._cache_key())


class ClusterLikeRedis:
    """A client class as redis-py's RedisCluster looks to cacheops: it has get_nodes."""
    def __init__(self, **options):
        raise AssertionError('the key layout builds no client')

    def get_nodes(self):
        return []


def test_a_cluster_client_class_gives_tables_hash_tags():
    """Cluster-ness is a fact of the settings (the client class), known without a client."""
    with override_settings(CACHEOPS_CLIENT_CLASS=ClusterLikeRedis, CACHEOPS_CLUSTER={}):
        assert conj_prefix('', POST) == 'conj:{%s}:' % POST
        assert schemes_key('', POST) == 'schemes:{%s}' % POST
    with override_settings(CACHEOPS_CLUSTER={}):
        assert conj_prefix('', POST) == 'conj:%s:' % POST
