"""Profile options beyond ops and timeout: local_get, cache_on_save (True or a field
name), db_agnostic=False and lock. The profiles are in tests/settings.py:
tests.local {'local_get': True}, tests.cacheonsaveprofile {'cache_on_save': True},
tests.cacheonsaveslug {'cache_on_save': 'slug'}, tests.dbagnostic {'db_agnostic': False},
tests.locked {'lock': True}."""
import threading
import uuid
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from cacheops import getset
from cacheops.redis import redis_client
from .cluster import client_class
from .models import CacheOnSaveProfile, CacheOnSaveSlug, Category, DbAgnostic, Local, Locked
from .utils import Worker, queries

pytestmark = pytest.mark.django_db(databases=['default', 'slave'])


def fresh_tag():
    """local_get memory outlives tests (and pks get reused): look objects up by fresh values."""
    return uuid.uuid4().int % 10 ** 9


# local_get

def test_local_get_is_process_local_and_not_invalidated():
    tag = fresh_tag()
    Local.objects.create(tag=tag, title='x')
    assert queries(lambda: Local.objects.cache().get(tag=tag).title) == ('x', 1)
    assert queries(lambda: Local.objects.cache().get(tag=tag).title) == ('x', 0)
    redis_client.flushdb()  # not in Redis
    Local.objects.filter(tag=tag).update(title='y')
    Local.objects.get(tag=tag).save()  # not invalidated, even by a save (as documented)
    assert queries(lambda: Local.objects.cache().get(tag=tag).title) == ('x', 0)


def test_local_get_with_unhashable_arguments():
    tags = [fresh_tag(), fresh_tag()]
    for tag in tags:
        Local.objects.create(tag=tag, title=str(tag))
    for tag in tags:
        assert queries(lambda: Local.objects.cache().get(tag__in=[tag]).title) == (str(tag), 1)
    for tag in tags:
        assert queries(lambda: Local.objects.cache().get(tag__in=[tag]).title) == (str(tag), 0)


def test_local_get_keeps_databases_apart():
    tag = fresh_tag()
    Local.objects.create(tag=tag, title='on default')
    Local.objects.using('slave').create(tag=tag, title='on slave')
    for _ in range(2):
        assert Local.objects.cache().get(tag=tag).title == 'on default'
        assert Local.objects.cache().using('slave').get(tag=tag).title == 'on slave'


def test_local_get_does_not_remember_misses():
    tag = fresh_tag()
    with pytest.raises(Local.DoesNotExist):
        Local.objects.cache().get(tag=tag)
    Local.objects.create(tag=tag, title='x')
    assert queries(lambda: Local.objects.cache().get(tag=tag).title) == ('x', 1)


def test_local_get_memory_is_bounded(monkeypatch):
    """Lookups may come from requests: a full memory is emptied, and refilled on use."""
    from cacheops import utils
    from cacheops.query import gets
    monkeypatch.setattr(utils, 'MEMO_SIZE', 3)
    monkeypatch.setattr(gets, '_local_gets', {})
    tags = [fresh_tag() for _ in range(5)]
    for tag in tags:
        Local.objects.create(tag=tag, title=str(tag))
    for tag in tags:
        assert queries(lambda: Local.objects.cache().get(tag=tag).title) == (str(tag), 1)
        assert len(gets._local_gets) <= 3
    assert queries(lambda: Local.objects.cache().get(tag=tags[-1]).title) == (str(tags[-1]), 0)


def test_local_get_is_for_simple_gets_only():
    """A get on a filtered queryset uses the normal, invalidated cache."""
    tag = fresh_tag()
    obj = Local.objects.create(tag=tag, title='x')
    assert queries(lambda: Local.objects.cache().filter(tag=tag).get().title) == ('x', 1)
    assert queries(lambda: Local.objects.cache().filter(tag=tag).get().title) == ('x', 0)
    obj.title = 'y'
    obj.save()
    assert queries(lambda: Local.objects.cache().filter(tag=tag).get().title) == ('y', 1)


def test_local_get_only_when_caching():
    tag = fresh_tag()
    Local.objects.create(tag=tag, title='x')
    for _ in range(2):  # the profile caches no op automatically
        assert queries(lambda: Local.objects.get(tag=tag).title) == ('x', 1)
    for _ in range(2):
        assert queries(lambda: Local.objects.nocache().get(tag=tag).title) == ('x', 1)


# cache_on_save

def test_cache_on_save_true_caches_by_pk():
    obj = CacheOnSaveProfile.objects.create(title='saved')
    assert queries(lambda: CacheOnSaveProfile.objects.cache().get(pk=obj.pk).title) == ('saved', 0)
    assert queries(lambda: CacheOnSaveProfile.objects.cache().get(id=obj.pk).title) == ('saved', 0)
    # other lookups are not filled in
    assert queries(lambda: CacheOnSaveProfile.objects.cache().get(title='saved').pk) == (obj.pk, 1)


def test_cache_on_save_field_name():
    obj = CacheOnSaveSlug.objects.create(slug='a', title='saved')
    assert queries(lambda: CacheOnSaveSlug.objects.cache().get(slug='a').title) == ('saved', 0)
    assert queries(lambda: CacheOnSaveSlug.objects.cache().get(pk=obj.pk).title) == ('saved', 1)


