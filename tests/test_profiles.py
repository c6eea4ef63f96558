"""CACHEOPS profiles: lookup precedence 'app.model' > 'app.*' > '*.*', None
forbidding caching, CACHEOPS_DEFAULTS merged into every profile, the forms
'ops' can take, timeouts, and the local_get / cache_on_save options.
Profiles follow override_settings."""
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import Max
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import cacheops.redis
from .cluster import redis_keys
from .utils import warm
from .models import (All, CacheOnSaveProfile, Category, GenericContainer, Local, NoProfile,
                     Post)

pytestmark = pytest.mark.django_db

ALL_OPS = {'get', 'fetch', 'count', 'aggregate', 'exists'}


def cached_ops(model, pk):
    """Run each op twice and return the set of ops whose second run hit the cache."""
    ops = {
        'get': lambda: model.objects.get(pk=pk),
        'fetch': lambda: list(model.objects.filter(pk=pk)),
        'count': lambda: model.objects.count(),
        'aggregate': lambda: model.objects.aggregate(m=Max('pk')),
        'exists': lambda: model.objects.filter(pk=pk).exists(),
    }
    cached = set()
    for name, op in ops.items():
        with CaptureQueriesContext(connection) as first:
            result = op()
        assert len(first) == 1, name
        with CaptureQueriesContext(connection) as second:
            assert op() == result
        assert len(second) in (0, 1), name
        if not second:
            cached.add(name)
    return cached


def new_category():
    return Category.objects.create(title='c')


def new_post():
    return Post.objects.create(title='p', category=new_category())


def ttl_of(qs):
    return cacheops.redis.redis_client.ttl(qs._cache_key())


# The profiles of tests/settings.py

def test_model_profile_beats_app_profile():
    assert cached_ops(All, All.objects.create().pk) == ALL_OPS
    assert cached_ops(GenericContainer, GenericContainer.objects.create().pk) == {'get', 'fetch', 'count'}
    # 'tests.*' is {}: no automatic caching
    assert cached_ops(Category, new_category().pk) == set()


def test_none_profile_forbids_caching():
    obj = NoProfile.objects.create()
    assert cached_ops(NoProfile, obj.pk) == set()
    with pytest.raises(ImproperlyConfigured):
        list(NoProfile.objects.cache().filter(pk=obj.pk))


def test_default_timeout_from_defaults():
    # CACHEOPS_DEFAULTS = {'timeout': 60*60}
    qs = All.objects.filter(tag=1)
    list(qs)
    assert 3600 - 10 < ttl_of(qs) <= 3600


# Precedence with override_settings

PRECEDENCE = {
    'tests.category': {'ops': 'get'},
    'tests.*': {'ops': 'count'},
    '*.*': {'ops': 'fetch'},
}


@override_settings(CACHEOPS=PRECEDENCE)
def test_precedence_model_over_app_over_wildcard():
    assert cached_ops(Category, new_category().pk) == {'get'}
    assert cached_ops(Post, new_post().pk) == {'count'}
    assert cached_ops(Group, Group.objects.create(name='g').pk) == {'fetch'}


@override_settings(CACHEOPS={'tests.*': {'ops': 'all'}, 'tests.category': None})
def test_none_model_profile_beats_app_profile():
    cat = new_category()
    assert cached_ops(Category, cat.pk) == set()
    with pytest.raises(ImproperlyConfigured):
        list(Category.objects.cache().filter(pk=cat.pk))
    assert cached_ops(Post, new_post().pk) == ALL_OPS
    # no profile at all for other apps: not even manual caching
    group = Group.objects.create(name='g')
    assert cached_ops(Group, group.pk) == set()
    with pytest.raises(ImproperlyConfigured):
        list(Group.objects.cache().filter(pk=group.pk))


@override_settings(CACHEOPS={'tests.*': {'ops': 'all'}})
def test_models_without_profile_are_not_cached():
    group = Group.objects.create(name='g')
    assert cached_ops(Group, group.pk) == set()


# CACHEOPS_DEFAULTS

@override_settings(CACHEOPS_DEFAULTS={'timeout': 123, 'ops': 'fetch'},
                   CACHEOPS={'tests.category': {'timeout': 77}, 'tests.post': {'ops': 'get'},
                             'tests.*': {}})
def test_defaults_are_merged_into_profiles():
    cat = new_category()
    assert cached_ops(Category, cat.pk) == {'fetch'}
    assert 70 < ttl_of(Category.objects.filter(pk=cat.pk)) <= 77
    post = new_post()
    assert cached_ops(Post, post.pk) == {'get'}
    qs = Post.objects.cache().filter(pk=post.pk)
    list(qs)
    assert 113 < ttl_of(qs) <= 123
    all_qs = All.objects.filter(pk=All.objects.create().pk)
    list(all_qs)
    assert 113 < ttl_of(all_qs) <= 123


