"""reap_conjs(): removes references to expired cache keys from big conj sets, a
chunk at a time, and nothing else. Conj-set mode is forced here, so these tests run
in every configuration; insideout mode (which has no sets) is checked separately.

An expired key is simulated by deleting it: that is what expiry does in Redis."""
from unittest import mock

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import cacheops
from cacheops import reaper
from cacheops.keys import conj_key, prefix_for
from cacheops.redis import redis_client
from .cluster import cluster_only, redis_keys
from .models import Category, Post

pytestmark = pytest.mark.django_db

POST = Post._meta.db_table
CATEGORY = Category._meta.db_table


@pytest.fixture(autouse=True)
def conj_sets_mode(settings):
    settings.CACHEOPS_INSIDEOUT = False


@pytest.fixture
def cat():
    category = Category.objects.create(title='c')
    for i in range(3):
        Post.objects.create(title='p%d' % i, category=category)
    return category


def category_conj(cat, db='default'):
    """The conj set of queries on posts with category_id = cat.pk."""
    return conj_key(prefix_for([db], [POST]), POST, {'category_id': cat.pk})


def cache_slices(cat, n):
    """n cached querysets registered in the same conj set; their cache keys."""
    keys = []
    for i in range(1, n + 1):
        qs = Post.objects.cache().filter(category=cat).order_by('pk')[:i]
        list(qs)
        keys.append(qs._cache_key())
    return keys


def members(conj):
    return {m.decode() for m in redis_client.smembers(conj)}


def expire(keys):
    redis_client.delete(*keys)


def queries(func):
    with CaptureQueriesContext(connection) as ctx:
        func()
    return len(ctx)


def test_removes_only_references_to_expired_keys(cat):
    keys = cache_slices(cat, 5)
    conj = category_conj(cat)
    assert members(conj) == set(keys)
    expire(keys[:3])

    stats = cacheops.reap_conjs(min_conj_set_size=1)

    assert members(conj) == set(keys[3:])
    assert (stats.removed, stats.members, stats.sets) == (3, 5, 1)
    # the live entries are still cached, and still invalidated by writes
    assert queries(lambda: list(Post.objects.cache().filter(category=cat).order_by('pk')[:5])) == 0
    Post.objects.create(title='new', category=cat)
    assert not redis_client.exists(*keys[3:])


def test_sets_smaller_than_min_size_are_left_alone(cat):
    other = Category.objects.create(title='other')
    small = cache_slices(cat, 3)
    big = cache_slices(other, 6)
    expire(small + big)

    stats = cacheops.reap_conjs(min_conj_set_size=4)

    assert members(category_conj(cat)) == set(small)
    assert not redis_client.exists(category_conj(other))  # emptied: Redis deletes it
    assert (stats.sets, stats.removed, stats.emptied) == (1, 6, 1)
    assert stats.conj_keys == 2


def test_default_min_size_is_1000(cat):
    expire(cache_slices(cat, 3))
    stats = cacheops.reap_conjs()
    assert stats.sets == 0 and stats.removed == 0
    assert len(members(category_conj(cat))) == 3


def test_works_in_chunks(cat):
    keys = cache_slices(cat, 7)
    expire(keys[:5])
    calls = []
    real_reap_members = reaper._reap_members

    def reap_members(client, prefix, conj, chunk):
        calls.append(len(chunk))
        return real_reap_members(client, prefix, conj, chunk)

    with mock.patch.object(reaper, '_reap_members', reap_members):
        stats = cacheops.reap_conjs(chunk_size=2, min_conj_set_size=1)

    assert members(category_conj(cat)) == set(keys[5:])
    assert stats.removed == 5
    assert len(calls) >= 4 and max(calls) <= 2  # at most 2 members per call


