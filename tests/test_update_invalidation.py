"""qs.update() and qs.bulk_update() invalidate the rows they change by their values before
and after the write, read in its transaction; above CACHEOPS_LONG_DISJUNCTION rows, the
whole model. CACHEOPS_INVALIDATE_UPDATES = False gives the original's plain writes."""
import threading
from unittest import mock

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from cacheops import invalidation, no_invalidation
from cacheops.query import writes
from .models import All, Category, NoProfile, OwnedVehicle, Poem, Post, Vehicle, Work
from .utils import Worker, queries, warm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_pending_failures():
    yield
    invalidation.failed.clear()


@pytest.fixture
def cats():
    """Categories c0, c1 and c2."""
    return [Category.objects.create(title=title) for title in ('c0', 'c1', 'c2')]


@pytest.fixture
def posts(cats):
    """Posts p0 and p1, both in c0."""
    return [Post.objects.create(title=title, category=cats[0]) for title in ('p0', 'p1')]


def titles(cat, **filters):
    return [p.title for p in Post.objects.cache().filter(category=cat, **filters).order_by('pk')]


def tags(tag):
    return All.objects.filter(tag=tag).count()


# update()

def test_update_invalidates_by_the_old_and_the_new_values(cats, posts):
    for cat in cats:
        warm(lambda: titles(cat))
    assert Post.objects.filter(category=cats[0]).update(category=cats[1]) == 2
    assert queries(lambda: titles(cats[0])) == ([], 1)              # the old value
    assert queries(lambda: titles(cats[1])) == (['p0', 'p1'], 1)    # the new value
    assert queries(lambda: titles(cats[2])) == ([], 0)              # neither: still cached


def test_update_invalidates_rows_leaving_its_filter(cats, posts):
    warm(lambda: titles(cats[0], visible=True))
    warm(lambda: titles(cats[0], visible=False))
    Post.objects.filter(visible=True).update(visible=False)
    assert queries(lambda: titles(cats[0], visible=True)) == ([], 1)
    assert queries(lambda: titles(cats[0], visible=False)) == (['p0', 'p1'], 1)


def test_update_through_a_join_or_distinct_invalidates_by_value_too(cats, posts):
    """Their rows can't be read FOR UPDATE as they are: their keys first, then the rows."""
    for cat in cats:
        warm(lambda: titles(cat))
    assert Post.objects.filter(category__title='c0').distinct().update(category=cats[1]) == 2
    assert queries(lambda: titles(cats[0])) == ([], 1)
    assert queries(lambda: titles(cats[1])) == (['p0', 'p1'], 1)
    assert queries(lambda: titles(cats[2])) == ([], 0)


def test_update_by_instance_of_a_foreign_key_or_by_its_attname(cats, posts):
    warm(lambda: titles(cats[1]))
    Post.objects.filter(pk=posts[0].pk).update(category_id=cats[1].pk)
    assert queries(lambda: titles(cats[1])) == (['p0'], 1)


def test_update_returns_the_row_count(cats, posts):
    assert Post.objects.filter(title='p0').update(title='x') == 1
    assert Post.objects.filter(title='nothing').update(title='x') == 0
    assert Post.objects.update(visible=False) == 2


def test_update_with_f_expressions_reads_the_new_values_back():
    All.objects.create(tag=1)
    warm(lambda: tags(2))
    warm(lambda: tags(5))
    All.objects.filter(tag=1).update(tag=F('tag') + 1)
    assert queries(lambda: tags(2)) == (1, 1)
    assert queries(lambda: tags(5)) == (0, 0)


def test_update_with_a_subquery_reads_the_new_values_back(cats):
    row = All.objects.create(tag=1, category=cats[0])
    warm(lambda: tags(cats[0].pk))
    newest = Category.objects.filter(pk=OuterRef('category_id')).values('pk')[:1]
    All.objects.filter(pk=row.pk).update(tag=Subquery(newest))
    assert queries(lambda: tags(cats[0].pk)) == (1, 1)


@override_settings(CACHEOPS_LONG_DISJUNCTION=2)
def test_up_to_long_disjunction_rows_only_their_values_are_invalidated(cats, posts):
    warm(lambda: titles(cats[2]))
    Post.objects.filter(category=cats[0]).update(category=cats[1])  # 2 rows
    assert queries(lambda: titles(cats[2])) == ([], 0)


@override_settings(CACHEOPS_LONG_DISJUNCTION=1)
def test_above_long_disjunction_rows_the_whole_model_is_invalidated(cats, posts):
    warm(lambda: titles(cats[2]))
    assert Post.objects.filter(category=cats[0]).update(category=cats[1]) == 2
    assert queries(lambda: titles(cats[2])) == ([], 1)
    assert queries(lambda: titles(cats[1])) == (['p0', 'p1'], 1)


