"""The simple time-based cache in Redis: cacheops.cache, @cached and @cached_view."""
from contextlib import contextmanager
from unittest import mock

import pytest
import redis
import redis.connection
from django.db import transaction
from django.test import override_settings

import cacheops.redis
import cacheops.simple
from cacheops import CacheMiss, cache, cached
from cacheops.redis import CONNECTION_ERRORS
from cacheops.signals import cache_read
from . import views
from .models import Category, Post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def calls():
    views.calls.clear()
    return views.calls


def client_redis():
    return cacheops.redis.redis_client


@contextmanager
def redis_down():
    """Every Redis connection checkout fails, as if the server were gone."""
    error = redis.exceptions.ConnectionError('injected: redis is down')
    with mock.patch.object(redis.connection.ConnectionPool, 'get_connection', side_effect=error):
        yield


# get / set / delete

def test_set_get_delete():
    cache.set('key', {'a': [1, 2]})
    assert cache.get('key') == {'a': [1, 2]}
    cache.delete('key')
    with pytest.raises(CacheMiss):
        cache.get('key')


def test_get_of_a_missing_key_raises_cache_miss():
    with pytest.raises(CacheMiss):
        cache.get('missing')


def test_none_is_a_value_not_a_miss():
    cache.set('none', None)
    assert cache.get('none') is None


def test_set_timeout_is_the_ttl():
    cache.set('timed', 1, timeout=50)
    assert 40 < client_redis().ttl(cacheops.simple._full_key('timed')) <= 50
    cache.set('forever', 1)
    assert client_redis().ttl(cacheops.simple._full_key('forever')) == -1


def test_zero_timeout_stores_nothing():
    cache.set('key', 1)
    cache.set('key', 2, timeout=0)
    with pytest.raises(CacheMiss):
        cache.get('key')


@override_settings(CACHEOPS_PREFIX=lambda query: 'pre:')
def test_keys_get_the_prefix():
    cache.set('key', 1)
    assert client_redis().exists('pre:key')
    assert not client_redis().exists('key')
    assert cache.get('key') == 1


def test_the_prefix_function_sees_no_databases_and_no_tables():
    queries = []

    def prefix(query):
        queries.append((query.dbs, query.tables))
        return 'x:'

    with override_settings(CACHEOPS_PREFIX=prefix):
        cache.set('key', 1)
    assert queries == [([], [])]


# Redis failures

@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True)
def test_degraded_read_is_a_miss_and_write_is_skipped():
    cache.set('key', 1)
    with redis_down(), pytest.warns(RuntimeWarning):
        with pytest.raises(CacheMiss):
            cache.get('key')
        cache.set('key', 2)
        cache.delete('key')
    assert cache.get('key') == 1


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True)
def test_degraded_cached_function_computes():
    runs = []

    @cached(timeout=60)
    def func():
        runs.append(1)
        return len(runs)

    with redis_down(), pytest.warns(RuntimeWarning):
        assert func() == 1
        assert func() == 2
    assert func() == 3
    assert func() == 3


def test_without_degrade_a_failure_raises():
    with redis_down():
        with pytest.raises(CONNECTION_ERRORS):
            cache.get('key')
        with pytest.raises(CONNECTION_ERRORS):
            cache.set('key', 1)


def test_handle_connection_failure_is_looked_up_when_a_redis_cache_is_created():
    wrapped = []

    def recording(func):
        wrapped.append(func.__name__)
        return func

    with mock.patch.object(cacheops.simple, 'handle_connection_failure', recording):
        own = cacheops.simple.RedisCache(client_redis())
    assert sorted(wrapped) == ['_pending', '_read', '_store', 'delete', 'set']
    own.set('key', 1)
    assert own.get('key') == cache.get('key') == 1


# @cached

_counters = iter(range(10 ** 6))


def counter():
    """A function counting its runs; keys depend on qualnames, so each gets its own."""
    runs = []

    def func(*args, **kwargs):
        runs.append((args, kwargs))
        return len(runs)
    func.__qualname__ = 'counted%d' % next(_counters)
    return func, runs


