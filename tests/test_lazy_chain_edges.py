"""Recorded queryset calls (cacheops/chain.py) at their edges: threads sharing a queryset,
names an annotation shadows, Django 6.1's cloning switch, querysets without a model,
pickling. Found by review; each test failed before its fix."""
import pickle

import django
import pytest
from django.db.models import Count, QuerySet

from cacheops import chain

from .models import Category, Post
from .utils import Worker, queries, warm

pytestmark = pytest.mark.django_db


def test_a_derivation_racing_the_first_build_keeps_the_recorded_calls(monkeypatch):
    """A shared queryset (a module-level one, a view's class-level queryset): one thread
    derives from it while another builds its query, landing inside the derivation."""
    category = Category.objects.create(title='c')
    Post.objects.create(title='hidden', category=category, visible=False)
    shared = Post.objects.filter(visible=True)
    assert shared._pending
    original = chain._django['QuerySet._clone']

    def clone_then_other_thread_builds(qs):
        clone = original(qs)
        if qs is shared:
            other = Worker(lambda: shared.query)
            other.start()
            other.join()
        return clone

    monkeypatch.setitem(chain._django, 'QuerySet._clone', clone_then_other_thread_builds)
    derived = shared.all()
    monkeypatch.undo()
    assert 'WHERE' in str(shared.query)
    assert 'WHERE' in str(derived.query)
    assert [p.title for p in derived] == []


def test_an_annotation_named_like_a_field_raises_at_the_call():
    base = Post.objects.values('id').annotate(title=Count('id')).all()
    with pytest.raises(ValueError):  # as in Django: the annotation is an integer
        base.filter(title='abc')


@pytest.mark.skipif(django.VERSION < (6, 1), reason='_avoid_cloning() is new in Django 6.1')
@pytest.mark.parametrize('call', [
    lambda qs: qs.filter(title='a'),
    lambda qs: qs.order_by('-title'),
    lambda qs: qs[:1],
], ids=['filter', 'order_by', 'slice'])
def test_calls_with_cloning_avoided_change_the_queryset_itself(call):
    qs = Post.objects.all()
    with qs._avoid_cloning():
        assert call(qs) is qs


@pytest.mark.parametrize('call', [
    lambda qs: qs.all(),
    lambda qs: qs.order_by(),
    lambda qs: qs[:1],
], ids=['all', 'order_by', 'slice'])
def test_a_queryset_without_a_model_clones(call):
    call(QuerySet())


def test_a_pickled_queryset_carries_its_query_built_and_keeps_its_key():
    category = Category.objects.create(title='c')
    Post.objects.create(title='a', category=category)
    qs = Post.objects.cache().filter(category=category.pk).order_by('-title')[:5]
    key = qs._cache_key()
    state = qs.__getstate__()
    assert state['_pending'] == () and 'WHERE' in str(state['_query'])
    assert qs._pending and qs._cache_key() == key
    again = pickle.loads(pickle.dumps(qs))
    assert [p.title for p in again] == ['a']
    assert str(again.query) == str(qs.query)


@pytest.mark.skipif(django.VERSION < (6, 1), reason='fetch modes are new in Django 6.1')
def test_instances_read_from_the_cache_fetch_with_their_peers():
    from django.db.models import FETCH_PEERS
    for title in ('one', 'two'):
        category = Category.objects.create(title=title)
        Post.objects.create(title='a', category=category)
        Post.objects.create(title='b', category=category)

    def posts():
        return list(Post.objects.cache().fetch_mode(FETCH_PEERS).order_by('pk'))
    warm(posts)
    hit = posts()
    # the first post's category is fetched with its peers', in one query
    assert queries(lambda: [p.category.title for p in hit]) == (['one', 'one', 'two', 'two'], 1)


def test_a_count_whose_ordering_does_not_compile_is_counted_as_in_django():
    category = Category.objects.create(title='c')
    Post.objects.create(title='a', category=category)
    assert Post.objects.order_by('category__nope').cache().count() == 1
    assert Post.objects.order_by('title__lower').cache().count() == 1
