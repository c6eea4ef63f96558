"""What Django 5.2, 6.0 and 6.1 changed under a cache: deletes whose referencing rows the
database changes (DB_CASCADE, DB_SET_NULL, DB_SET_DEFAULT), fixtures (raw saves and the
m2m_changed loaddata sends), fetch modes, composite primary keys and subqueries.

Each test skipped on some Django version says which version brought its feature."""
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, models
from django.db.models import Exists, OuterRef, Subquery
from django.test import override_settings

from . import models as app
from .models import Brand, Category, Extra, Label, Memo, NoProfile, NoProfileRef, Post
from .utils import queries, warm

pytestmark = pytest.mark.django_db

needs_db_on_delete = pytest.mark.skipif(
    not hasattr(models, 'DB_CASCADE'), reason='database-level on_delete came in Django 6.1')
needs_fetch_modes = pytest.mark.skipif(
    not hasattr(models, 'FETCH_PEERS'), reason='fetch modes came in Django 6.1')
needs_composite_pk = pytest.mark.skipif(
    not hasattr(models, 'CompositePrimaryKey'), reason='composite primary keys came in Django 5.2')


def values(qs, field):
    return list(qs.order_by('pk').values_list(field, flat=True))


def fresh(func, expected):
    """func() reads the database again, and gives what it holds now."""
    result, count = queries(func)
    assert count >= 1, 'expected the cached result to be invalidated'
    assert result == expected


def still_cached(func, expected):
    result, count = queries(func)
    assert count == 0, 'expected the result to stay cached'
    assert result == expected


# Deletes: referencing rows that change without model events must be invalidated

def test_a_set_null_key_without_a_reverse_accessor_is_invalidated():
    """related_name='+' hides the relation from Model._meta.related_objects."""
    category = Category.objects.create(title='c')
    Memo.objects.create(category=category, text='m')
    pk = category.pk
    by_key = lambda: values(Memo.objects.cache().filter(category=pk), 'text')  # noqa: E731
    orphans = lambda: values(Memo.objects.cache().filter(category__isnull=True), 'text')  # noqa: E731
    assert warm(by_key) == ['m']
    assert warm(orphans) == []
    category.delete()
    fresh(by_key, [])
    fresh(orphans, ['m'])


def test_deleting_a_row_of_an_uncached_model_invalidates_the_cached_rows_keyed_to_it():
    target = NoProfile.objects.create(title='t')
    NoProfileRef.objects.create(target=target, text='r')
    pk = target.pk
    by_key = lambda: values(NoProfileRef.objects.cache().filter(target=pk), 'text')  # noqa: E731
    assert warm(by_key) == ['r']
    target.delete()
    fresh(by_key, [])
    fresh(lambda: values(NoProfileRef.objects.cache().filter(target__isnull=True), 'text'), ['r'])


@pytest.fixture
def library():
    """Shelves a (number 1) and b (2), each with a book of two pages and a bookmark, and a
    sticker; page 2 of b's book refers to page 1 of a's."""
    rows = {}
    for number, code in enumerate('ab', 1):
        shelf = rows[code] = app.Shelf.objects.create(number=number)
        book = rows[code + '.book'] = app.Book.objects.create(shelf=shelf, title='book ' + code)
        rows[code + '.1'] = app.Page.objects.create(book=book, num=1)
        rows[code + '.2'] = app.Page.objects.create(book=book, num=2)
        app.Bookmark.objects.create(book=book, note='mark ' + code)
        app.Sticker.objects.create(shelf=shelf, color='red ' + code)
    rows['b.2'].see_also = rows['a.1']
    rows['b.2'].save()
    return rows


@needs_db_on_delete
def test_db_cascade_invalidates_the_rows_the_database_deleted(library):
    by_shelf = lambda: values(app.Book.objects.cache().filter(shelf=1), 'title')  # noqa: E731
    by_title = lambda: values(app.Book.objects.cache().filter(title='book a'), 'title')  # noqa: E731
    count = lambda: app.Book.objects.cache().count()  # noqa: E731
    other_shelf = lambda: values(app.Book.objects.cache().filter(shelf=2), 'title')  # noqa: E731
    assert [warm(f) for f in (by_shelf, by_title, count, other_shelf)] == [['book a'], ['book a'], 2, ['book b']]
    library['a'].delete()
    fresh(by_shelf, [])
    fresh(by_title, [])
    fresh(count, 1)
    still_cached(other_shelf, ['book b'])  # invalidated by the deleted key, not the model


