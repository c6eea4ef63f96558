"""Manual invalidation: invalidate_obj, invalidate_dict, invalidate_model,
invalidate_all. Mass updates don't invalidate, so they are used here to make
the cache stale on purpose."""
import pytest
from django.db import connection

from cacheops import invalidate_all, invalidate_dict, invalidate_model, invalidate_obj
from .models import All, Category, Post
from .utils import unseen_update, warm

pytestmark = pytest.mark.django_db


@pytest.fixture
def cats():
    return Category.objects.create(title='one'), Category.objects.create(title='two')


@pytest.fixture
def posts(cats):
    return Post.objects.create(title='a', category=cats[0]), Post.objects.create(title='b', category=cats[1])


def texts_in(cat):
    return [p.text for p in Post.objects.cache().filter(category=cat)]


def test_invalidate_obj(cats, posts, django_assert_num_queries):
    assert warm(lambda: texts_in(cats[0])) == ['']
    assert warm(lambda: texts_in(cats[1])) == ['']
    unseen_update(Post.objects.filter(pk=posts[0].pk), text='changed')
    with django_assert_num_queries(0):
        assert texts_in(cats[0]) == ['']  # stale, a mass update doesn't invalidate
    invalidate_obj(posts[0])
    with django_assert_num_queries(1):
        assert texts_in(cats[0]) == ['changed']
    with django_assert_num_queries(0):
        assert texts_in(cats[1]) == ['']


def test_invalidate_obj_for_automatically_cached_get(django_assert_num_queries):
    obj = All.objects.create(tag=1, title='old')
    assert warm(lambda: All.objects.get(pk=obj.pk).title) == 'old'
    unseen_update(All.objects.filter(pk=obj.pk), title='new')
    with django_assert_num_queries(0):
        assert All.objects.get(pk=obj.pk).title == 'old'
    invalidate_obj(obj)
    with django_assert_num_queries(1):
        assert All.objects.get(pk=obj.pk).title == 'new'


def test_invalidate_dict(cats, posts, django_assert_num_queries):
    assert warm(lambda: texts_in(cats[0])) == ['']
    assert warm(lambda: texts_in(cats[1])) == ['']
    unseen_update(Post.objects, text='changed')
    invalidate_dict(Post, {'category_id': cats[0].pk})
    with django_assert_num_queries(1):
        assert texts_in(cats[0]) == ['changed']
    with django_assert_num_queries(0):
        assert texts_in(cats[1]) == ['']


def test_invalidate_dict_from_invalidation_module(cats, posts, django_assert_num_queries):
    from cacheops.invalidation import invalidate_dict as invalidate_dict_
    assert warm(lambda: texts_in(cats[1])) == ['']
    unseen_update(Post.objects, text='changed')
    invalidate_dict_(Post, {'id': posts[1].pk, 'category_id': cats[1].pk, 'title': 'b'})
    with django_assert_num_queries(1):
        assert texts_in(cats[1]) == ['changed']


def test_invalidate_model(cats, posts, django_assert_num_queries):
    assert warm(lambda: texts_in(cats[0])) == ['']
    assert warm(lambda: texts_in(cats[1])) == ['']
    assert warm(lambda: Post.objects.cache().count()) == 2
    assert warm(lambda: [c.title for c in Category.objects.cache().filter(title='one')]) == ['one']
    unseen_update(Post.objects, text='changed')
    invalidate_model(Post)
    with django_assert_num_queries(1):
        assert texts_in(cats[0]) == ['changed']
    with django_assert_num_queries(1):
        assert texts_in(cats[1]) == ['changed']
    with django_assert_num_queries(1):
        assert Post.objects.cache().count() == 2
    with django_assert_num_queries(0):
        assert [c.title for c in Category.objects.cache().filter(title='one')] == ['one']


def test_invalidate_all(cats, posts, django_assert_num_queries):
    All.objects.create(tag=1)
    assert warm(lambda: texts_in(cats[0])) == ['']
    assert warm(lambda: [c.title for c in Category.objects.cache().filter(title='one')]) == ['one']
    assert warm(lambda: All.objects.filter(tag=1).count()) == 1
    # mass updates: nothing is invalidated yet
    unseen_update(Post.objects, text='changed')
    unseen_update(Category.objects.filter(title='one'), title='uno')
    unseen_update(All.objects, tag=2)
    with django_assert_num_queries(0):
        assert All.objects.filter(tag=1).count() == 1
    invalidate_all()
    with django_assert_num_queries(1):
        assert texts_in(cats[0]) == ['changed']
    with django_assert_num_queries(1):
        assert list(Category.objects.cache().filter(title='one')) == []
    with django_assert_num_queries(1):
        assert All.objects.filter(tag=1).count() == 0


def test_invalidate_dict_lacking_a_column_matches_any_value_there(cats, django_assert_num_queries):
    def titled(category, title):
        return [p.pk for p in Post.objects.cache().filter(category=category, title=title)]
    # glob characters in a value must match themselves only: 'a*[x]?' would match 'abxc'
    for category in cats[:2]:
        for title in ('a*[x]?', 'abxc'):
            warm(lambda: titled(category, title))
    invalidate_dict(Post, {'title': 'a*[x]?'})  # no category_id: any category
    with django_assert_num_queries(2):
        titled(cats[0], 'a*[x]?')
        titled(cats[1], 'a*[x]?')
    # on MySQL string conditions don't narrow: any title of any category then
    with django_assert_num_queries(2 if connection.vendor == 'mysql' else 0):
        titled(cats[0], 'abxc')
        titled(cats[1], 'abxc')
    invalidate_dict(Post, {'category_id': cats[1].pk})  # no title: any title
    with django_assert_num_queries(1):
        titled(cats[1], 'abxc')
    with django_assert_num_queries(0):
        titled(cats[0], 'abxc')
