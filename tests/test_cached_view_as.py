"""@cached_view_as: views cached like querysets, keyed on the request's URI, through
the real test client (the views are in tests/views.py)."""
import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

import cacheops.redis
from cacheops import cached_view_as
from .cluster import redis_keys
from . import views
from .models import Category, Post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def calls():
    views.calls.clear()
    return views.calls


@pytest.fixture
def posts():
    category = Category.objects.create(title='c')
    return [Post.objects.create(title='p%d' % i, category=category) for i in range(2)]


def get(client, url, **headers):
    response = client.get(url, headers=headers)
    return response.status_code, response.content.decode()


def test_a_function_view_is_cached(client, posts, calls):
    assert get(client, '/views/post-titles/') == (200, 'p0,p1')
    assert get(client, '/views/post-titles/') == (200, 'p0,p1')
    assert calls['post_titles'] == 1


def test_a_cached_view_is_invalidated_like_its_samples(client, posts, calls):
    get(client, '/views/post-titles/')
    posts[0].title = 'changed'
    posts[0].save()
    assert get(client, '/views/post-titles/') == (200, 'changed,p1')
    Post.objects.create(title='p2', category=posts[0].category)
    assert get(client, '/views/post-titles/') == (200, 'changed,p1,p2')
    assert calls['post_titles'] == 3


def test_the_key_is_the_uri_query_string_included(client, posts, calls):
    for url in ('/views/post-titles/', '/views/post-titles/?page=2', '/views/post-titles/?page=3'):
        get(client, url)
        get(client, url)
    assert calls['post_titles'] == 3


def test_only_the_uri_of_the_request_makes_the_key(client, posts, calls):
    """Headers, cookies and the user don't: that is what extra is for."""
    assert get(client, '/views/post-titles/') == (200, 'p0,p1')
    assert get(client, '/views/post-titles/', Accept_Language='fr', X_Staff='1') == (200, 'p0,p1')
    client.cookies['sessionid'] = 'another'
    assert get(client, '/views/post-titles/') == (200, 'p0,p1')
    assert calls['post_titles'] == 1


def test_the_key_includes_the_host(client, posts, calls):
    with override_settings(ALLOWED_HOSTS=['one.example', 'two.example']):
        client.get('/views/post-titles/', HTTP_HOST='one.example')
        client.get('/views/post-titles/', HTTP_HOST='two.example')
        client.get('/views/post-titles/', HTTP_HOST='one.example')
    assert calls['post_titles'] == 2


def test_url_arguments_and_samples(client, posts, calls):
    category = posts[0].category
    url = '/views/visible-posts/%d/' % category.pk
    assert get(client, url) == (200, 'p0,p1')
    assert get(client, url) == (200, 'p0,p1')
    assert calls['visible_posts'] == 1
    Category.objects.create(title='other')  # Category is a sample too
    assert get(client, url) == (200, 'p0,p1')
    assert calls['visible_posts'] == 2


def test_extra_callable_receives_the_request(client, posts, calls):
    assert get(client, '/views/staff-aware/', X_Staff='1') == (200, 'staff p0,p1')
    assert get(client, '/views/staff-aware/') == (200, 'guest p0,p1')
    assert get(client, '/views/staff-aware/', X_Staff='1') == (200, 'staff p0,p1')
    assert get(client, '/views/staff-aware/') == (200, 'guest p0,p1')
    assert calls['staff_aware'] == 2


def test_timeout_and_extra_value(rf, posts):
    runs = []

    def view(request):
        runs.append(1)
        return HttpResponse(str(len(runs)))

    english = cached_view_as(Post, timeout=77, extra='en')(view)
    french = cached_view_as(Post, timeout=77, extra='fr')(view)
    responses = [english(rf.get('/page/')), english(rf.get('/page/')), french(rf.get('/page/'))]
    assert [r.content for r in responses] == [b'1', b'1', b'2']
    keys = redis_keys('*as:*')
    assert len(keys) == 2
    for key in keys:
        assert 67 < cacheops.redis.redis_client.ttl(key) <= 77


def test_a_template_response_is_rendered_and_cached(client, posts, calls):
    first = client.get('/views/post-titles-template/')
    second = client.get('/views/post-titles-template/')
    expected = '<ul><li>p0</li><li>p1</li></ul>'
    assert first.content.decode().strip() == second.content.decode().strip() == expected
    assert calls['post_titles_template'] == 1
    posts[1].delete()
    assert client.get('/views/post-titles-template/').content.decode().strip() == '<ul><li>p0</li></ul>'


def test_class_based_views_are_cached(client, posts, calls):
    assert get(client, '/views/post-titles-class/') == (200, 'view:p0,p1')
    assert get(client, '/views/post-titles-class/') == (200, 'view:p0,p1')
    assert calls['PostTitlesView'] == 1
    for _ in range(2):
        assert client.get('/views/post-list-class/').content.decode().strip() == \
            '<ul><li>p0</li><li>p1</li></ul>'
    assert calls['PostListView'] == 1


def test_as_view_functions_of_different_classes_have_different_keys(posts):
    """Every View.as_view() function has the same qualname: the class tells them apart."""
    request = RequestFactory().get('/same/')
    assert views.post_titles_class(request).content == b'view:p0,p1'
    response = views.post_list_class(request)
    assert response.content.decode().strip() == '<ul><li>p0</li><li>p1</li></ul>'


def test_head_is_cached_too(client, posts, calls):
    assert client.head('/views/post-titles/').status_code == 200
    assert get(client, '/views/post-titles/') == (200, 'p0,p1')
    assert client.head('/views/post-titles/').status_code == 200
    assert calls['post_titles'] == 1


def test_other_methods_are_not_cached(client, posts, calls):
    get(client, '/views/post-titles-class/')  # cached for GET
    for _ in range(2):
        response = client.post('/views/post-titles-class/')
        assert response.content == b'view:p0,p1'
    assert calls['PostTitlesView'] == 3


@pytest.mark.parametrize('status', [404, 302])
def test_only_status_200_is_cached(client, posts, calls, status):
    for _ in range(2):
        assert client.get('/views/answer/%d/' % status).status_code == status
    assert calls['answer'] == 2
    get(client, '/views/answer/200/')
    get(client, '/views/answer/200/')
    assert calls['answer'] == 3


def test_streaming_responses_are_not_cached(client, posts, calls):
    for _ in range(2):
        response = client.get('/views/answer/999/')
        assert b''.join(response.streaming_content) == b'p0,p1'
    assert calls['answer'] == 2


def test_a_view_may_return_any_value_which_is_cached(rf, posts):
    runs = []

    @cached_view_as(Post)
    def titles(request):
        runs.append(1)
        return {'titles': [p.title for p in Post.objects.order_by('pk')]}

    assert titles(rf.get('/api/titles/')) == titles(rf.get('/api/titles/')) == {'titles': ['p0', 'p1']}
    assert len(runs) == 1
    posts[0].delete()
    assert titles(rf.get('/api/titles/')) == {'titles': ['p1']}
    assert len(runs) == 2


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_makes_it_a_pass_through(client, posts, calls):
    get(client, '/views/post-titles/')
    get(client, '/views/post-titles/')
    assert calls['post_titles'] == 2
    assert redis_keys('*as:*') == []


def test_the_decorator_needs_samples():
    with pytest.raises(TypeError):
        cached_view_as()


def test_an_empty_list_sample_gives_an_identity_decorator():
    def view(request):
        pass
    assert cached_view_as([])(view) is view
