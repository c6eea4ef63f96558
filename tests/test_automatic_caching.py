"""Automatic caching: a profile's ops make get/fetch/count/aggregate/exists cached
without calling .cache(). Model `All` has ops 'all', `GenericContainer` has
('fetch', 'get', 'count'), and models under 'tests.*' have no ops."""
import pytest
from django.db.models import Count, Max, Sum

from .models import All, Category, GenericContainer, Post
from .utils import warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows():
    return [All.objects.create(tag=tag, title='t%d' % tag) for tag in (1, 2, 2, 3)]


# get

def test_get_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        obj = All.objects.get(pk=rows[0].pk)
    with django_assert_num_queries(0):
        again = All.objects.get(pk=rows[0].pk)
    assert obj == again == rows[0]
    assert again.title == 't1'


def test_get_by_other_field_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        All.objects.get(tag=3)
    with django_assert_num_queries(0):
        assert All.objects.get(tag=3) == rows[3]


def test_different_gets_are_cached_separately(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        All.objects.get(pk=rows[0].pk)
    with django_assert_num_queries(0):
        All.objects.get(pk=rows[0].pk)
    with django_assert_num_queries(1):
        assert All.objects.get(pk=rows[1].pk) == rows[1]


def test_first_and_last_are_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert All.objects.order_by('pk').first() == rows[0]
    with django_assert_num_queries(0):
        assert All.objects.order_by('pk').first() == rows[0]
    with django_assert_num_queries(1):
        assert All.objects.order_by('pk').last() == rows[-1]
    with django_assert_num_queries(0):
        assert All.objects.order_by('pk').last() == rows[-1]


def test_forward_foreign_key_access_is_cached(rows, django_assert_num_queries):
    container = GenericContainer.objects.create(name='c', owner=rows[0])
    first = GenericContainer.objects.nocache().get(pk=container.pk)
    second = GenericContainer.objects.nocache().get(pk=container.pk)
    with django_assert_num_queries(1):
        assert first.owner == rows[0]
    with django_assert_num_queries(0):
        assert second.owner == rows[0]
    assert second.owner.title == 't1'


def test_reverse_one_to_one_access_is_cached(rows, django_assert_num_queries):
    container = GenericContainer.objects.create(name='c', owner=rows[0])
    first = All.objects.nocache().get(pk=rows[0].pk)
    second = All.objects.nocache().get(pk=rows[0].pk)
    with django_assert_num_queries(1):
        assert first.container == container
    with django_assert_num_queries(0):
        assert second.container == container
    assert second.container.name == 'c'


# fetch

def test_iteration_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        first = [obj for obj in All.objects.filter(tag=2)]
    with django_assert_num_queries(0):
        second = [obj for obj in All.objects.filter(tag=2)]
    assert first == second == rows[1:3]


def test_list_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert list(All.objects.order_by('pk')) == rows
    with django_assert_num_queries(0):
        assert list(All.objects.order_by('pk')) == rows


def test_slices_are_cached_and_distinct(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert list(All.objects.order_by('pk')[1:3]) == rows[1:3]
    with django_assert_num_queries(0):
        assert list(All.objects.order_by('pk')[1:3]) == rows[1:3]
    # another slice is another query
    with django_assert_num_queries(1):
        assert list(All.objects.order_by('pk')[:1]) == rows[:1]


def test_values_is_cached(rows, django_assert_num_queries):
    expected = [{'tag': 2, 'title': 't2'}] * 2
    with django_assert_num_queries(1):
        assert list(All.objects.filter(tag=2).values('tag', 'title')) == expected
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=2).values('tag', 'title')) == expected


def test_values_list_flat_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert list(All.objects.order_by('pk').values_list('tag', flat=True)) == [1, 2, 2, 3]
    with django_assert_num_queries(0):
        assert list(All.objects.order_by('pk').values_list('tag', flat=True)) == [1, 2, 2, 3]


def test_union_is_cached_and_invalidated(rows, django_assert_num_queries):
    def union():
        return sorted(All.objects.filter(tag=1).union(All.objects.filter(tag=3)),
                      key=lambda obj: obj.pk)
    with django_assert_num_queries(1):
        assert union() == [rows[0], rows[3]]
    with django_assert_num_queries(0):
        assert union() == [rows[0], rows[3]]
    new = All.objects.create(tag=3)
    with django_assert_num_queries(1):
        assert union() == [rows[0], rows[3], new]


