"""no_invalidation: a context manager and a decorator turning invalidation off in the
current thread, nestable, inside transactions too; with try/finally it postpones
invalidation. While it is on, writes leave cached results stale on purpose. It is the
current context's (a ContextVar), so it covers asave() and stays in its coroutine."""
import asyncio

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.http import HttpResponse
from django.test import AsyncClient, override_settings
from django.urls import path

from cacheops import invalidate_all, invalidate_model, invalidate_obj, no_invalidation
from .models import Category, Post
from .utils import Worker, queries, unseen_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def cat():
    return Category.objects.create(title='c')


def titles(cat):
    return [p.title for p in Post.objects.cache().filter(category=cat).order_by('pk')]


def warm(cat):
    """Cache titles(cat) and prove it is cached."""
    result = titles(cat)
    assert queries(lambda: titles(cat)) == (result, 0)
    return result


def test_context_manager(cat):
    warm(cat)
    with no_invalidation:
        Post.objects.create(title='a', category=cat)
    assert queries(lambda: titles(cat)) == ([], 0)  # stale: nothing was invalidated
    Post.objects.create(title='b', category=cat)  # invalidates again
    assert queries(lambda: titles(cat)) == (['a', 'b'], 1)


def test_decorator(cat):
    @no_invalidation
    def add(title):
        """Adds a post."""
        return Post.objects.create(title=title, category=cat)

    warm(cat)
    assert add('a').title == 'a'
    assert add.__name__ == 'add' and add.__doc__ == 'Adds a post.'
    assert queries(lambda: titles(cat)) == ([], 0)
    Post.objects.create(title='b', category=cat)
    assert queries(lambda: titles(cat)) == (['a', 'b'], 1)


def test_nested(cat):
    warm(cat)
    with no_invalidation:
        with no_invalidation:
            Post.objects.create(title='a', category=cat)
        Post.objects.create(title='b', category=cat)  # still off: the outer block is open
    assert queries(lambda: titles(cat)) == ([], 0)
    Post.objects.create(title='c', category=cat)
    assert queries(lambda: titles(cat)) == (['a', 'b', 'c'], 1)


def test_save_update_delete_and_m2o_are_all_off(cat):
    post = Post.objects.create(title='a', category=cat)
    warm(cat)
    with no_invalidation:
        post.title = 'b'
        post.save()
        Post.objects.create(title='c', category=cat)
        post.delete()
        Post.objects.bulk_create([Post(title='d', category=cat)])
    assert queries(lambda: titles(cat)) == (['a'], 0)


def test_explicit_invalidation_calls_are_off_too(cat):
    post = Post.objects.create(title='a', category=cat)
    warm(cat)
    unseen_update(Post.objects, title='b')
    with no_invalidation:
        invalidate_obj(post)
        invalidate_model(Post)
        invalidate_all()
    assert queries(lambda: titles(cat)) == (['a'], 0)


def test_an_exception_leaves_it_off_no_longer(cat):
    warm(cat)
    with pytest.raises(ZeroDivisionError):
        with no_invalidation:
            1 / 0
    Post.objects.create(title='a', category=cat)
    assert queries(lambda: titles(cat)) == (['a'], 1)


def test_postponing_with_try_finally(cat):
    warm(cat)
    other = Category.objects.create(title='other')
    assert warm(other) == []
    with pytest.raises(RuntimeError):
        try:
            with no_invalidation:
                Post.objects.create(title='a', category=cat)
                assert queries(lambda: titles(cat)) == ([], 0)
                raise RuntimeError('the batch job fails half-way')
        finally:
            invalidate_model(Post)
    assert queries(lambda: titles(cat)) == (['a'], 1)
    assert queries(lambda: titles(other)) == ([], 1)


def test_postponing_by_object(cat):
    post = Post.objects.create(title='a', category=cat)
    warm(cat)
    other = Category.objects.create(title='other')
    assert warm(other) == []
    try:
        with no_invalidation:
            post.title = 'b'
            post.save()
    finally:
        invalidate_obj(post)
    assert queries(lambda: titles(cat)) == (['b'], 1)
    assert queries(lambda: titles(other)) == ([], 0)  # invalidate_obj stays granular