def test_update_in_a_transaction_invalidates_at_commit(cats, posts):
    warm(lambda: titles(cats[1]))
    with transaction.atomic():
        Post.objects.filter(category=cats[0]).update(category=cats[1])
    assert queries(lambda: titles(cats[1])) == (['p0', 'p1'], 1)


def test_an_update_rolled_back_leaves_the_cache_as_it_was(cats, posts):
    warm(lambda: titles(cats[1]))
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Post.objects.filter(category=cats[0]).update(category=cats[1])
        1 / 0
    assert queries(lambda: titles(cats[1])) == ([], 0)


def test_a_refused_invalidation_does_not_break_the_update(cats, posts):
    def failing(script, *args, **kwargs):
        raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    with mock.patch.object(invalidation, 'run_script', failing):
        assert Post.objects.filter(category=cats[0]).update(title='new') == 2
    assert list(Post.objects.nocache().values_list('title', flat=True)) == ['new', 'new']
    assert invalidation.failed


def test_update_of_an_untracked_model_costs_nothing_extra():
    NoProfile.objects.create(title='a')
    assert queries(lambda: NoProfile.objects.filter(title='a').update(title='b')) == (1, 1)


def test_update_under_no_invalidation_invalidates_nothing(cats, posts):
    warm(lambda: titles(cats[1]))
    with no_invalidation:
        Post.objects.filter(category=cats[0]).update(category=cats[1])
    assert queries(lambda: titles(cats[1])) == ([], 0)


@override_settings(CACHEOPS_INVALIDATE_UPDATES=False)
def test_with_the_setting_off_update_leaves_the_cache_stale(cats, posts):
    warm(lambda: titles(cats[1]))
    assert queries(lambda: Post.objects.filter(category=cats[0]).update(category=cats[1])) == (2, 1)
    assert queries(lambda: titles(cats[1])) == ([], 0)


@override_settings(CACHEOPS_INVALIDATE_UPDATES=False)
def test_with_the_setting_off_invalidated_update_still_invalidates(cats, posts):
    warm(lambda: titles(cats[1]))
    Post.objects.filter(category=cats[0]).invalidated_update(category=cats[1])
    assert queries(lambda: titles(cats[1])) == (['p0', 'p1'], 1)


def test_update_reads_the_rows_locked():
    if not connection.features.has_select_for_update:
        pytest.skip('SQLite locks the whole database instead (the next test)')
    All.objects.create(tag=1)
    with CaptureQueriesContext(connection) as ctx:
        All.objects.filter(tag=1).update(tag=2)
    assert 'FOR' in ctx[0]['sql'] and 'UPDATE' in ctx[0]['sql'].split('FROM')[-1], ctx[0]['sql']


def test_update_on_sqlite_takes_the_write_lock_before_reading():
    if connection.vendor != 'sqlite':
        pytest.skip('elsewhere the rows are read FOR UPDATE (the test before)')
    All.objects.create(tag=1)
    with CaptureQueriesContext(connection) as ctx:
        All.objects.filter(tag=1).update(tag=2)
    assert ctx[0]['sql'].startswith('UPDATE') and 'WHERE 1 = 0' in ctx[0]['sql']


@pytest.mark.django_db(transaction=True)
def test_a_writer_racing_an_update_waits_for_the_rows_it_read(monkeypatch, cats):
    """Another writer moving a row the update has read waits for the update's commit:
    the update changes the row where it read it, and the move invalidates after it."""
    if connection.vendor == 'sqlite':
        pytest.skip('SQLite: the write lock is taken before the read (the test above)')
    post = Post.objects.create(title='old', category=cats[0])
    warm(lambda: titles(cats[2]))
    moved = threading.Event()

    def mover():
        try:
            row = Post.objects.nocache().get(pk=post.pk)
            row.category = cats[2]
            row.save(update_fields=['category'])
        finally:
            moved.set()
            connection.close()

    read = writes.rows_to_update
    other = Worker(mover)

    def read_then_let_the_mover_in(*args):
        rows = read(*args)
        other.start()
        waited.append(not moved.wait(0.5))
        return rows

    waited = []
    monkeypatch.setattr(writes, 'rows_to_update', read_then_let_the_mover_in)
    assert Post.objects.filter(category=cats[0]).update(title='new') == 1
    other.join(10)
    assert waited == [True], 'the mover did not wait for the rows the update read'
    assert titles(cats[2]) == ['new'] == [p.title for p in Post.objects.nocache().filter(category=cats[2])]


# bulk_update()