def _reaped_while_registered_again(cat, step, before):
    """reap_conjs() with the expired key of a cached query registered again by a reader
    just before (before=True) or after reaper's step; asserts the key kept its registration."""
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    key = qs._cache_key()
    expire([key])
    real_step = getattr(reaper, step)

    def reread(*args):
        if before:
            list(Post.objects.cache().filter(category=cat))
        result = real_step(*args)
        if not before:
            assert key.encode() in result  # found missing
            list(Post.objects.cache().filter(category=cat))
        return result

    with mock.patch.object(reaper, step, reread):
        stats = cacheops.reap_conjs(min_conj_set_size=1)

    assert stats.removed == 0
    assert key in members(category_conj(cat))
    Post.objects.create(title='new', category=cat)
    assert queries(lambda: list(Post.objects.cache().filter(category=cat))) == 1
    assert [p.title for p in Post.objects.cache().filter(category=cat)][-1] == 'new'


def test_a_key_recreated_after_the_scan_keeps_its_registration(cat):
    """A reader registers a key again between SSCAN and the check: the member must stay,
    or that entry could not be invalidated any more."""
    _reaped_while_registered_again(cat, '_reap_members', before=True)


@cluster_only('one Redis checks and removes in one script (lua/reap_conj.lua)')
def test_a_key_recreated_between_the_check_and_the_removal_keeps_its_registration(cat):
    """On a cluster a member is checked in its slot, then removed in the set's: a reader
    registering the key again in between keeps it (lua/reap_marked.lua)."""
    _reaped_while_registered_again(cat, '_missing', before=False)


def test_conj_keys_of_every_prefix_are_reaped(cat):
    def per_table(query):
        return 't-%s:' % '-'.join(sorted(query.tables))

    with override_settings(CACHEOPS_PREFIX=per_table):
        qs = Post.objects.cache().filter(category__title='c')  # a join: two conj sets
        list(qs)
        post_conj = conj_key('t-%s:' % POST, POST, {})
        # title=c, or no condition on MySQL, where collations keep strings from narrowing
        [cat_conj] = redis_keys('t-%s:conj:*' % CATEGORY)
        assert qs._cache_key() in members(post_conj) & members(cat_conj)
        expire([qs._cache_key()])
        stats = cacheops.reap_conjs(min_conj_set_size=1)
    assert stats.removed == 2
    assert not redis_client.exists(post_conj, cat_conj)


def test_other_data_is_left_alone(cat):
    """Only sets named like cacheops' conj keys of installed tables are touched, even when
    their members are not keys."""
    expire(cache_slices(cat, 2))
    prefix = prefix_for(['default'], [POST])
    foreign = [prefix + 'conj:no_such_table:a=1', 'app:' + category_conj(cat), 'conj', 'conj:']
    for key in foreign:
        redis_client.sadd(key, 'not-a-key-1', 'not-a-key-2')

    stats = cacheops.reap_conjs(min_conj_set_size=1)

    assert stats.removed == 2 and stats.sets == 1
    for key in foreign:
        assert members(key) == {'not-a-key-1', 'not-a-key-2'}


@override_settings(CACHEOPS_INSIDEOUT=True)
def test_insideout_stamps_are_left_alone(cat):
    qs = Post.objects.cache().filter(category=cat)
    list(qs)
    conj = category_conj(cat)
    stamp = redis_client.get(conj)
    assert stamp is not None
    expire([qs._cache_key()])

    stats = cacheops.reap_conjs(min_conj_set_size=0)

    assert stats.conj_keys >= 1 and stats.sets == 0 and stats.removed == 0
    assert redis_client.get(conj) == stamp


def test_progress_is_reported(cat):
    keys = cache_slices(cat, 4)
    expire(keys[:2])
    seen = []
    stats = cacheops.reap_conjs(chunk_size=1, min_conj_set_size=1,
                                progress=lambda s: seen.append((s.total, s.members, s.removed)))
    assert seen[-1] == (4, 4, 2) == (stats.total, stats.members, stats.removed)
    checked = [m for total, m, _ in seen if total]
    assert checked == sorted(checked) and len(set(checked)) == 5  # 0, then one per member


@pytest.mark.parametrize('kwargs', [{'chunk_size': 0}, {'min_conj_set_size': -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        cacheops.reap_conjs(**kwargs)