@needs_db_on_delete
def test_db_cascade_invalidates_the_rows_deleted_beneath_the_deleted_ones(library):
    book = library['a.book'].pk
    pages = lambda: values(app.Page.objects.cache().filter(book=book), 'num')  # noqa: E731
    first_pages = lambda: app.Page.objects.cache().filter(num=1).count()  # noqa: E731
    assert warm(pages) == [1, 2]
    assert warm(first_pages) == 2
    library['a'].delete()
    fresh(pages, [])
    fresh(first_pages, 1)


@needs_db_on_delete
def test_db_set_null_beneath_a_db_cascade_is_invalidated(library):
    """Bookmarks lose the books the database deleted; page b.2 the page it referred to."""
    book = library['a.book'].pk
    marks = lambda: values(app.Bookmark.objects.cache().filter(book=book), 'note')  # noqa: E731
    loose = lambda: values(app.Bookmark.objects.cache().filter(book__isnull=True), 'note')  # noqa: E731
    referring = lambda: values(app.Page.objects.cache().filter(see_also=library['a.1'].pk), 'num')  # noqa: E731
    assert [warm(f) for f in (marks, loose, referring)] == [['mark a'], [], [2]]
    library['a'].delete()
    fresh(marks, [])
    fresh(loose, ['mark a'])
    fresh(referring, [])


@needs_db_on_delete
def test_the_rows_beneath_a_model_that_is_not_cached_are_invalidated(library):
    with override_settings(CACHEOPS={**settings.CACHEOPS, 'tests.book': None}):
        first_pages = lambda: app.Page.objects.cache().filter(num=1).count()  # noqa: E731
        assert warm(first_pages) == 2
        library['a'].delete()
        fresh(first_pages, 1)


@needs_db_on_delete
def test_db_set_null_invalidates_the_rows_by_the_old_and_the_new_key(library):
    """Through a key with no reverse accessor (related_name='+')."""
    by_shelf = lambda: values(app.Sticker.objects.cache().filter(shelf=1), 'color')  # noqa: E731
    loose = lambda: values(app.Sticker.objects.cache().filter(shelf__isnull=True), 'color')  # noqa: E731
    other_shelf = lambda: values(app.Sticker.objects.cache().filter(shelf=2), 'color')  # noqa: E731
    assert [warm(f) for f in (by_shelf, loose, other_shelf)] == [['red a'], [], ['red b']]
    library['a'].delete()
    fresh(by_shelf, [])
    fresh(loose, ['red a'])
    still_cached(other_shelf, ['red b'])


@needs_db_on_delete
def test_db_set_default_invalidates_the_rows_by_the_old_and_the_new_key():
    if not connection.features.supports_on_delete_db_default:
        pytest.skip('%s has no ON DELETE SET DEFAULT' % connection.display_name)
    spare, shelf = app.Shelf.objects.create(number=99), app.Shelf.objects.create(number=1)
    app.Slot.objects.create(shelf=shelf, num=1)
    by_shelf = lambda: values(app.Slot.objects.cache().filter(shelf=1), 'num')  # noqa: E731
    spares = lambda: values(app.Slot.objects.cache().filter(shelf=spare), 'num')  # noqa: E731
    assert [warm(f) for f in (by_shelf, spares)] == [[1], []]
    shelf.delete()
    fresh(by_shelf, [])
    fresh(spares, [1])


@needs_db_on_delete
def test_a_queryset_delete_invalidates_what_the_database_changed_for_every_row(library):
    books = lambda: app.Book.objects.cache().count()  # noqa: E731
    pages = lambda: app.Page.objects.cache().count()  # noqa: E731
    loose = lambda: values(app.Sticker.objects.cache().filter(shelf__isnull=True), 'color')  # noqa: E731
    assert [warm(f) for f in (books, pages, loose)] == [2, 4, []]
    app.Shelf.objects.filter(number__in=[1, 2]).delete()
    fresh(books, 0)
    fresh(pages, 0)
    fresh(loose, ['red a', 'red b'])


# Fixtures: loaddata saves raw (post_save with raw=True) and, since Django 6.1, sends
# m2m_changed with raw=True too; both invalidate like any other write

@pytest.fixture
def labels():
    return Label.objects.create(pk=9101, text='red'), Label.objects.create(pk=9102, text='blue')


def test_m2m_rows_loaded_from_a_fixture_invalidate_queries_over_the_relation(labels):
    """The fixture saves brand 9001 with labels 9101 and 9102; the queries read the
    relation's table, and not the brands'."""
    through = Brand.labels.through
    brand_labels = lambda: values(Label.objects.cache().filter(brands=9001), 'text')  # noqa: E731
    label_brands = lambda: through.objects.cache().filter(label=9101).count()  # noqa: E731
    assert warm(brand_labels) == []
    assert warm(label_brands) == 0
    call_command('loaddata', 'features_brand', verbosity=0)
    fresh(brand_labels, ['red', 'blue'])
    fresh(label_brands, 1)