def test_bulk_update_invalidates_by_the_old_and_the_new_values(cats, posts):
    for cat in cats:
        warm(lambda: titles(cat))
    posts[0].category, posts[1].category = cats[1], cats[2]
    assert Post.objects.bulk_update(posts, ['category'], batch_size=1) == 2
    assert queries(lambda: titles(cats[0])) == ([], 1)
    assert queries(lambda: titles(cats[1])) == (['p0'], 1)
    assert queries(lambda: titles(cats[2])) == (['p1'], 1)


def test_bulk_update_invalidates_only_those_values(cats, posts):
    warm(lambda: titles(cats[2]))
    posts[0].category = cats[1]
    Post.objects.bulk_update(posts, ['category', 'title'])
    assert queries(lambda: titles(cats[2])) == ([], 0)


def test_bulk_update_with_expressions_reads_the_new_values_back():
    row = All.objects.create(tag=1)
    warm(lambda: tags(2))
    row.tag = F('tag') + 1
    All.objects.bulk_update([row], ['tag'])
    assert queries(lambda: tags(2)) == (1, 1)


@override_settings(CACHEOPS_LONG_DISJUNCTION=1)
def test_bulk_update_of_more_than_long_disjunction_rows_invalidates_the_model(cats, posts):
    warm(lambda: titles(cats[2]))
    for post in posts:
        post.title = 'x'
    assert Post.objects.bulk_update(posts, ['title']) == 2
    assert queries(lambda: titles(cats[2])) == ([], 1)


@override_settings(CACHEOPS_INVALIDATE_UPDATES=False)
def test_with_the_setting_off_bulk_update_leaves_the_cache_stale(cats, posts):
    warm(lambda: titles(cats[1]))
    posts[0].category = cats[1]
    Post.objects.bulk_update(posts, ['category'])
    assert queries(lambda: titles(cats[1])) == ([], 0)


# Multi-table inheritance (integer columns: MySQL's strings compare without case, so
# conditions on them don't narrow invalidation there)

@pytest.fixture
def poem():
    return Poem.objects.create(pages=1, lines=10)


def works(**filters):
    return Work.objects.cache().filter(**filters).count()


def poems(**filters):
    return Poem.objects.cache().filter(**filters).count()


def test_an_update_of_a_child_invalidates_queries_on_its_parent(poem):
    warm(lambda: works(pages=2))
    warm(lambda: works(pages=3))
    Poem.objects.filter(lines=10).update(pages=2)
    assert queries(lambda: works(pages=2)) == (1, 1)
    assert queries(lambda: works(pages=3)) == (0, 0)


def test_an_update_of_a_parent_invalidates_queries_on_its_children(poem):
    warm(lambda: poems(pages=1))
    warm(lambda: poems(pages=3, lines=10))
    Work.objects.filter(pk=poem.pk).update(pages=2)
    assert queries(lambda: poems(pages=1)) == (0, 1)
    assert queries(lambda: poems(pages=3, lines=10)) == (0, 0)


def test_an_update_of_a_child_by_its_own_and_its_parents_columns(poem):
    warm(lambda: poems(lines=11))
    warm(lambda: poems(lines=11, pages=2))
    Poem.objects.filter(pages=1).update(lines=11, pages=2)
    assert queries(lambda: poems(lines=11)) == (1, 1)
    assert queries(lambda: poems(lines=11, pages=2)) == (1, 1)


def test_an_update_of_a_child_of_two_parents_invalidates_the_second_ones_table():
    Vehicle.objects.create(wheels=2)  # the second parent's keys differ from the child's
    OwnedVehicle.objects.create(owner_name='o', wheels=4)
    warm(lambda: Vehicle.objects.cache().filter(wheels=3).count())
    warm(lambda: Vehicle.objects.cache().filter(wheels=5).count())
    OwnedVehicle.objects.filter(wheels=4).update(wheels=3)
    assert queries(lambda: Vehicle.objects.cache().filter(wheels=3).count()) == (1, 1)
    assert queries(lambda: Vehicle.objects.cache().filter(wheels=5).count()) == (0, 0)


def test_bulk_update_of_a_child_invalidates_its_parents_table(poem):
    warm(lambda: works(pages=5))
    warm(lambda: works(pages=6))
    poem.pages = 5
    Poem.objects.bulk_update([poem], ['pages', 'lines'])
    assert queries(lambda: works(pages=5)) == (1, 1)
    assert queries(lambda: works(pages=6)) == (0, 0)


def test_a_setting_given_a_string_fails_the_update(cats, posts):
    with override_settings(CACHEOPS_INVALIDATE_UPDATES='no'), \
            pytest.raises(ImproperlyConfigured, match='CACHEOPS_INVALIDATE_UPDATES'):
        Post.objects.update(title='x')
