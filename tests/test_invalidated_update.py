"""qs.invalidated_update(**kwargs): an update() that invalidates the updated rows by
their values before and after it, on the queryset's database, whatever
CACHEOPS_INVALIDATE_UPDATES says. A plain update() with that setting off is the
control: it leaves the cache stale."""
import pytest
from django.db import connections, transaction
from django.db.models import F
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import no_invalidation
from .models import All, Category, Post

pytestmark = pytest.mark.django_db(databases=['default', 'slave'])


def queries(func, using='default'):
    with CaptureQueriesContext(connections[using]) as ctx:
        result = func()
    return result, len(ctx)


def titles(cat, using='default', **filters):
    return [p.title for p in Post.objects.cache().using(using).filter(category=cat, **filters)
            .order_by('pk')]


def warm(func, using='default'):
    result = func()
    assert queries(func, using) == (result, 0)
    return result


@pytest.fixture
def cats():
    return [Category.objects.create(title='c%d' % i) for i in range(3)]


@pytest.fixture
def posts(cats):
    return [Post.objects.create(title='p%d' % i, category=cats[0]) for i in range(2)]


@override_settings(CACHEOPS_INVALIDATE_UPDATES=False)
def test_plain_update_with_the_setting_off_leaves_the_cache_stale(cats, posts):
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    Post.objects.filter(category=cats[0]).update(title='x')
    assert queries(lambda: titles(cats[0])) == (['p0', 'p1'], 0)


def test_invalidates_by_new_values(cats, posts):
    assert warm(lambda: titles(cats[0], title='x')) == []
    count = Post.objects.filter(pk=posts[0].pk).invalidated_update(title='x')
    assert count == 1
    assert queries(lambda: titles(cats[0], title='x')) == (['x'], 1)


def test_invalidates_by_old_and_new_values(cats, posts):
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    assert warm(lambda: titles(cats[1])) == []
    assert warm(lambda: titles(cats[2])) == []

    assert Post.objects.filter(category=cats[0]).invalidated_update(category=cats[1]) == 2

    assert queries(lambda: titles(cats[0])) == ([], 1)          # old value
    assert queries(lambda: titles(cats[1])) == (['p0', 'p1'], 1)  # new value
    assert queries(lambda: titles(cats[2])) == ([], 0)            # neither: still cached


def test_rows_leaving_the_filter_are_invalidated(cats, posts):
    """The filter matches the rows before the update only: the rows are refetched by pk."""
    assert warm(lambda: titles(cats[0], visible=True)) == ['p0', 'p1']
    assert warm(lambda: titles(cats[0], visible=False)) == []
    Post.objects.filter(visible=True).invalidated_update(visible=False)
    assert queries(lambda: titles(cats[0], visible=True)) == ([], 1)
    assert queries(lambda: titles(cats[0], visible=False)) == (['p0', 'p1'], 1)


def test_expressions(cats):
    obj = All.objects.create(tag=1)
    assert warm(lambda: All.objects.filter(tag=2).count()) == 0
    assert warm(lambda: All.objects.filter(tag=1).count()) == 1
    All.objects.filter(pk=obj.pk).invalidated_update(tag=F('tag') + 1)
    assert queries(lambda: All.objects.filter(tag=2).count()) == (1, 1)
    assert queries(lambda: All.objects.filter(tag=1).count()) == (0, 1)


def test_nothing_to_update(cats, posts):
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    assert Post.objects.filter(title='none').invalidated_update(title='x') == 0
    assert queries(lambda: titles(cats[0])) == (['p0', 'p1'], 0)


def test_manager_method(cats, posts):
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    assert Post.objects.invalidated_update(title='x') == 2
    assert queries(lambda: titles(cats[0])) == (['x', 'x'], 1)


def test_cached_queryset_is_not_used_to_find_the_rows(cats, posts):
    """The rows to update are read from the database, not from a stale cached result."""
    qs = Post.objects.cache().filter(category=cats[0])
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    assert [p.pk for p in qs] == [p.pk for p in posts]
    new = Post.objects.create(title='p2', category=cats[1])
    Post.objects.filter(pk=new.pk).update(category=cats[0])  # qs's cached result is stale now
    qs.invalidated_update(title='x')
    assert queries(lambda: titles(cats[0])) == (['x', 'x', 'x'], 1)


def test_respects_no_invalidation(cats, posts):
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    with no_invalidation:
        Post.objects.invalidated_update(title='x')
    assert queries(lambda: titles(cats[0])) == (['p0', 'p1'], 0)


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_in_a_transaction_invalidates_at_commit(cats, posts):
    assert warm(lambda: titles(cats[0])) == ['p0', 'p1']
    with transaction.atomic():
        Post.objects.invalidated_update(title='x')
    assert queries(lambda: titles(cats[0])) == (['x', 'x'], 1)
    assert warm(lambda: titles(cats[0])) == ['x', 'x']
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            Post.objects.invalidated_update(title='y')
            1 / 0
    assert queries(lambda: titles(cats[0])) == (['x', 'x'], 0)  # rolled back: nothing to do


# Another database

@pytest.fixture
def slave_posts():
    cat = Category.objects.using('slave').create(title='s')
    for i in range(2):
        Post.objects.using('slave').create(title='s%d' % i, category=cat)
    return cat


def test_on_another_database(slave_posts):
    """The rows exist on 'slave' only: reading them from 'default' would find none."""
    cat = slave_posts
    assert warm(lambda: titles(cat, 'slave'), 'slave') == ['s0', 's1']
    count = Post.objects.using('slave').filter(category=cat).invalidated_update(title='x')
    assert count == 2
    assert queries(lambda: titles(cat, 'slave'), 'slave') == (['x', 'x'], 1)


def per_db(query):
    return query.db + ':'


@override_settings(CACHEOPS_PREFIX=per_db)
def test_on_another_database_with_per_database_prefixes(cats, slave_posts):
    """The same query on two databases: per-database prefixes keep the entries apart,
    and the update invalidates the one on its own database."""
    def all_titles(using):
        return [p.title for p in Post.objects.cache().using(using).order_by('pk')]

    Post.objects.create(title='d0', category=cats[0])
    assert warm(lambda: all_titles('slave'), 'slave') == ['s0', 's1']
    assert warm(lambda: all_titles('default')) == ['d0']

    Post.objects.using('slave').invalidated_update(title='x')

    assert queries(lambda: all_titles('slave'), 'slave') == (['x', 'x'], 1)
    assert queries(lambda: all_titles('default')) == (['d0'], 0)