def test_rows_loaded_again_from_a_fixture_invalidate_by_their_old_and_new_values(labels):
    """The second fixture renames brand 9001 and label 9101, and takes 9101 off the brand."""
    call_command('loaddata', 'features_brand', verbosity=0)
    named = lambda: Brand.objects.cache().filter(name='acme').count()  # noqa: E731
    red = lambda: values(Label.objects.cache().filter(text='red'), 'pk')  # noqa: E731
    brand_labels = lambda: values(Label.objects.cache().filter(brands=9001), 'pk')  # noqa: E731
    assert [warm(f) for f in (named, red, brand_labels)] == [1, [9101], [9101, 9102]]
    call_command('loaddata', 'features_brand_renamed', verbosity=0)
    fresh(named, 0)
    fresh(red, [])
    fresh(brand_labels, [9102])


# Fetch modes (Django 6.1): a hit gives instances that fetch as a database read's would

def fetching(posts):
    """How reading the posts' categories goes: (titles, queries), or 'blocked'."""
    from django.core.exceptions import FieldFetchBlocked
    try:
        return queries(lambda: [p.category.title for p in posts])
    except FieldFetchBlocked:
        return 'blocked'


@pytest.fixture
def posts():
    for title in ('one', 'two'):
        category = Category.objects.create(title=title)
        for _ in range(2):
            Extra.objects.create(post=Post.objects.create(title=title, category=category))


MODES = ('FETCH_ONE', 'FETCH_PEERS', 'FETCH_RAISE')


@needs_fetch_modes
@pytest.mark.parametrize('stored', MODES)
@pytest.mark.parametrize('read', MODES)
def test_a_hit_fetches_in_the_mode_of_the_queryset_that_reads_it(posts, stored, read):
    """Whichever mode the queryset that stored the result had."""
    def fetch(mode):
        return list(Post.objects.cache().fetch_mode(getattr(models, mode)).order_by('pk'))
    expected = fetching(list(Post.objects.nocache().fetch_mode(getattr(models, read)).order_by('pk')))
    fetch(stored)
    hit, count = queries(lambda: fetch(read))
    assert count == 0
    assert fetching(hit) == expected


@needs_fetch_modes
def test_select_related_instances_of_a_hit_fetch_with_their_peers(posts):
    """Each extra's post comes with it; the posts' categories are fetched together."""
    def extras(qs):
        return list(qs.select_related('post').fetch_mode(models.FETCH_PEERS).order_by('pk'))

    def categories(found):
        return queries(lambda: [e.post.category.title for e in found])
    expected = categories(extras(Extra.objects.nocache()))
    assert expected == (['one', 'one', 'two', 'two'], 1)
    warm(lambda: extras(Extra.objects.cache()))
    assert categories(extras(Extra.objects.cache())) == expected


@needs_fetch_modes
def test_deferred_fields_of_a_hit_follow_its_fetch_mode(posts):
    from django.core.exceptions import FieldFetchBlocked

    def fetch(mode):
        return list(Post.objects.cache().only('title').fetch_mode(mode).order_by('pk'))
    warm(lambda: [p.title for p in fetch(models.FETCH_ONE)])
    assert queries(lambda: [p.text for p in fetch(models.FETCH_PEERS)]) == ([''] * 4, 1)
    with pytest.raises(FieldFetchBlocked):
        fetch(models.FETCH_RAISE)[0].text


@needs_fetch_modes
def test_a_get_hit_follows_the_fetch_mode_of_the_get(posts):
    from django.core.exceptions import FieldFetchBlocked
    first, second = Post.objects.order_by('pk').values_list('pk', flat=True)[:2]
    plain = lambda pk: Post.objects.cache().get(pk=pk)  # noqa: E731
    raising = lambda pk: Post.objects.cache().fetch_mode(models.FETCH_RAISE).get(pk=pk)  # noqa: E731
    warm(lambda: plain(first))
    hit, count = queries(lambda: raising(first))
    assert count == 0
    with pytest.raises(FieldFetchBlocked):
        hit.category
    warm(lambda: raising(second))
    assert queries(lambda: plain(second).category.title) == ('one', 1)


# Composite primary keys (Django 5.2)

@pytest.fixture
def pairs():
    return [app.Pair.objects.create(left=left, right=right, num=left * 10 + right)
            for left, right in ((1, 1), (1, 2), (2, 1))]


