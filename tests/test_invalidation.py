"""Event-driven invalidation on Model.save() (create and update), .delete(),
bulk_create and cascade deletes. An update invalidates by the old and the new
values of the row; old values come from the database."""
from unittest import mock

import pytest
from django.test import override_settings

from cacheops import invalidation
from .models import All, Category, Extra, Post
from .utils import unseen_update, warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def cats():
    return Category.objects.create(title='one'), Category.objects.create(title='two')


def posts_in(category):
    pk = category.pk if isinstance(category, Category) else category
    return [p.title for p in Post.objects.cache().filter(category_id=pk).order_by('pk')]


def test_create_invalidates(cats, django_assert_num_queries):
    Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    Post.objects.create(title='b', category=cats[0])
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['a', 'b']
    with django_assert_num_queries(0):
        assert posts_in(cats[0]) == ['a', 'b']


def test_save_of_new_instance_invalidates(cats, django_assert_num_queries):
    assert warm(lambda: posts_in(cats[0])) == []
    post = Post(title='a', category=cats[0])
    post.save()
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['a']


def test_update_invalidates(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    post.title = 'b'
    post.save()
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['b']


def test_update_with_update_fields_invalidates(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    post.title = 'b'
    post.save(update_fields=['title'])
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['b']


def test_delete_invalidates(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    Post.objects.create(title='b', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a', 'b']
    post.delete()
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['b']


def test_queryset_delete_invalidates(cats, django_assert_num_queries):
    Post.objects.create(title='a', category=cats[0])
    Post.objects.create(title='b', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a', 'b']
    Post.objects.filter(title='a').delete()
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['b']


def test_get_is_invalidated(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: Post.objects.cache().get(pk=post.pk).title) == 'a'
    post.title = 'b'
    post.save()
    with django_assert_num_queries(1):
        assert Post.objects.cache().get(pk=post.pk).title == 'b'


def test_count_is_invalidated_on_delete(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: Post.objects.cache().filter(category=cats[0]).count()) == 1
    post.delete()
    with django_assert_num_queries(1):
        assert Post.objects.cache().filter(category=cats[0]).count() == 0


def test_update_invalidates_by_old_and_new_values(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    assert warm(lambda: posts_in(cats[1])) == []
    post.category = cats[1]
    post.save()
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == []
    with django_assert_num_queries(1):
        assert posts_in(cats[1]) == ['a']


def test_update_by_fresh_instance_invalidates_old_values(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    # An instance that never saw the old value
    fresh = Post(pk=post.pk, title='a', category=cats[1])
    fresh.save()
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == []
    with django_assert_num_queries(1):
        assert posts_in(cats[1]) == ['a']


def test_old_values_are_read_from_db_not_from_cache(cats, django_assert_num_queries):
    third = Category.objects.create(title='three')
    post = Post.objects.create(title='a', category=cats[0])
    # cache the instance while it is in the first category
    assert Post.objects.cache().get(pk=post.pk).category_id == cats[0].pk
    # a write the cache is not told of moves it, the cached get is now stale
    unseen_update(Post.objects.filter(pk=post.pk), category=cats[1])
    assert warm(lambda: posts_in(cats[1])) == ['a']
    stale = Post.objects.cache().get(pk=post.pk)
    assert stale.category_id == cats[0].pk
    # saving the stale instance into the third category must invalidate
    # by the value in the database (second category), not the cached one
    stale.category = third
    stale.save()
    with django_assert_num_queries(1):
        assert posts_in(cats[1]) == []
    with django_assert_num_queries(1):
        assert posts_in(third) == ['a']


def test_deferred_fields_are_not_fetched_on_save(cats, django_assert_max_num_queries,
                                                   django_assert_num_queries):
    Post.objects.create(title='a', category=cats[0], text='long text')
    assert warm(lambda: posts_in(cats[0])) == ['a']
    assert [p.pk for p in Post.objects.cache().filter(title='a')]
    post = Post.objects.defer('text').get(title='a')
    assert post.get_deferred_fields() == {'text'}
    post.title = 'b'
    post.category = cats[1]
    # at most one read of old values and the UPDATE itself
    with django_assert_max_num_queries(2):
        post.save()
    assert post.get_deferred_fields() == {'text'}
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == []
    with django_assert_num_queries(1):
        assert posts_in(cats[1]) == ['b']
    with django_assert_num_queries(1):
        assert list(Post.objects.cache().filter(title='a')) == []
    assert Post.objects.nocache().get(pk=post.pk).text == 'long text'


def test_bulk_create_invalidates(cats, django_assert_num_queries):
    assert warm(lambda: posts_in(cats[0])) == []
    assert warm(lambda: Post.objects.cache().count()) == 0
    Post.objects.bulk_create([Post(title='a', category=cats[0]), Post(title='b', category=cats[0])])
    with django_assert_num_queries(1):
        assert posts_in(cats[0]) == ['a', 'b']
    with django_assert_num_queries(1):
        assert Post.objects.cache().count() == 2


def test_bulk_create_invalidates_automatic_caching(django_assert_num_queries):
    assert warm(lambda: list(All.objects.filter(tag=1))) == []
    All.objects.bulk_create([All(tag=1), All(tag=1)])
    with django_assert_num_queries(1):
        assert len(list(All.objects.filter(tag=1))) == 2


def test_cascade_delete_invalidates_dependent_queries(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    Extra.objects.create(post=post, tag=5)
    cat_pk = cats[0].pk
    assert warm(lambda: posts_in(cat_pk)) == ['a']
    assert warm(lambda: [p.title for p in Post.objects.cache().filter(title='a')]) == ['a']
    assert warm(lambda: [e.tag for e in Extra.objects.cache().filter(tag=5)]) == [5]
    cats[0].delete()
    with django_assert_num_queries(1):
        assert posts_in(cat_pk) == []
    with django_assert_num_queries(1):
        assert list(Post.objects.cache().filter(title='a')) == []
    with django_assert_num_queries(1):
        assert list(Extra.objects.cache().filter(tag=5)) == []


def test_set_null_on_delete_invalidates_queries_by_the_deleted_key(cats, django_assert_num_queries):
    from .models import Task
    Task.objects.create(title='t', category=cats[0])
    cat_pk = cats[0].pk
    assert warm(lambda: [t.title for t in Task.objects.cache().filter(category_id=cat_pk)]) == ['t']
    cats[0].delete()  # Django sets Task.category to NULL with a mass UPDATE
    with django_assert_num_queries(1):
        assert list(Task.objects.cache().filter(category_id=cat_pk)) == []


def test_unrelated_model_change_does_not_invalidate(cats, django_assert_num_queries):
    Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    All.objects.create(tag=1)
    Extra.objects.create(post=Post.objects.get(), tag=1)
    with django_assert_num_queries(0):
        assert posts_in(cats[0]) == ['a']


@override_settings(CACHEOPS_INVALIDATE_UPDATES=False)
def test_mass_update_with_the_setting_off_does_not_invalidate(cats, django_assert_num_queries):
    Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    Post.objects.filter(title='a').update(title='b')
    with django_assert_num_queries(0):
        assert posts_in(cats[0]) == ['a']


def test_bulk_create_of_equal_clock_times_in_a_repeated_hour_invalidates_both_instants():
    """01:30 in Chicago on 2024-11-03 comes twice (fold 0 and 1): equal as Python compares
    them, an hour apart as instants."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    from .models import Assorted
    chicago = ZoneInfo('America/Chicago')
    early, late = datetime(2024, 11, 3, 1, 30, tzinfo=chicago), datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=chicago)

    def labels(when):
        return list(Assorted.objects.cache().filter(datetime=when).values_list('label', flat=True))
    assert warm(lambda: labels(late)) == []
    Assorted.objects.bulk_create([Assorted(label='a', datetime=early), Assorted(label='b', datetime=late)])
    assert labels(late) == ['b']


# Test suites patch cacheops.query.invalidate_dict, looked up when a model event
# invalidates, and expect a call per row: the new row of a create, the old and the new
# rows of a save that changes values, the row of a delete

def test_model_events_invalidate_through_query_invalidate_dict(cats):
    with mock.patch('cacheops.query.invalidate_dict', wraps=invalidation.invalidate_dict) as spy:
        post = Post.objects.create(title='a', category=cats[0])
        post.category = cats[1]
        post.save()
        post.delete()
    calls = [(args[0], args[1]['category_id'], kwargs) for args, kwargs in spy.call_args_list]
    using = {'using': 'default'}
    assert calls == [(Post, cats[0].pk, using),  # created
                     (Post, cats[0].pk, using), (Post, cats[1].pk, using),  # saved
                     (Post, cats[1].pk, using)]  # deleted


def test_a_patched_invalidate_dict_is_all_a_save_invalidates_by(cats, django_assert_num_queries):
    post = Post.objects.create(title='a', category=cats[0])
    assert warm(lambda: posts_in(cats[0])) == ['a']
    with mock.patch('cacheops.query.invalidate_dict'):
        post.category = cats[1]
        post.save()
    with django_assert_num_queries(0):
        assert posts_in(cats[0]) == ['a']  # stale: the patch took the invalidation
