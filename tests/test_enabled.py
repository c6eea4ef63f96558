"""CACHEOPS_ENABLED=False makes all cacheops methods no-op: every query goes
to the database, nothing is stored, invalidation calls do nothing harmful."""
import pytest
from django.test import override_settings

from cacheops import invalidate_all, invalidate_model, invalidate_obj
from .models import All, Category, Post

pytestmark = pytest.mark.django_db


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_automatic_caching(django_assert_num_queries):
    obj = All.objects.create(tag=1)
    for _ in range(2):
        with django_assert_num_queries(1):
            assert All.objects.get(pk=obj.pk) == obj
        with django_assert_num_queries(1):
            assert list(All.objects.filter(tag=1)) == [obj]
        with django_assert_num_queries(1):
            assert All.objects.count() == 1
        with django_assert_num_queries(1):
            assert All.objects.filter(tag=1).exists()


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_manual_caching(django_assert_num_queries):
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='p', category=cat)
    for _ in range(2):
        with django_assert_num_queries(1):
            assert list(Post.objects.cache().filter(category=cat)) == [post]
        with django_assert_num_queries(1):
            assert Post.objects.cache().get(pk=post.pk) == post


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_invalidation_calls_and_writes_work():
    obj = All.objects.create(tag=1)
    obj.tag = 2
    obj.save()
    invalidate_obj(obj)
    invalidate_model(All)
    invalidate_all()
    obj.delete()
    assert All.objects.count() == 0


def test_nothing_is_stored_while_disabled(django_assert_num_queries):
    obj = All.objects.create(tag=1)
    with override_settings(CACHEOPS_ENABLED=False):
        assert list(All.objects.filter(tag=1)) == [obj]
    with django_assert_num_queries(1):
        assert list(All.objects.filter(tag=1)) == [obj]
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=1)) == [obj]