@needs_composite_pk
def test_rows_with_a_composite_primary_key_are_cached_by_pk(pairs):
    by_pk = lambda: app.Pair.objects.cache().get(pk=(1, 2)).num  # noqa: E731
    by_columns = lambda: app.Pair.objects.cache().get(left=1, right=2).num  # noqa: E731
    assert warm(by_pk) == 12
    assert warm(by_columns) == 12
    assert warm(lambda: app.Pair.objects.cache().filter(pk=(1, 2)).count()) == 1


@needs_composite_pk
def test_a_saved_row_with_a_composite_primary_key_invalidates(pairs):
    by_pk = lambda: app.Pair.objects.cache().get(pk=(1, 2)).num  # noqa: E731
    lefts = lambda: values(app.Pair.objects.cache().filter(left=1), 'num')  # noqa: E731
    rights = lambda: app.Pair.objects.cache().filter(right=2).count()  # noqa: E731
    nums = lambda: values(app.Pair.objects.cache().filter(num=12), 'right')  # noqa: E731
    assert [warm(f) for f in (by_pk, lefts, rights, nums)] == [12, [11, 12], 1, [2]]
    pairs[1].num = 5
    pairs[1].save()
    fresh(by_pk, 5)
    fresh(lefts, [11, 5])
    fresh(nums, [])
    app.Pair.objects.create(left=3, right=2)
    fresh(rights, 2)


@pytest.mark.parametrize('how', ['instance', 'queryset'])
@needs_composite_pk
def test_a_deleted_row_with_a_composite_primary_key_invalidates(pairs, how):
    by_pk = lambda: app.Pair.objects.cache().filter(pk=(1, 2)).count()  # noqa: E731
    rights = lambda: values(app.Pair.objects.cache().filter(right=2), 'num')  # noqa: E731
    lefts = lambda: app.Pair.objects.cache().filter(left=1).count()  # noqa: E731
    assert [warm(f) for f in (by_pk, rights, lefts)] == [1, [12], 2]
    if how == 'instance':
        pairs[1].delete()
    else:
        app.Pair.objects.filter(num=12).delete()
    fresh(by_pk, 0)
    fresh(rights, [])
    fresh(lefts, 1)
    with pytest.raises(app.Pair.DoesNotExist):
        app.Pair.objects.cache().get(pk=(1, 2))


@needs_composite_pk
def test_an_invalidated_update_of_rows_with_a_composite_primary_key_invalidates(pairs):
    nums = lambda: values(app.Pair.objects.cache().filter(left=1), 'num')  # noqa: E731
    by_num = lambda: app.Pair.objects.cache().filter(num=7).count()  # noqa: E731
    assert [warm(f) for f in (nums, by_num)] == [[11, 12], 0]
    app.Pair.objects.filter(left=1, right=2).invalidated_update(num=7)
    fresh(nums, [11, 7])
    fresh(by_num, 1)


# Subqueries: kept as Query objects in annotations since Django 6.0; tables read only
# there still invalidate

@pytest.mark.parametrize('make', [
    lambda: Category.objects.annotate(first=Subquery(
        Post.objects.filter(category=OuterRef('pk')).order_by('pk').values('title')[:1])),
    lambda: Category.objects.filter(Exists(Post.objects.filter(category=OuterRef('pk')))),
    lambda: Category.objects.filter(pk__in=Post.objects.values('category')),
], ids=['annotation', 'exists', 'in'])
def test_a_table_read_only_in_a_subquery_invalidates(make):
    category = Category.objects.create(title='c')
    read = lambda: [(c.title, getattr(c, 'first', None)) for c in make().cache().order_by('pk')]  # noqa: E731
    warm(read)
    Post.objects.create(title='p', category=category)
    fresh(read, [('c', 'p' if 'first' in make().query.annotations else None)])


@needs_db_on_delete
def test_deleting_many_rows_scans_redis_no_more_than_deleting_one(redis_commands):
    """What the database changed beneath them is invalidated once for all of them."""
    def scans_to_delete(numbers):
        for number in numbers:
            shelf = app.Shelf.objects.create(number=number)
            app.Page.objects.create(book=app.Book.objects.create(shelf=shelf, title=str(number)))
        warm(lambda: values(app.Book.objects.cache().filter(title=str(numbers[0])), 'title'))
        warm(lambda: app.Page.objects.cache().count())
        del redis_commands[:]
        app.Shelf.objects.filter(number__in=numbers).delete()
        return redis_commands.count('SCAN')
    one = scans_to_delete([1])
    assert one >= 1  # the pages: any of them may be gone
    assert scans_to_delete([2, 3, 4]) == one
