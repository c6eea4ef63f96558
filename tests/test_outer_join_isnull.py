"""isnull=True on a LEFT OUTER joined table matches rows that are missing there, so it
must not narrow invalidation: adding the missing row changes the result."""
import pytest

from cacheops.tree import dnfs
from tests.models import Category, Extra, Post

pytestmark = pytest.mark.django_db


def test_outer_join_isnull_does_not_narrow():
    qs = Post.objects.filter(extra__isnull=True)
    assert dnfs(qs)['tests_extra'] == [{}]


def test_adding_the_missing_row_invalidates(django_assert_num_queries):
    post = Post.objects.create(title='p', category=Category.objects.create(title='c'))
    without_extra = lambda: [p.title for p in Post.objects.filter(extra__isnull=True).cache()]  # noqa: E731
    assert without_extra() == ['p']
    Extra.objects.create(post=post, tag=1)
    with django_assert_num_queries(1):
        assert without_extra() == []
