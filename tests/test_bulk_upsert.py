"""bulk_create(update_conflicts=True) updates rows in place: their old values are unknown,
so the model is invalidated as a whole."""
import pytest
from django.db import connection

from tests.models import Category, Post

pytestmark = pytest.mark.django_db


def test_upsert_invalidates_queries_by_the_old_values(django_assert_num_queries):
    old, new = Category.objects.create(title='old'), Category.objects.create(title='new')
    post = Post.objects.create(title='p', category=old)
    in_old = lambda: [p.title for p in Post.objects.filter(category=old).cache()]  # noqa: E731
    assert in_old() == ['p']

    target = {'unique_fields': ['id']} if connection.features.supports_update_conflicts_with_target else {}
    Post.objects.bulk_create([Post(pk=post.pk, title='p', category=new)],
                             update_conflicts=True, update_fields=['category'], **target)

    assert Post.objects.nocache().get().category_id == new.pk
    with django_assert_num_queries(1):
        assert in_old() == []
