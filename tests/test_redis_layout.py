"""The Redis layout on a single Redis in the default (conj-set) mode, which
tools outside cacheops read: `<prefix>conj:<db_table>:<field>=<value>&...`
sets holding cache keys, and `<prefix>schemes:<db_table>`. In insideout mode
the layout is different and only the cache key TTL is checked."""
import os

import pytest

import cacheops.redis
from cacheops.conf import settings as cacheops_settings
from .models import All, Category, Post

pytestmark = pytest.mark.django_db

PREFIX = 'p:' if os.environ.get('CACHEOPS_TEST_PREFIX') == '1' else ''
POST = Post._meta.db_table

conj_mode_only = pytest.mark.skipif(
    bool(cacheops_settings.CACHEOPS_INSIDEOUT), reason='conj-set layout only (insideout run)')


def r():
    return cacheops.redis.redis_client


def as_str(value):
    return value.decode() if isinstance(value, bytes) else value


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


@conj_mode_only
def test_conj_key_for_exact_condition(cat):
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    conj = '%sconj:%s:category_id=%s' % (PREFIX, POST, cat.pk)
    assert r().exists(conj)
    assert qs._cache_key() in {as_str(m) for m in r().smembers(conj)}
    assert r().ttl(conj) == -1 or r().ttl(conj) >= r().ttl(qs._cache_key())
    schemes = {as_str(m) for m in r().smembers('%sschemes:%s' % (PREFIX, POST))}
    assert 'category_id' in schemes


@conj_mode_only
def test_conj_key_without_conditions(cat):
    qs = Post.objects.cache().all()
    list(qs)
    conj = '%sconj:%s:' % (PREFIX, POST)
    assert qs._cache_key() in {as_str(m) for m in r().smembers(conj)}


@conj_mode_only
def test_conj_key_with_several_fields(cat):
    table = All._meta.db_table
    qs = All.objects.filter(category=cat, tag=7)
    list(qs)
    candidates = ['%sconj:%s:category_id=%s&tag=7' % (PREFIX, table, cat.pk),
                  '%sconj:%s:tag=7&category_id=%s' % (PREFIX, table, cat.pk)]
    existing = [c for c in candidates if r().exists(c)]
    assert len(existing) == 1
    assert qs._cache_key() in {as_str(m) for m in r().smembers(existing[0])}


@conj_mode_only
def test_invalidation_removes_cache_key_and_conj(cat):
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    conj = '%sconj:%s:category_id=%s' % (PREFIX, POST, cat.pk)
    assert r().exists(qs._cache_key()) and r().exists(conj)
    Post.objects.create(title='p', category=cat)
    assert not r().exists(qs._cache_key())
    assert not r().exists(conj)
