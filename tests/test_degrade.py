"""Redis failures. With CACHEOPS_DEGRADE_ON_FAILURE=True reads fall back to
the database; with False they raise. Either way writes (save, delete) never
fail because of Redis, and an invalidation Redis missed must not leave an
entry that reads as valid once Redis is back.

Faults are injected by making every Redis connection checkout, and every command sent
on a connection a thread keeps, raise redis.exceptions.ConnectionError; the Redis
server itself stays up."""
import logging
from contextlib import contextmanager
from unittest import mock

import pytest
import redis
import redis.connection
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path

from cacheops import cache
from cacheops.redis import CONNECTION_ERRORS

from .cluster import ON_CLUSTER
from .models import All, Category, Post
from .utils import AbstractConnection, hand_packed

pytestmark = pytest.mark.django_db


@contextmanager
def redis_down():
    error = redis.exceptions.ConnectionError('injected: redis is down')
    with mock.patch.object(redis.connection.ConnectionPool, 'get_connection', side_effect=error), \
         mock.patch.object(redis.connection.BlockingConnectionPool, 'get_connection', side_effect=error), \
         mock.patch.object(AbstractConnection, 'send_packed_command', side_effect=error):
        yield


@hand_packed
def test_fault_injection_works():
    import cacheops.redis
    client = cacheops.redis.get_client()
    assert client.ping()
    assert cacheops.redis.read_command(client, 'GET', 'tests:key') is None  # a kept connection
    assert cacheops.redis._thread_held.held is not None
    with redis_down():
        with pytest.raises(CONNECTION_ERRORS):
            client.ping()
        with pytest.raises(CONNECTION_ERRORS):
            cacheops.redis.read_command(client, 'GET', 'tests:key')
    assert client.ping()
    assert cacheops.redis.read_command(client, 'GET', 'tests:key') is None


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True)
def test_degraded_reads_fall_back_to_db(django_assert_num_queries):
    obj = All.objects.create(tag=1, title='a')
    cat = Category.objects.create(title='c')
    Post.objects.create(title='p', category=cat)
    with redis_down(), pytest.warns(RuntimeWarning, match='cache is unavailable'):
        for _ in range(2):
            with django_assert_num_queries(1):
                assert All.objects.get(pk=obj.pk).title == 'a'
            with django_assert_num_queries(1):
                assert list(All.objects.filter(tag=1)) == [obj]
            with django_assert_num_queries(1):
                assert All.objects.count() == 1
            with django_assert_num_queries(1):
                assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['p']


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True)
def test_degraded_cache_works_again_when_redis_is_back(django_assert_num_queries):
    obj = All.objects.create(tag=1, title='a')
    with redis_down(), pytest.warns(RuntimeWarning, match='cache is unavailable'):
        assert list(All.objects.filter(tag=1)) == [obj]
    with django_assert_num_queries(1):
        assert list(All.objects.filter(tag=1)) == [obj]
    with django_assert_num_queries(0):
        assert list(All.objects.filter(tag=1)) == [obj]


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=False)
def test_reads_raise_without_degradation():
    obj = All.objects.create(tag=1, title='a')
    with redis_down():
        with pytest.raises(CONNECTION_ERRORS):
            All.objects.get(pk=obj.pk)
        with pytest.raises(CONNECTION_ERRORS):
            list(All.objects.filter(tag=1))


@pytest.mark.parametrize('degrade', [True, False])
def test_writes_never_fail(degrade):
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=degrade):
        cat = Category.objects.create(title='c')
        with redis_down():
            post = Post.objects.create(title='p', category=cat)
            post.title = 'q'
            post.save()
            obj = All.objects.create(tag=1)
            obj.tag = 2
            obj.save()
            All.objects.bulk_create([All(tag=3)])
            obj.delete()
            gone = Post.objects.create(title='gone', category=cat)
            gone.delete()
        assert [p.title for p in Post.objects.nocache().all()] == ['q']
        assert [o.tag for o in All.objects.nocache().all()] == [3]


@pytest.mark.parametrize('degrade', [True, False])
def test_missed_invalidation_does_not_leave_stale_entries(degrade, django_assert_num_queries):
    with override_settings(CACHEOPS_DEGRADE_ON_FAILURE=degrade):
        cat = Category.objects.create(title='c')
        post = Post.objects.create(title='old', category=cat)
        obj = All.objects.create(tag=1, title='old')
        for expected_queries in (1, 0):  # cached
            with django_assert_num_queries(expected_queries):
                assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['old']
            with django_assert_num_queries(expected_queries):
                assert All.objects.get(pk=obj.pk).title == 'old'
        with redis_down():
            post.title = 'new'
            post.save()
            obj.title = 'new'
            obj.save()
        # Redis is back: the entries cached before the change must not be served
        assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['new']
        assert All.objects.get(pk=obj.pk).title == 'new'


# Outage logging and the error a read raises (issue 18, finding 10)

def outage_records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == 'cacheops'
            and r.levelno >= logging.WARNING and 'the cache is' in r.getMessage()]


@pytest.fixture
def redis_answered():
    """Redis answered before the test: no outage an earlier test left is on."""
    from cacheops.outage import answered
    answered()


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=True)
def test_an_outage_is_logged_once_as_it_starts_and_once_as_it_ends(caplog, redis_answered):
    cat = Category.objects.create(title='c')
    post = Post.objects.create(title='p', category=cat)
    with redis_down(), pytest.warns(RuntimeWarning) as warned:
        for _ in range(4):
            assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['p']
        for title in ('q', 'r'):
            post.title = title
            post.save()  # kept to replay: from now on this process reads the database
        for _ in range(2):
            assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['r']
    assert len([w for w in warned if 'cache is unavailable' in str(w.message)]) == 1
    assert len(outage_records(caplog)) == 1
    assert 'unavailable' in outage_records(caplog)[0]
    assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['r']
    records = outage_records(caplog)
    assert len(records) == 2
    assert 'back' in records[1]
    # each save kept its invalidation and its cache_on_save
    assert '6 reads went to the database and 4 cache writes' in records[1]
    assert [p.title for p in Post.objects.cache().filter(category=cat)] == ['r']
    assert len(outage_records(caplog)) == 2


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=False)
def test_without_degradation_the_error_names_the_setting():
    from cacheops.outage import CacheUnavailable
    # user code's except still works: ConnectionError, or on a cluster the cluster's own
    outage = CONNECTION_ERRORS if ON_CLUSTER else redis.ConnectionError
    obj = All.objects.create(tag=1, title='a')
    with redis_down():
        with pytest.raises(outage) as raised:
            All.objects.get(pk=obj.pk)
        with pytest.raises(outage) as simple:
            cache.get('key')
    for error in (raised.value, simple.value):
        assert isinstance(error, CacheUnavailable)
        assert 'CACHEOPS_DEGRADE_ON_FAILURE' in str(error)
        assert 'injected: redis is down' in str(error)
        assert isinstance(error.__cause__, outage)


@override_settings(CACHEOPS_DEGRADE_ON_FAILURE=False, ROOT_URLCONF='tests.test_degrade')
def test_without_degradation_a_view_sees_the_error_naming_the_setting(client):
    obj = All.objects.create(tag=1, title='a')
    outage = CONNECTION_ERRORS if ON_CLUSTER else redis.ConnectionError  # as above
    with redis_down(), pytest.raises(outage, match='CACHEOPS_DEGRADE_ON_FAILURE'):
        client.get('/title/%d/' % obj.pk)


def title_view(request, pk):
    return HttpResponse(All.objects.cache().get(pk=pk).title)


urlpatterns = [path('title/<int:pk>/', title_view)]
