"""The async ORM API (aget, acount, aexists, aaggregate, async for, asave, adelete)
goes through the same cache and invalidation as the sync one."""
import pytest
from asgiref.sync import async_to_sync
from django.db.models import Max

from tests.models import Category, Post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def post():
    return Post.objects.create(title='a', category=Category.objects.create(title='c'))


def read(post):
    """Every async read op, each on its own queryset so that none answers from another's results."""
    def in_category():
        return Post.objects.cache().filter(category_id=post.category_id)

    async def ops():
        got = await Post.objects.cache().filter(pk=post.pk).afirst()
        return (
            (await Post.objects.cache().aget(pk=post.pk)).title,
            got.title if got else None,
            [p.title async for p in in_category()],
            await in_category().acount(),
            await in_category().aexists(),
            await in_category().aaggregate(m=Max('id')),
        )
    return async_to_sync(ops)()


def test_async_reads_hit_the_cache(post, django_assert_num_queries):
    with django_assert_num_queries(6):
        first = read(post)
    with django_assert_num_queries(0):
        assert read(post) == first == ('a', 'a', ['a'], 1, True, {'m': post.pk})


def test_async_writes_invalidate(post, django_assert_num_queries):
    read(post)
    post.title = 'b'
    async_to_sync(post.asave)()
    with django_assert_num_queries(6):
        assert read(post) == ('b', 'b', ['b'], 1, True, {'m': post.pk})

    pk = post.pk
    async_to_sync(post.adelete)()
    post.pk = pk
    with django_assert_num_queries(2):  # afirst() finds nothing, then aget() raises
        with pytest.raises(Post.DoesNotExist):
            read(post)