def test_cached_caches_by_arguments():
    func, runs = counter()
    top = cached(timeout=60)(func)
    assert [top(1), top(1), top(2), top(1, x=1), top(2)] == [1, 1, 2, 3, 2]
    assert len(runs) == 3


def test_cached_keys_arguments_by_value_however_they_are_passed():
    runs = []

    @cached(timeout=60)
    def top(category, count=10, *rest, **options):
        runs.append(1)
        return (category, count, rest, options)

    assert top('a') == top('a', 10) == top(count=10, category='a') == ('a', 10, (), {})
    assert top('a', 10, 1, x=2) == top('a', 10, 1, x=2) == ('a', 10, (1,), {'x': 2})
    assert len(runs) == 2
    top.invalidate(category='a')
    top('a')
    assert len(runs) == 3


def test_cached_timeout():
    func, _ = counter()
    top = cached(timeout=60)(func)
    top(1)
    assert 50 < client_redis().ttl(cacheops.simple._full_key(top.key(1))) <= 60


def test_cached_without_arguments_and_without_parentheses():
    first, first_runs = counter()
    second, second_runs = counter()
    bare = cached(first)
    called = cached()(second)
    assert [bare(), bare(), called(), called()] == [1, 1, 1, 1]
    assert len(first_runs) == len(second_runs) == 1
    assert client_redis().ttl(cacheops.simple._full_key(bare.key())) == -1


def test_cached_functions_do_not_share_entries():
    first, _ = counter()
    second, second_runs = counter()
    second_runs.append('a run before')
    cached(timeout=60)(first)()
    assert cached(timeout=60)(second)() == 2  # its own result, not first's entry


def test_lambdas_of_one_scope_do_not_share_entries():
    first = cached(timeout=60)(lambda: 'first')
    second = cached(timeout=60)(lambda: 'second')
    assert (first(), second()) == ('first', 'second')


def test_invalidate_drops_one_call():
    func, runs = counter()
    top = cached(timeout=60)(func)
    top('news')
    top('sport')
    top.invalidate('news')
    top('news')
    top('sport')
    assert [args for args, _ in runs] == [('news',), ('sport',), ('news',)]


def test_key_get_set_delete():
    func, runs = counter()
    top = cached(timeout=60)(func)
    with pytest.raises(CacheMiss):
        top.key('news').get()
    top.key('news').set('manual')
    assert top('news') == 'manual'
    assert top.key('news').get() == 'manual'
    top.key('news').delete()
    assert top('news') == 1
    assert len(runs) == 1


def test_extra_value_and_callable():
    func, runs = counter()
    for extra in (1, 2, 1):
        cached(timeout=60, extra=extra)(func)()
    assert len(runs) == 2
    func, runs = counter()
    by_lang = cached(timeout=60, extra=lambda n, lang: lang)(func)
    by_lang(1, lang='en')
    by_lang(1, lang='fr')
    by_lang(1, lang='en')
    assert len(runs) == 2


def test_the_readme_nested_function_pattern():
    class Category:
        def __init__(self, category_id):
            self.category_id = category_id

        @property
        def articles_json(self):
            @cached(timeout=10 * 60, extra=self.category_id)
            def _articles_json():
                runs.append(self.category_id)
                return '[%d]' % self.category_id
            return _articles_json()

    runs = []
    assert [Category(1).articles_json, Category(2).articles_json, Category(1).articles_json] == \
        ['[1]', '[2]', '[1]']
    assert runs == [1, 2]


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_makes_cached_a_pass_through():
    func, runs = counter()
    top = cached(timeout=60)(func)
    top()
    top()
    assert len(runs) == 2


@pytest.mark.django_db(transaction=True)
def test_the_simple_cache_works_in_dirty_transactions():
    func, runs = counter()
    top = cached(timeout=60)(func)
    with transaction.atomic():
        Category.objects.create(title='dirty')
        top()
        top()
    assert len(runs) == 1


def test_cache_read_signal():
    reads = []

    def receiver(sender, func, hit, **kwargs):
        reads.append((sender, func, hit))

    func, _ = counter()
    top = cached(timeout=60)(func)
    cache_read.connect(receiver)
    try:
        top()
        top()
    finally:
        cache_read.disconnect(receiver)
    assert reads == [(None, func, False), (None, func, True)]


