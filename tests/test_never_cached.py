"""What is never cached, even for a model whose profile caches everything:
.iterator(), select_for_update(), writes and raw SQL. An empty __in runs no
query at all."""
import pytest
from django.db import transaction

from .models import All, Category, Post
from .utils import queries

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows():
    return [All.objects.create(tag=tag, title='t%d' % tag) for tag in (1, 2, 3)]


def test_iterator_is_not_cached(rows, django_assert_num_queries):
    for _ in range(2):
        with django_assert_num_queries(1):
            assert [obj.tag for obj in All.objects.order_by('pk').iterator()] == [1, 2, 3]


def test_iterator_does_not_read_the_cache(rows, django_assert_num_queries):
    qs = All.objects.order_by('pk')
    assert list(qs) == rows
    with django_assert_num_queries(0):
        list(All.objects.order_by('pk'))
    with django_assert_num_queries(1):
        assert list(All.objects.order_by('pk').iterator()) == rows


def test_iterator_on_manually_cached_queryset_is_not_cached(rows, django_assert_num_queries):
    cat = Category.objects.create(title='c')
    Post.objects.create(title='p', category=cat)
    for _ in range(2):
        with django_assert_num_queries(1):
            assert [p.title for p in Post.objects.cache().iterator()] == ['p']


@pytest.mark.django_db(transaction=True)
def test_select_for_update_is_not_cached(django_assert_num_queries):
    obj = All.objects.create(tag=1)
    # cache the same query without FOR UPDATE first
    assert list(All.objects.filter(tag=1)) == [obj]
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=1)) == [obj]
    with transaction.atomic():
        for _ in range(2):
            with django_assert_num_queries(1):
                assert list(All.objects.select_for_update().filter(tag=1)) == [obj]
            with django_assert_num_queries(1):
                assert All.objects.select_for_update().get(tag=1) == obj


def test_updates_always_run(rows):
    for i in range(2):
        _, statements = queries(lambda: All.objects.filter(tag=1).update(title='u%d' % i))
        assert statements >= 1  # the UPDATE, and the rows' values read for invalidation
        assert All.objects.nocache().get(tag=1).title == 'u%d' % i
    assert All.objects.nocache().get(tag=1).title == 'u1'


def test_raw_sql_is_not_cached(rows, django_assert_num_queries):
    sql = 'SELECT * FROM %s ORDER BY id' % All._meta.db_table
    for _ in range(2):
        with django_assert_num_queries(1):
            assert [obj.tag for obj in All.objects.raw(sql)] == [1, 2, 3]
    All.objects.filter(tag=1).update(tag=10)
    with django_assert_num_queries(1):
        assert [obj.tag for obj in All.objects.raw(sql)] == [10, 2, 3]


def test_empty_in_runs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert list(All.objects.filter(pk__in=[])) == []
    with django_assert_num_queries(0):
        assert list(Post.objects.filter(pk__in=[])) == []
    with django_assert_num_queries(0):
        assert list(Post.objects.cache().filter(pk__in=[])) == []
    with django_assert_num_queries(0):
        assert list(All.objects.filter(pk__in=[])) == []