def test_cache_on_save_never_serves_the_old_value():
    obj = CacheOnSaveSlug.objects.create(slug='a', title='first')
    assert CacheOnSaveSlug.objects.cache().get(slug='a').title == 'first'
    obj.slug = 'b'
    obj.title = 'second'
    obj.save()
    assert queries(lambda: CacheOnSaveSlug.objects.cache().get(slug='b').title) == ('second', 0)
    with pytest.raises(CacheOnSaveSlug.DoesNotExist):
        CacheOnSaveSlug.objects.cache().get(slug='a')


def test_cache_on_save_entry_is_invalidated_like_any_other():
    obj = CacheOnSaveProfile.objects.create(title='saved')
    pk = obj.pk
    obj.delete()
    with pytest.raises(CacheOnSaveProfile.DoesNotExist):
        CacheOnSaveProfile.objects.cache().get(pk=pk)


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_cache_on_save_stores_nothing_inside_a_transaction():
    with transaction.atomic():
        obj = CacheOnSaveProfile.objects.create(title='saved')
    assert queries(lambda: CacheOnSaveProfile.objects.cache().get(pk=obj.pk).title) == ('saved', 1)
    assert queries(lambda: CacheOnSaveProfile.objects.cache().get(pk=obj.pk).title) == ('saved', 0)


def test_no_cache_on_save_without_the_option():
    cat = Category.objects.create(title='c')
    assert queries(lambda: Category.objects.cache().get(pk=cat.pk).title) == ('c', 1)


# db_agnostic=False

def test_db_agnostic_false_gives_a_key_per_database():
    assert DbAgnostic.objects.all()._cache_key() != DbAgnostic.objects.using('slave')._cache_key()
    assert Category.objects.all()._cache_key() == Category.objects.using('slave')._cache_key()


def test_db_agnostic_false_entries_per_database():
    DbAgnostic.objects.create(title='d')
    DbAgnostic.objects.using('slave').create(title='s')

    def count(using):
        return DbAgnostic.objects.cache().using(using).filter(title__in=['d', 's']).count()

    assert queries(lambda: count('default')) == (1, 1)
    assert queries(lambda: count('slave'), 'slave') == (1, 1)
    DbAgnostic.objects.create(title='d')
    assert queries(lambda: count('default')) == (2, 1)
    assert queries(lambda: DbAgnostic.objects.cache().using('slave').get(title='s').title,
                   'slave') == ('s', 1)
    assert queries(lambda: DbAgnostic.objects.cache().using('slave').get(title='s').title,
                   'slave') == ('s', 0)


# lock

def _read(make_qs, results, name):
    try:
        with CaptureQueriesContext(connection) as ctx:
            results[name] = [o.title for o in make_qs()]
        results[name + ' queries'] = len(ctx)
    finally:
        connection.close()


def two_readers(make_qs, hold_first):
    """Start a reader and hold it after its query; start a second one; release the first
    once hold_first(waiting, second) returns. Returns what each read and how many queries
    it ran, and whether the second waited for a dog-pile lock."""
    selected, go, waiting = threading.Event(), threading.Event(), threading.Event()
    compute_once = getset._Computed.__call__
    real_brpoplpush = client_class().brpoplpush

    def compute(self):
        value = compute_once(self)
        if threading.current_thread().name == 'first':
            selected.set()
            assert go.wait(10), 'never released'
        return value

    def brpoplpush(self, *args, **kwargs):  # where a dog-pile waiter blocks
        waiting.set()
        return real_brpoplpush(self, *args, **kwargs)

    results = {}
    first = Worker(_read, make_qs, results, 'first', name='first')
    second = Worker(_read, make_qs, results, 'second', name='second')
    with mock.patch.object(getset._Computed, '__call__', compute), \
            mock.patch.object(client_class(), 'brpoplpush', brpoplpush):
        first.start()
        assert selected.wait(10), 'the first reader never queried'
        second.start()
        hold_first(waiting, second)
        go.set()
        first.join(10)
        second.join(10)
    return results, waiting.is_set()


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_profile_lock_makes_a_second_reader_wait_for_the_first():
    Locked.objects.create(title='x')
    results, waited = two_readers(lambda: Locked.objects.cache().filter(title='x'),
                                  lambda waiting, second: waiting.wait(10))
    assert waited
    assert results == {'first': ['x'], 'first queries': 1, 'second': ['x'], 'second queries': 0}


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_cache_lock_false_overrides_the_profile():
    Locked.objects.create(title='x')
    # the second reader does not wait: it queries while the first is held
    results, waited = two_readers(lambda: Locked.objects.cache(lock=False).filter(title='x'),
                                  lambda waiting, second: second.join(10))
    assert not waited
    assert results == {'first': ['x'], 'first queries': 1, 'second': ['x'], 'second queries': 1}


@pytest.mark.django_db(transaction=True, databases=['default', 'slave'])
def test_without_lock_readers_do_not_wait():
    Category.objects.create(title='x')
    results, waited = two_readers(lambda: Category.objects.cache().filter(title='x'),
                                  lambda waiting, second: second.join(10))
    assert not waited
    assert results['second queries'] == 1
