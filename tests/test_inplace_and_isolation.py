"""inplace() querysets change themselves but never serve results of an older query;
transactions that read a snapshot bypass the cache."""
import pytest
from django.db import connection, transaction

from cacheops import cached_as
from tests.models import Category, Post
from tests.utils import Worker


@pytest.fixture
def cats():
    one, two = Category.objects.create(title='one'), Category.objects.create(title='two')
    Post.objects.create(title='a', category=one)
    Post.objects.create(title='b', category=two)
    return one, two


@pytest.mark.django_db
def test_inplace_filter_changes_the_queryset_and_its_results(cats):
    qs = Post.objects.inplace().cache().order_by('title')
    assert [p.title for p in qs] == ['a', 'b']
    assert qs.filter(category=cats[0]) is qs
    assert [p.title for p in qs] == ['a']


@pytest.mark.django_db
def test_get_does_not_narrow_an_inplace_queryset(cats):
    qs = Post.objects.inplace().cache()
    assert qs.get(title='a').category == cats[0]
    assert qs.get(title='b').category == cats[1]
    assert qs.count() == 2


def _snapshot_options():
    options = dict(connection.settings_dict.get('OPTIONS', {}))
    if connection.vendor == 'postgresql':
        from django.db.backends.postgresql.psycopg_any import IsolationLevel
        options['isolation_level'] = IsolationLevel.REPEATABLE_READ
    else:
        options['isolation_level'] = 'repeatable read'
    return options


def _in_one_queryset(cats):
    return [p.title for p in Post.objects.filter(category=cats[0]).cache()]


def _in_one_cached_as(cats):
    @cached_as(Post.objects.filter(category=cats[0]))
    def titles():
        return [p.title for p in Post.objects.filter(category=cats[0])]
    return titles()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == 'sqlite', reason='SQLite has no isolation levels to set')
@pytest.mark.parametrize('in_one', [_in_one_queryset, _in_one_cached_as])
def test_repeatable_read_transaction_does_not_store_its_snapshot(cats, in_one):
    options = connection.settings_dict.get('OPTIONS', {})
    connection.close()
    connection.settings_dict['OPTIONS'] = _snapshot_options()
    try:
        with transaction.atomic():
            Category.objects.count()  # the snapshot is taken here

            def writer():
                Post.objects.filter(title='a').get().delete()
                connection.close()
            thread = Worker(writer)
            thread.start()
            thread.join()
            assert in_one(cats) == ['a']  # the snapshot, which must not be stored
        assert in_one(cats) == []
    finally:
        connection.close()
        connection.settings_dict['OPTIONS'] = options
