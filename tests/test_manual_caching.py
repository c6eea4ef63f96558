"""Manual caching with .cache(), turning it off with .nocache(), and the
.inplace()/.cloning() queryset modes."""
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Max

import cacheops.redis
from .models import All, Category, NoProfile, Post

pytestmark = pytest.mark.django_db


@pytest.fixture
def posts():
    cat = Category.objects.create(title='news')
    return [Post.objects.create(title='p%d' % i, category=cat) for i in range(3)]


def ttl_of(qs):
    return cacheops.redis.redis_client.ttl(qs._cache_key())


# .cache()

def test_cache_makes_a_queryset_cached(posts, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert list(Post.objects.cache().order_by('pk')) == posts
    with django_assert_num_queries(0):
        assert list(Post.objects.cache().order_by('pk')) == posts


def test_cache_can_be_called_anywhere_in_the_chain(posts, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert list(Post.objects.filter(title='p1').order_by('pk').cache()) == posts[1:2]
    with django_assert_num_queries(0):
        assert list(Post.objects.filter(title='p1').cache().order_by('pk')) == posts[1:2]


def test_cache_enables_all_ops_by_default(posts, django_assert_num_queries):
    ops = [
        lambda: Post.objects.cache().get(pk=posts[0].pk),
        lambda: list(Post.objects.cache().filter(title='p1')),
        lambda: Post.objects.cache().count(),
        lambda: Post.objects.cache().aggregate(m=Max('pk')),
        lambda: Post.objects.cache().filter(title='p2').exists(),
    ]
    for op in ops:
        with django_assert_num_queries(1):
            first = op()
        with django_assert_num_queries(0):
            assert op() == first


def test_uncached_without_cache_call(posts, django_assert_num_queries):
    for _ in range(2):
        with django_assert_num_queries(1):
            assert list(Post.objects.order_by('pk')) == posts


def test_cache_with_ops_caches_only_those_ops(posts, django_assert_num_queries):
    qs = Post.objects.filter(category=posts[0].category).cache(ops=['count'])
    with django_assert_num_queries(1):
        assert qs.count() == 3
    with django_assert_num_queries(0):
        assert Post.objects.filter(category=posts[0].category).cache(ops=['count']).count() == 3
    for _ in range(2):
        with django_assert_num_queries(1):
            assert len(list(Post.objects.filter(category=posts[0].category).cache(ops=['count']))) == 3


def test_cache_with_ops_count_caches_the_paginators_count_only(posts, django_assert_num_queries):
    """The spec's example: the count is cached, the articles of a page hit the database."""
    from django.core.paginator import Paginator

    def page_titles(number):
        qs = Post.objects.filter(category=posts[0].category).order_by('pk').cache(ops=['count'])
        paginator = Paginator(qs, 2)
        return [p.title for p in paginator.page(number)]

    with django_assert_num_queries(2):
        assert page_titles(1) == ['p0', 'p1']
    with django_assert_num_queries(1):
        assert page_titles(1) == ['p0', 'p1']
    with django_assert_num_queries(1):
        assert page_titles(2) == ['p2']


def test_cache_with_empty_ops_turns_automatic_caching_off(django_assert_num_queries):
    All.objects.create(tag=1)
    list(All.objects.filter(tag=1))
    with django_assert_num_queries(0):  # cached without .cache(ops=[])
        list(All.objects.filter(tag=1))
    for _ in range(2):
        with django_assert_num_queries(1):
            assert len(list(All.objects.filter(tag=1).cache(ops=[]))) == 1
        with django_assert_num_queries(1):
            All.objects.cache(ops=[]).get(tag=1)


def test_cache_timeout(posts):
    qs = Post.objects.filter(title='p0').cache(timeout=100)
    list(qs)
    assert 90 < ttl_of(qs) <= 100
    qs = Post.objects.filter(title='p1').cache(timeout=2000)
    list(qs)
    assert 1990 < ttl_of(qs) <= 2000


def test_cache_with_lock_caches_too(posts, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert list(Post.objects.cache(lock=True).filter(title='p2')) == posts[2:]
    with django_assert_num_queries(0):
        assert list(Post.objects.cache(lock=True).filter(title='p2')) == posts[2:]


def test_manually_cached_queryset_is_invalidated_automatically(posts, django_assert_num_queries):
    list(Post.objects.cache().filter(title='p1'))
    with django_assert_num_queries(0):
        list(Post.objects.cache().filter(title='p1'))
    posts[1].text = 'changed'
    posts[1].save()
    with django_assert_num_queries(1):
        assert [p.text for p in Post.objects.cache().filter(title='p1')] == ['changed']


def test_none_profile_forbids_manual_caching(django_assert_num_queries):
    obj = NoProfile.objects.create(title='x')
    with pytest.raises(ImproperlyConfigured):
        NoProfile.objects.cache()
    with pytest.raises(ImproperlyConfigured):
        NoProfile.objects.filter(title='x').cache()
    # and nothing is cached automatically
    for _ in range(2):
        with django_assert_num_queries(1):
            assert list(NoProfile.objects.filter(title='x')) == [obj]
        with django_assert_num_queries(1):
            assert NoProfile.objects.get(pk=obj.pk) == obj


# .nocache()

def test_nocache_disables_automatic_caching(django_assert_num_queries):
    All.objects.create(tag=1)
    for _ in range(2):
        with django_assert_num_queries(1):
            assert len(list(All.objects.filter(tag=1).nocache())) == 1
        with django_assert_num_queries(1):
            All.objects.nocache().get(tag=1)
        with django_assert_num_queries(1):
            assert All.objects.nocache().count() == 1


def test_nocache_sticks_to_derived_querysets(django_assert_num_queries):
    All.objects.create(tag=2, title='a')
    qs = All.objects.filter(title='a').nocache()
    for _ in range(2):
        with django_assert_num_queries(1):
            assert len(list(qs.filter(tag=2))) == 1
        with django_assert_num_queries(1):
            assert len(list(qs.filter(tag=3))) == 0


def test_nocache_does_not_read_the_cache(django_assert_num_queries):
    obj = All.objects.create(tag=1, title='a')
    assert list(All.objects.filter(tag=1)) == [obj]
    with django_assert_num_queries(0):
        list(All.objects.filter(tag=1))
    with django_assert_num_queries(1):
        assert list(All.objects.filter(tag=1).nocache()) == [obj]


# .inplace() and .cloning()

def test_inplace_mutates_the_queryset():
    a = All.objects.create(tag=1, title='a')
    All.objects.create(tag=2, title='b')
    qs = All.objects.inplace()
    assert qs.filter(tag=1) is qs
    assert qs.order_by('pk') is qs
    assert list(qs) == [a]


def test_the_spec_inplace_chain_with_a_slice(django_assert_num_queries):
    rows = [All.objects.create(tag=12, title=t) for t in 'abc'] + [All.objects.create(tag=13, title='d')]
    with django_assert_num_queries(1):
        assert list(All.objects.inplace().filter(tag=12).order_by('-title')[:2]) == rows[2:0:-1]
    with django_assert_num_queries(0):  # All's profile caches fetches
        assert list(All.objects.inplace().filter(tag=12).order_by('-title')[:2]) == rows[2:0:-1]


def test_cloning_restores_cloning_mode():
    a = All.objects.create(tag=1, title='a')
    b = All.objects.create(tag=2, title='b')
    qs = All.objects.inplace().filter(tag__in=[1, 2]).cloning()
    narrowed = qs.filter(tag=1)
    assert narrowed is not qs
    assert list(narrowed) == [a]
    assert sorted(qs, key=lambda x: x.pk) == [a, b]


def test_querysets_clone_by_default():
    qs = All.objects.all()
    assert qs.filter(tag=1) is not qs


# clone(): a copy that keeps the .cache() and inplace()/cloning() settings

def test_clone_keeps_cache_settings(posts, django_assert_num_queries):
    qs = Post.objects.cache(timeout=77).filter(title='p1')
    clone = qs.clone()
    assert clone is not qs
    with django_assert_num_queries(1):
        assert list(clone) == posts[1:2]
    assert 67 < ttl_of(clone) <= 77
    with django_assert_num_queries(0):
        assert list(qs.clone()) == posts[1:2]


def test_clone_keeps_nocache(posts, django_assert_num_queries):
    qs = All.objects.filter(tag=1).nocache()
    for _ in range(2):
        with django_assert_num_queries(1):
            list(qs.clone())


def test_clone_of_an_inplace_queryset_is_a_copy_that_stays_inplace():
    a = All.objects.create(tag=1, title='a')
    b = All.objects.create(tag=2, title='b')
    qs = All.objects.inplace().order_by('pk')
    clone = qs.clone()
    assert clone is not qs
    assert clone.filter(tag=1) is clone
    assert list(clone) == [a]
    assert list(qs) == [a, b]


def test_clone_of_a_cloning_queryset_clones_on_change():
    qs = All.objects.inplace().cloning().clone()
    assert qs.filter(tag=1) is not qs


# The methods the queryset and manager API has (besides Django's)

@pytest.mark.parametrize('name', ['cache', 'nocache', 'inplace', 'cloning', 'clone',
                                  'invalidated_update', '_cache_key'])
def test_querysets_have_cacheops_methods(name):
    assert callable(getattr(Post.objects.all(), name))


@pytest.mark.parametrize('name', ['cache', 'nocache', 'inplace', 'invalidated_update'])
def test_managers_have_cacheops_methods(name):
    assert callable(getattr(Post.objects, name))
