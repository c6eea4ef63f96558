"""cache_read is sent after each cache lookup (sender=model, func=None for
querysets, hit=bool); cache_invalidated after object, model or global
invalidation (sender, obj_dict): once per create/delete, twice per update
(old and new object dicts)."""
import pytest

from cacheops import invalidate_all, invalidate_model, invalidate_obj
from cacheops.signals import cache_invalidated, cache_read
from .models import All, Category, Post

pytestmark = pytest.mark.django_db


@pytest.fixture
def reads():
    calls = []

    def receiver(sender, **kwargs):
        calls.append(dict(kwargs, sender=sender))
    cache_read.connect(receiver)
    yield calls
    cache_read.disconnect(receiver)


@pytest.fixture
def invalidations():
    calls = []

    def receiver(sender, **kwargs):
        calls.append(dict(kwargs, sender=sender))
    cache_invalidated.connect(receiver)
    yield calls
    cache_invalidated.disconnect(receiver)


def simplified(calls, *keys):
    return [tuple(c[k] for k in keys) for c in calls]


def test_cache_read_miss_then_hit(reads):
    All.objects.create(tag=1)
    list(All.objects.filter(tag=1))
    list(All.objects.filter(tag=1))
    assert simplified(reads, 'sender', 'func', 'hit') == [(All, None, False), (All, None, True)]


def test_cache_read_for_get_and_manual_cache(reads):
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='p', category=cat)
    Post.objects.cache().get(pk=post.pk)
    Post.objects.cache().get(pk=post.pk)
    assert simplified(reads, 'sender', 'func', 'hit') == [(Post, None, False), (Post, None, True)]


def test_no_cache_read_for_uncached_queries(reads):
    cat = Category.objects.create(title='c')
    list(Category.objects.all())
    list(All.objects.nocache())
    Category.objects.get(pk=cat.pk)
    assert reads == []


def test_cache_read_after_invalidation_is_a_miss(reads):
    obj = All.objects.create(tag=1)
    list(All.objects.filter(tag=1))
    obj.save()
    list(All.objects.filter(tag=1))
    assert [c['hit'] for c in reads] == [False, False]


def test_cache_invalidated_on_create(invalidations):
    cat = Category.objects.create(title='c')
    post_calls = lambda: [c for c in invalidations if c['sender'] is Post]
    del invalidations[:]
    post = Post.objects.create(title='p', category=cat)
    calls = post_calls()
    assert len(calls) == 1
    obj_dict = calls[0]['obj_dict']
    assert obj_dict['id'] == post.pk
    assert obj_dict['title'] == 'p'
    assert obj_dict['category_id'] == cat.pk


def test_cache_invalidated_on_update_with_old_and_new(invalidations):
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='old', category=cat)
    del invalidations[:]
    post.title = 'new'
    post.save()
    calls = [c for c in invalidations if c['sender'] is Post]
    assert len(calls) == 2
    assert sorted(c['obj_dict']['title'] for c in calls) == ['new', 'old']
    assert all(c['obj_dict']['id'] == post.pk for c in calls)


def test_cache_invalidated_on_delete(invalidations):
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='p', category=cat)
    pk = post.pk
    del invalidations[:]
    post.delete()
    calls = [c for c in invalidations if c['sender'] is Post]
    assert len(calls) == 1
    assert calls[0]['obj_dict']['id'] == pk
    assert calls[0]['obj_dict']['title'] == 'p'


def test_cache_invalidated_by_api(invalidations):
    obj = All.objects.create(tag=3)
    del invalidations[:]
    invalidate_obj(obj)
    assert [(c['sender'], c['obj_dict']['tag']) for c in invalidations if c['sender'] is All] == [(All, 3)]
    del invalidations[:]
    invalidate_model(All)
    assert [(c['sender'], c['obj_dict']) for c in invalidations if c['sender'] is All] == [(All, None)]
    del invalidations[:]
    invalidate_all()
    assert simplified(invalidations, 'sender', 'obj_dict') == [(None, None)]