# The forms of ops

@pytest.mark.parametrize('ops, expected', [
    ('get', {'get'}),
    ('fetch', {'fetch'}),
    ({'get', 'count'}, {'get', 'count'}),
    (['fetch', 'exists'], {'fetch', 'exists'}),
    (('aggregate', 'count'), {'aggregate', 'count'}),
    ('all', ALL_OPS),
    ((), set()),
    ([], set()),
])
def test_ops_forms(ops, expected):
    with override_settings(CACHEOPS={'tests.category': {'ops': ops}}):
        assert cached_ops(Category, new_category().pk) == expected


# timeout

@override_settings(CACHEOPS={'tests.category': {'ops': 'all', 'timeout': 50}})
def test_profile_timeout():
    cat = new_category()
    qs = Category.objects.filter(pk=cat.pk)
    list(qs)
    assert 40 < ttl_of(qs) <= 50
    # .cache(timeout=...) beats the profile (another query: the first one is cached already)
    qs = Category.objects.filter(title='c').cache(timeout=500)
    list(qs)
    assert 490 < ttl_of(qs) <= 500


# 'get' covers first(), last() and related object access

@override_settings(CACHEOPS={'tests.category': {'ops': 'get'}, 'tests.*': {}})
def test_get_op_covers_first_last_and_foreign_keys():
    cats = [new_category(), new_category()]
    for method in ('first', 'last'):
        results = []
        for _ in range(2):
            with CaptureQueriesContext(connection) as ctx:
                results.append(getattr(Category.objects.order_by('pk'), method)())
            results.append(len(ctx))
        expected = cats[0] if method == 'first' else cats[1]
        assert results == [expected, 1, expected, 0], method
    # but plain fetches are not cached
    for _ in range(2):
        with CaptureQueriesContext(connection) as ctx:
            assert list(Category.objects.order_by('pk')) == cats
        assert len(ctx) == 1

    post = Post.objects.create(title='p', category=cats[0])
    counts = []
    for _ in range(2):
        fresh = Post.objects.get(pk=post.pk)
        with CaptureQueriesContext(connection) as ctx:
            assert fresh.category == cats[0]
        counts.append(len(ctx))
    assert counts == [1, 0]