# @cached_view

def get(client, url, **headers):
    response = client.get(url, headers=headers)
    return response.status_code, response.content.decode()


def test_cached_view(client, calls):
    assert get(client, '/views/simple/1/') == (200, 'simple_view 1 1')
    assert get(client, '/views/simple/1/') == (200, 'simple_view 1 1')
    assert get(client, '/views/simple/2/') == (200, 'simple_view 2 2')
    assert client.head('/views/simple/2/').status_code == 200
    assert calls['simple_view'] == 2


def test_cached_view_without_arguments(client, calls):
    get(client, '/views/simple-bare/')
    get(client, '/views/simple-bare/')
    assert calls['simple_view_bare'] == 1


def test_cached_view_extra_receives_the_views_arguments(client, calls):
    assert get(client, '/views/simple-extra/1/', X_Lang='en') == (200, 'simple_view_extra 1 1')
    assert get(client, '/views/simple-extra/1/', X_Lang='fr') == (200, 'simple_view_extra 1 2')
    assert get(client, '/views/simple-extra/1/', X_Lang='en') == (200, 'simple_view_extra 1 1')


def test_cached_view_invalidate_by_request(client, rf, calls):
    get(client, '/views/simple/1/')
    views.simple_view.invalidate(rf.get('/views/simple/1/'), n=1)
    assert get(client, '/views/simple/1/') == (200, 'simple_view 1 2')


def test_cached_view_invalidate_by_absolute_uri(client, calls):
    get(client, '/views/simple/1/')
    get(client, '/views/simple/2/')
    views.simple_view.invalidate('http://testserver/views/simple/1/', n=1)
    assert get(client, '/views/simple/1/') == (200, 'simple_view 1 3')
    assert get(client, '/views/simple/2/') == (200, 'simple_view 2 2')


def test_cached_view_invalidate_with_positional_arguments(client, calls):
    # the URL conf passes n by name; the README's example passes it by position
    get(client, '/views/simple/1/')
    views.simple_view.invalidate('http://testserver/views/simple/1/', 1)
    assert get(client, '/views/simple/1/') == (200, 'simple_view 1 2')


def test_cached_view_key_set(client, calls):
    views.simple_view.key('http://testserver/views/simple/5/', n=5).set(
        views.HttpResponse('preset'))
    assert get(client, '/views/simple/5/') == (200, 'preset')
    assert calls['simple_view'] == 0


def test_cached_view_renders_template_responses(client, calls):
    category = Category.objects.create(title='c')
    Post.objects.create(title='p', category=category)
    for _ in range(2):
        assert client.get('/views/simple-template/').content.decode().strip() == '<ul><li>p</li></ul>'
    assert calls['simple_template_view'] == 1


def test_cached_view_caches_only_status_200_to_get_and_head(client, calls):
    client.get('/views/simple-answer/404/')
    client.get('/views/simple-answer/404/')
    assert calls['simple_answer'] == 2
    client.post('/views/simple/1/')
    client.post('/views/simple/1/')
    assert calls['simple_view'] == 2


@pytest.mark.parametrize('value', [['a', 'list'], {'a': 'dict'}, 'text', None])
@pytest.mark.parametrize('store', ['redis', 'file'])
def test_cached_view_caches_any_value_the_view_returns(rf, tmp_path, store, value):
    own = cacheops.simple.cache if store == 'redis' else cacheops.simple.FileCache(str(tmp_path))
    runs = []

    @own.cached_view(timeout=60)
    def view(request):
        runs.append(1)
        return value

    assert view(rf.get('/api/')) == view(rf.get('/api/')) == value
    assert len(runs) == 1


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_makes_cached_view_a_pass_through(client, calls):
    get(client, '/views/simple/1/')
    get(client, '/views/simple/1/')
    assert calls['simple_view'] == 2


def test_cached_view_as_a_method_of_a_redis_cache(client, rf):
    own = cacheops.simple.RedisCache(client_redis())
    runs = []

    @own.cached_view(timeout=60)
    def view(request):
        runs.append(1)
        return views.HttpResponse(str(len(runs)))

    assert view(rf.get('/x/')).content == view(rf.get('/x/')).content == b'1'