def test_fetch_is_invalidated_on_change(rows, django_assert_num_queries):
    assert list(All.objects.filter(tag=2)) == rows[1:3]
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=2)) == rows[1:3]
    rows[1].tag = 5
    rows[1].save()
    with django_assert_num_queries(1):
        assert list(All.objects.filter(tag=2)) == rows[2:3]


# count, aggregate, exists

def test_count_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert All.objects.filter(tag=2).count() == 2
    with django_assert_num_queries(0):
        assert All.objects.filter(tag=2).count() == 2
    All.objects.create(tag=2)
    with django_assert_num_queries(1):
        assert All.objects.filter(tag=2).count() == 3


def test_aggregate_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert All.objects.aggregate(m=Max('tag'), s=Sum('tag')) == {'m': 3, 's': 8}
    with django_assert_num_queries(0):
        assert All.objects.aggregate(m=Max('tag'), s=Sum('tag')) == {'m': 3, 's': 8}
    All.objects.create(tag=10)
    with django_assert_num_queries(1):
        assert All.objects.aggregate(m=Max('tag'), s=Sum('tag')) == {'m': 10, 's': 18}


def test_aggregate_over_a_join_is_invalidated_by_the_joined_table(django_assert_num_queries):
    # Count('posts') joins the posts table, which the queryset itself doesn't read
    category = Category.objects.create(title='a')
    Post.objects.create(title='p1', category=category)
    counted = Category.objects.cache()
    assert warm(lambda: counted.aggregate(n=Count('posts'))) == {'n': 1}
    Post.objects.create(title='p2', category=category)
    assert counted.aggregate(n=Count('posts')) == {'n': 2}
    # positional aggregates are named by their default alias
    assert warm(lambda: counted.aggregate(Count('posts'))) == {'posts__count': 2}
    Post.objects.create(title='p3', category=category)
    assert counted.aggregate(Count('posts')) == {'posts__count': 3}


def test_aggregate_of_an_annotation_over_a_join_is_invalidated():
    category = Category.objects.create(title='a')
    Post.objects.create(title='p1', category=category)
    annotated = Category.objects.cache().annotate(k=Count('posts'))
    assert warm(lambda: annotated.aggregate(m=Max('k'))) == {'m': 1}
    Post.objects.create(title='p2', category=category)
    assert annotated.aggregate(m=Max('k')) == {'m': 2}


def test_different_aggregates_do_not_share_a_key(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert All.objects.aggregate(x=Max('tag')) == {'x': 3}
    with django_assert_num_queries(0):
        assert All.objects.aggregate(x=Max('tag')) == {'x': 3}
    with django_assert_num_queries(1):
        assert All.objects.aggregate(x=Count('tag')) == {'x': 4}


def test_exists_is_cached(rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert All.objects.filter(tag=7).exists() is False
    with django_assert_num_queries(0):
        assert All.objects.filter(tag=7).exists() is False
    All.objects.create(tag=7)
    with django_assert_num_queries(1):
        assert All.objects.filter(tag=7).exists() is True


def test_annotated_fetch_is_cached(rows, django_assert_num_queries):
    def counts():
        return list(All.objects.values('tag').annotate(n=Count('id')).order_by('tag'))
    expected = [{'tag': 1, 'n': 1}, {'tag': 2, 'n': 2}, {'tag': 3, 'n': 1}]
    with django_assert_num_queries(1):
        assert counts() == expected
    with django_assert_num_queries(0):
        assert counts() == expected


# profile limits what is automatic

def test_ops_outside_the_profile_are_not_cached(django_assert_num_queries):
    # GenericContainer caches fetch, get and count - but not exists or aggregate
    GenericContainer.objects.create(name='a')
    for _ in range(2):
        with django_assert_num_queries(1):
            assert GenericContainer.objects.filter(name='a').exists()
        with django_assert_num_queries(1):
            assert GenericContainer.objects.aggregate(n=Count('id')) == {'n': 1}
    with django_assert_num_queries(1):
        assert GenericContainer.objects.filter(name='a').count() == 1
    with django_assert_num_queries(0):
        assert GenericContainer.objects.filter(name='a').count() == 1


def test_models_with_empty_ops_are_not_cached_automatically(django_assert_num_queries):
    category = Category.objects.create(title='c')
    Post.objects.create(title='p', category=category)
    for _ in range(2):
        with django_assert_num_queries(1):
            assert [p.title for p in Post.objects.filter(category=category)] == ['p']
        with django_assert_num_queries(1):
            assert Post.objects.get(title='p').category_id == category.pk
        with django_assert_num_queries(1):
            assert Post.objects.count() == 1