@override_settings(CACHEOPS={'auth.user': {'ops': 'get', 'timeout': 60 * 15}})
def test_get_op_on_auth_user_covers_request_user():
    """The spec's first profile: request.user is a get, cached for 15 minutes."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.middleware import AuthenticationMiddleware
    from django.contrib.auth.models import User
    from django.test import RequestFactory
    user = User.objects.create(username='u')

    def request_user():
        request = RequestFactory().get('/')
        request.session = {SESSION_KEY: str(user.pk), HASH_SESSION_KEY: user.get_session_auth_hash(),
                           BACKEND_SESSION_KEY: 'django.contrib.auth.backends.ModelBackend'}
        AuthenticationMiddleware(lambda request: None).process_request(request)
        return request.user.username

    assert warm(request_user) == 'u'
    [key] = redis_keys('*q:*')
    assert 15 * 60 - 10 < cacheops.redis.redis_client.ttl(key) <= 15 * 60


# local_get

def test_local_get_caches_in_process_memory():
    import uuid
    tag = uuid.uuid4().int % 10 ** 9  # local memory outlives tests: use a fresh value
    obj = Local.objects.create(tag=tag, title='x')
    counts = []
    for _ in range(2):
        with CaptureQueriesContext(connection) as ctx:
            assert Local.objects.cache().get(tag=tag) == obj
        counts.append(len(ctx))
    assert counts == [1, 0]
    # it's not in Redis: flushing Redis does not matter
    cacheops.redis.redis_client.flushdb()
    with CaptureQueriesContext(connection) as ctx:
        assert Local.objects.cache().get(tag=tag).title == 'x'
    assert len(ctx) == 0


# cache_on_save

def test_cache_on_save_writes_instance_to_cache():
    obj = CacheOnSaveProfile.objects.create(title='saved')
    with CaptureQueriesContext(connection) as ctx:
        got = CacheOnSaveProfile.objects.cache().get(pk=obj.pk)
    assert len(ctx) == 0
    assert got == obj and got.title == 'saved'
    obj.title = 'resaved'
    obj.save()
    with CaptureQueriesContext(connection) as ctx:
        assert CacheOnSaveProfile.objects.cache().get(pk=obj.pk).title == 'resaved'
    assert len(ctx) == 0


def test_settings_follow_override(settings):
    from cacheops.conf import settings as cacheops_settings
    assert cacheops_settings.CACHEOPS_LONG_DISJUNCTION == 1000
    settings.CACHEOPS_LONG_DISJUNCTION = 5
    assert cacheops_settings.CACHEOPS_LONG_DISJUNCTION == 5
    with override_settings(CACHEOPS_LONG_DISJUNCTION=7):
        assert cacheops_settings.CACHEOPS_LONG_DISJUNCTION == 7
    assert cacheops_settings.CACHEOPS_LONG_DISJUNCTION == 5


# Per-model profiles: a profiled model's tables are written through models without a
# profile of their own (multi-table children, proxies, auto-created through models).
# Those writes invalidate, and the profiled model's queries are cached.

@override_settings(CACHEOPS={'tests.media': {'ops': 'all'}})
def test_unprofiled_multi_table_child_leaves_parent_cached_and_invalidates_it():
    from .models import Media, Movie
    Media.objects.create(name='plain')
    names = lambda: sorted(m.name for m in Media.objects.all())  # noqa: E731
    assert warm(names) == ['plain']
    assert warm(Media.objects.count) == 1
    movie = Movie.objects.create(name='alien', year=1979)
    assert warm(names) == ['alien', 'plain']
    movie.name = 'aliens'
    movie.save()
    assert warm(names) == ['aliens', 'plain']
    assert warm(lambda: Media.objects.get(pk=movie.pk).name) == 'aliens'
    movie.delete()
    assert warm(names) == ['plain']
    assert warm(Media.objects.count) == 1


@override_settings(CACHEOPS={'tests.post': {'ops': 'all'}, 'tests.category': {}})
def test_unprofiled_proxy_writes_invalidate_its_concrete_model():
    from .models import ProxyPost
    category = new_category()
    titles = lambda: sorted(p.title for p in Post.objects.filter(category=category))  # noqa: E731
    assert warm(titles) == []
    proxy = ProxyPost.objects.create(title='a', category=category)
    assert warm(titles) == ['a']
    proxy.title = 'b'
    proxy.save()
    assert warm(titles) == ['b']
    proxy.delete()
    assert warm(titles) == []


@override_settings(CACHEOPS={'tests.brand': {'ops': 'all'}, 'tests.label': {'ops': 'all'}})
def test_models_joined_through_an_unprofiled_auto_through_table_are_cached():
    from .models import Brand, Label
    brand, label = Brand.objects.create(name='b'), Label.objects.create(text='l')
    brands = lambda: [b.name for b in Brand.objects.filter(labels=label)]  # noqa: E731
    assert warm(brands) == []
    assert warm(Brand.objects.filter(labels=label).count) == 0
    assert warm(lambda: list(Brand.objects.filter(labels=label).values_list('name', flat=True))) == []
    brand.labels.add(label)
    assert warm(brands) == ['b']
    assert warm(Brand.objects.filter(labels=label).count) == 1
    label.brands.remove(brand)  # from the other side
    assert warm(brands) == []
    brand.labels.add(label)
    assert warm(brands) == ['b']
    brand.labels.clear()
    assert warm(brands) == []


@override_settings(CACHEOPS={'tests.label': {'ops': 'all'}})
def test_an_auto_through_table_is_tracked_from_the_side_without_the_field():
    from .models import Brand, Label
    brand, label = Brand.objects.create(name='b'), Label.objects.create(text='l')
    labels = lambda: [x.text for x in Label.objects.filter(brands__id=brand.pk)]  # noqa: E731
    assert warm(labels) == []
    brand.labels.add(label)  # Brand has no profile: the through table is Label's too
    assert warm(labels) == ['l']


@override_settings(CACHEOPS={'auth.user': {'ops': 'all'}, 'auth.group': {'ops': 'all'}})
def test_users_by_group_are_cached_with_per_model_auth_profiles():
    from django.contrib.auth.models import User
    group = Group.objects.create(name='g')
    user = User.objects.create(username='u')
    usernames = lambda: [u.username for u in User.objects.filter(groups=group)]  # noqa: E731
    assert warm(usernames) == []
    user.groups.add(group)
    assert warm(usernames) == ['u']


@override_settings(CACHEOPS={'tests.post': {'ops': 'all'}})
def test_a_query_joining_a_table_written_without_tracking_is_not_cached():
    # Category has no profile and is not family of Post: its writes are not tracked,
    # so a query that reads its table must not be served from the cache
    category = new_category()
    Post.objects.create(title='p', category=category)
    titles = lambda: [p.title for p in Post.objects.filter(category__title='c')]  # noqa: E731
    with CaptureQueriesContext(connection) as first:
        assert titles() == ['p']
    with CaptureQueriesContext(connection) as second:
        assert titles() == ['p']
    assert len(first) == len(second) == 1
    category.title = 'd'
    category.save()
    assert titles() == []
