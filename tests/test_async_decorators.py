"""@cached_as, @cached, @cached_view_as and @cached_view on `async def` functions and views:
the awaited result is cached (before, the coroutine itself was pickled, or its view
wrapper asked it for a status_code), a hit is read in the event loop, and Django sees
the wrapped views as async. Views run through Django's AsyncClient."""
import asyncio

import pytest
from asgiref.sync import iscoroutinefunction
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.test import AsyncClient
from django.urls import path

from cacheops import cached, cached_as, cached_view, cached_view_as
from tests.models import Category, Post
from tests.test_async import Reads, assert_read_in_loop, in_loop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

calls = []


@cached_as(Post)
async def post_titles(prefix):
    calls.append('titles')
    await asyncio.sleep(0)
    return [prefix + p.title async for p in Post.objects.nocache().order_by('pk')]


@cached(timeout=60)
async def doubled(n):
    calls.append('doubled')
    await asyncio.sleep(0)
    return n * 2


@cached_view_as(Post)
async def posts_view(request):
    calls.append('posts_view')
    titles = [p.title async for p in Post.objects.nocache().order_by('pk')]
    return HttpResponse(','.join(titles))


@cached_view(timeout=60)
async def page_view(request, n):
    calls.append('page_view')
    return HttpResponse('page %d' % n)


@cached_view_as(Post)
async def template_view(request):
    calls.append('template_view')
    return TemplateResponse(request, 'cacheops_tests/async_titles.html', {'posts': Post.objects.nocache().order_by('pk')})


@cached_view_as(Post)
async def missing_view(request):
    calls.append('missing_view')
    return HttpResponse('gone', status=404)


urlpatterns = [
    path('posts/', posts_view),
    path('page/<int:n>/', page_view),
    path('template/', template_view),
    path('missing/', missing_view),
]


@pytest.fixture(autouse=True)
def _calls():
    calls.clear()


@pytest.fixture
def post():
    return Post.objects.create(title='a', category=Category.objects.create(title='c'))


def test_wrappers_are_coroutine_functions():
    for func in (post_titles, doubled, posts_view, page_view):
        assert iscoroutinefunction(func)


def test_cached_as_caches_the_awaited_result(post):
    assert in_loop(post_titles, '-') == ['-a']
    with Reads() as seen:
        assert in_loop(post_titles, '-') == ['-a']
    assert calls == ['titles']
    assert_read_in_loop(seen, 1)
    post.title = 'b'
    post.save()
    assert in_loop(post_titles, '-') == ['-b']
    assert calls == ['titles', 'titles']


def test_cached_caches_the_awaited_result():
    assert in_loop(doubled, 2) == 4
    with Reads() as seen:
        assert in_loop(doubled, 2) == 4
    assert calls == ['doubled']
    assert_read_in_loop(seen, 1)
    doubled.invalidate(2)
    assert in_loop(doubled, 2) == 4
    assert calls == ['doubled', 'doubled']


def get(url):
    return in_loop(AsyncClient().get, url)


def test_cached_view_as(post):
    assert get('/posts/').content == b'a'
    assert get('/posts/').content == b'a'
    assert calls == ['posts_view']
    Post.objects.create(title='b', category=post.category)
    assert get('/posts/').content == b'a,b'
    assert calls == ['posts_view', 'posts_view']


def test_cached_view():
    assert get('/page/1/').content == b'page 1'
    assert get('/page/1/').content == b'page 1'
    assert get('/page/2/').content == b'page 2'
    assert calls == ['page_view', 'page_view']


def test_a_template_response_is_rendered_before_it_is_stored(post):
    assert get('/template/').content.strip() == b'a'
    assert get('/template/').content.strip() == b'a'
    assert calls == ['template_view']


def test_responses_other_than_200_are_not_stored():
    assert get('/missing/').status_code == 404
    assert get('/missing/').status_code == 404
    assert calls == ['missing_view', 'missing_view']