@pytest.mark.django_db(transaction=True)
def test_only_the_current_thread(cat):
    warm(cat)
    done = []

    def write():
        try:
            Post.objects.create(title='a', category=cat)
            done.append(True)
        finally:
            connection.close()

    with no_invalidation:
        thread = Worker(write)
        thread.start()
        thread.join()
    assert done == [True]
    assert queries(lambda: titles(cat)) == (['a'], 1)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction(cat):
    warm(cat)
    with transaction.atomic():
        with no_invalidation:
            Post.objects.create(title='a', category=cat)
    assert queries(lambda: titles(cat)) == ([], 0)
    # a write outside the block, in the same transaction, is invalidated at commit
    with transaction.atomic():
        with no_invalidation:
            Post.objects.create(title='b', category=cat)
        Post.objects.create(title='c', category=cat)
        assert queries(lambda: titles(cat)) == (['a', 'b', 'c'], 1)  # dirty: no cache
    assert queries(lambda: titles(cat)) == (['a', 'b', 'c'], 1)


@pytest.mark.django_db(transaction=True)
def test_a_commit_inside_the_block_still_invalidates_writes_made_outside_it(cat):
    warm(cat)
    atomic = transaction.atomic()
    atomic.__enter__()
    try:
        Post.objects.create(title='a', category=cat)  # queued for the commit
    finally:
        with no_invalidation:
            atomic.__exit__(None, None, None)
    assert queries(lambda: titles(cat)) == (['a'], 1)


@pytest.mark.django_db(transaction=True)
def test_a_whole_transaction_inside_the_block(cat):
    warm(cat)
    with no_invalidation:
        with transaction.atomic():
            Post.objects.create(title='a', category=cat)
            with transaction.atomic():  # a savepoint
                Post.objects.create(title='b', category=cat)
    assert queries(lambda: titles(cat)) == ([], 0)


# Async code (issue 18, finding 8): the block is the current context's, as a ContextVar:
# asave() runs save() in a worker thread with a copy of the context, and two coroutines
# on one loop (one thread) each have their own

async def quiet_rename(request, pk):
    post = await Post.objects.nocache().aget(pk=pk)
    post.title = 'quiet'
    with no_invalidation:
        await post.asave()
    return HttpResponse(post.title)


async def loud_rename(request, pk):
    post = await Post.objects.nocache().aget(pk=pk)
    post.title = 'loud'
    await post.asave()
    return HttpResponse(post.title)


urlpatterns = [
    path('quiet/<int:pk>/', quiet_rename),
    path('loud/<int:pk>/', loud_rename),
]


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF=__name__)
def test_no_invalidation_covers_asave_in_an_async_view(cat):
    post = Post.objects.create(title='a', category=cat)
    warm(cat)

    @async_to_sync
    async def get(url):
        return (await AsyncClient().get(url)).content

    assert get('/quiet/%d/' % post.pk) == b'quiet'
    assert queries(lambda: titles(cat)) == (['a'], 0)  # left stale on purpose
    assert get('/loud/%d/' % post.pk) == b'loud'
    assert queries(lambda: titles(cat)) == (['loud'], 1)


@pytest.mark.django_db(transaction=True)
def test_no_invalidation_covers_asave(cat):
    post = Post.objects.create(title='a', category=cat)
    warm(cat)

    async def rename():
        post.title = 'b'
        with no_invalidation:
            await post.asave()
    async_to_sync(rename)()
    assert queries(lambda: titles(cat)) == (['a'], 0)


@pytest.mark.django_db(transaction=True)
def test_no_invalidation_does_not_leak_to_another_coroutine(cat):
    """One coroutine inside the block while another, on the same loop and thread,
    invalidates: the other's invalidation runs."""
    post = Post.objects.create(title='a', category=cat)
    warm(cat)
    unseen_update(Post.objects.filter(pk=post.pk), title='b')

    async def both():
        entered, done = asyncio.Event(), asyncio.Event()

        async def quiet():
            with no_invalidation:
                entered.set()
                await done.wait()
                assert no_invalidation.active

        async def loud():
            await entered.wait()
            assert not no_invalidation.active
            invalidate_obj(post)
            done.set()
        await asyncio.gather(quiet(), loud())
    async_to_sync(both)()
    assert queries(lambda: titles(cat)) == (['b'], 1)


@pytest.mark.django_db(transaction=True)
def test_no_invalidation_decorates_a_coroutine_function(cat):
    post = Post.objects.create(title='a', category=cat)
    warm(cat)

    @no_invalidation
    async def rename():
        """Renames."""
        post.title = 'b'
        await post.asave()
    assert rename.__doc__ == 'Renames.'
    async_to_sync(rename)()
    assert queries(lambda: titles(cat)) == (['a'], 0)
    assert not no_invalidation.active
