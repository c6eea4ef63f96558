"""The file cache: the simple cache's API on the file system, atomic writes, expiry by
mtime cleaned by `manage.py cleanfilecache`."""
import multiprocessing
import os
import threading
import time

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from cacheops import CacheMiss, file_cache
from cacheops.simple import FileCache
from . import views
from .models import Category
from .utils import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cache_dir(tmp_path):
    path = tmp_path / 'file_cache'
    with override_settings(FILE_CACHE_DIR=str(path)):
        yield path


@pytest.fixture(autouse=True)
def calls():
    views.calls.clear()
    return views.calls


def entry_files(path):
    """Every file but the directories' lock files."""
    return sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files if f != '.lock')


def age(path, seconds):
    """Move every entry's expiry time this many seconds into the past."""
    for filename in entry_files(path):
        mtime = os.stat(filename).st_mtime
        os.utime(filename, (mtime - seconds, mtime - seconds))


def test_set_get_delete(cache_dir):
    file_cache.set('key', {'a': [1, 2]})
    assert file_cache.get('key') == {'a': [1, 2]}
    assert len(entry_files(cache_dir)) == 1
    file_cache.delete('key')
    with pytest.raises(CacheMiss):
        file_cache.get('key')
    file_cache.delete('key')  # deleting a missing key is fine


def test_get_of_a_missing_key_raises_cache_miss():
    with pytest.raises(CacheMiss):
        file_cache.get('missing')


def test_an_expired_entry_is_a_miss(cache_dir):
    file_cache.set('key', 1, timeout=100)
    assert file_cache.get('key') == 1
    age(cache_dir, 101)
    with pytest.raises(CacheMiss):
        file_cache.get('key')


def test_the_expiry_time_is_the_mtime(cache_dir):
    before = time.time()
    file_cache.set('key', 1, timeout=500)
    [filename] = entry_files(cache_dir)
    assert before + 500 <= os.stat(filename).st_mtime <= time.time() + 500


def test_the_default_timeout_is_file_cache_timeout(cache_dir):
    with override_settings(FILE_CACHE_TIMEOUT=1000):
        before = time.time()
        file_cache.set('key', 1)
    [filename] = entry_files(cache_dir)
    assert before + 1000 <= os.stat(filename).st_mtime <= time.time() + 1000


def test_the_directory_is_file_cache_dir(tmp_path):
    other = tmp_path / 'other'
    with override_settings(FILE_CACHE_DIR=str(other)):
        file_cache.set('key', 1)
    assert len(entry_files(other)) == 1


def test_a_file_cache_of_its_own(tmp_path, cache_dir):
    own = FileCache(str(tmp_path / 'own'), timeout=10)
    own.set('key', 'own')
    file_cache.set('key', 'default')
    assert own.get('key') == 'own'
    assert file_cache.get('key') == 'default'
    [filename] = entry_files(tmp_path / 'own')
    assert os.stat(filename).st_mtime <= time.time() + 10


@override_settings(CACHEOPS_PREFIX=lambda query: 'pre:')
def test_keys_get_the_prefix():
    file_cache.set('key', 1)
    with override_settings(CACHEOPS_PREFIX=None):
        with pytest.raises(CacheMiss):
            file_cache.get('key')
    assert file_cache.get('key') == 1


# cleanfilecache

def test_cleanfilecache_removes_expired_entries_only(cache_dir):
    file_cache.set('old', 1, timeout=100)
    age(cache_dir, 200)
    file_cache.set('fresh', 2, timeout=100)
    call_command('cleanfilecache', verbosity=0)
    assert len(entry_files(cache_dir)) == 1
    assert file_cache.get('fresh') == 2


def test_cleanfilecache_takes_a_directory(tmp_path, cache_dir):
    other = FileCache(str(tmp_path / 'other'))
    other.set('old', 1, timeout=100)
    file_cache.set('old', 1, timeout=100)
    age(tmp_path, 200)
    call_command('cleanfilecache', str(tmp_path / 'other'), verbosity=0)
    assert entry_files(tmp_path / 'other') == []
    assert len(entry_files(cache_dir)) == 1


def test_cleanfilecache_leaves_files_that_are_not_entries(cache_dir):
    file_cache.set('old', 1, timeout=100)
    foreign = cache_dir / 'README'
    foreign.write_text('not a cache entry')
    age(cache_dir, 200)
    call_command('cleanfilecache', verbosity=0)
    assert entry_files(cache_dir) == [str(foreign)]


def test_cleanfilecache_on_a_missing_directory(tmp_path):
    call_command('cleanfilecache', str(tmp_path / 'missing'), verbosity=0)


# Concurrent writers

WRITERS = 4
ROUNDS = 40
SIZE = 256 * 1024  # big enough that a non-atomic write would be seen half done


def _writer(path, n):
    cache = FileCache(path)
    for _ in range(ROUNDS):
        cache.set('shared', (n, bytes([n]) * SIZE))


def _read_until_done(path, procs):
    cache = FileCache(path)
    reads = 0
    while any(p.is_alive() for p in procs) or not reads:
        try:
            n, payload = cache.get('shared')
        except CacheMiss:
            continue
        assert payload == bytes([n]) * SIZE, 'a torn write was read'
        reads += 1
    return reads


def test_concurrent_writers_never_leave_a_torn_entry(cache_dir):
    ctx = multiprocessing.get_context('fork')
    procs = [ctx.Process(target=_writer, args=(str(cache_dir), n)) for n in range(WRITERS)]
    for p in procs:
        p.start()
    try:
        assert _read_until_done(str(cache_dir), procs) > 0
    finally:
        for p in procs:
            p.join(30)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    n, payload = file_cache.get('shared')
    assert payload == bytes([n]) * SIZE
    assert len(entry_files(cache_dir)) == 1  # no temporary file is left behind


# Decorators

def test_cached_function():
    runs = []

    @file_cache.cached(timeout=60)
    def top(category):
        runs.append(category)
        return 'top of %s' % category

    assert [top('news'), top('news'), top('sport')] == ['top of news'] * 2 + ['top of sport']
    top.invalidate('news')
    assert top('news') == 'top of news'
    top.key('sport').set('manual')
    assert top('sport') == 'manual'
    assert top.key('sport').get() == 'manual'
    top.key('sport').delete()
    with pytest.raises(CacheMiss):
        top.key('sport').get()
    assert runs == ['news', 'sport', 'news']


@pytest.mark.django_db(transaction=True)
def test_the_file_cache_works_in_dirty_transactions():
    runs = []

    @file_cache.cached(timeout=60)
    def top():
        runs.append(1)
        return len(runs)

    with transaction.atomic():
        Category.objects.create(title='dirty')
        assert top() == top() == 1
        file_cache.set('key', 'set in a transaction')
        assert file_cache.get('key') == 'set in a transaction'
    assert top() == 1
    assert runs == [1]


def test_cached_function_bare():
    runs = []

    @file_cache.cached
    def top():
        runs.append(1)
        return len(runs)

    assert top() == top() == 1


def test_cached_view(client, calls):
    assert client.get('/views/file/1/').content == b'file_view 1 1'
    assert client.get('/views/file/1/').content == b'file_view 1 1'
    views.file_view.invalidate('http://testserver/views/file/1/', n=1)
    assert client.get('/views/file/1/').content == b'file_view 1 2'
    assert calls['file_view'] == 2


@override_settings(CACHEOPS_ENABLED=False)
def test_disabled_cacheops_makes_the_decorators_pass_through(cache_dir):
    runs = []

    @file_cache.cached(timeout=60)
    def top():
        runs.append(1)

    top()
    top()
    assert len(runs) == 2
    assert entry_files(cache_dir) == []


# An invalidation during a computation (docs/design.md, invariant 1)

def test_an_invalidation_during_a_computation_is_not_overwritten(cache_dir):
    started, release = threading.Event(), threading.Event()
    version = ['old']

    @file_cache.cached(timeout=60)
    def current():
        value = version[0]
        if not started.is_set():
            started.set()
            assert release.wait(10)
        return value

    thread = Worker(current)
    thread.start()
    assert started.wait(10)
    version[0] = 'new'  # the data changes, and the entry is invalidated meanwhile
    current.invalidate()
    release.set()
    thread.join(10)
    assert current() == 'new'  # the old computation was not stored


def test_a_value_set_during_a_computation_is_not_overwritten(cache_dir):
    started, release = threading.Event(), threading.Event()

    @file_cache.cached(timeout=60)
    def current():
        if not started.is_set():
            started.set()
            assert release.wait(10)
        return 'computed before the set'

    thread = Worker(current)
    thread.start()
    assert started.wait(10)
    current.key().set('set meanwhile')
    release.set()
    thread.join(10)
    assert current() == 'set meanwhile'


def test_a_computation_not_interrupted_is_stored(cache_dir):
    runs = []

    @file_cache.cached(timeout=60)
    def computed():
        runs.append(1)
        return len(runs)

    assert [computed(), computed()] == [1, 1]
    names = [os.path.basename(f) for f in entry_files(cache_dir)]
    assert not [name for name in names if 'pending' in name or name.startswith('.tmp-')]


def test_cleanfilecache_removes_pending_files_left_by_a_crash(cache_dir):
    file_cache.set('key', 1, timeout=100)
    entry = entry_files(cache_dir)[0]
    abandoned, recent = entry + '.pending-00ff', entry + '.pending-0aaa'
    open(abandoned, 'w').close()
    open(recent, 'w').close()
    old = time.time() - 2 * 60 * 60
    os.utime(abandoned, (old, old))
    call_command('cleanfilecache', verbosity=0)
    assert not os.path.exists(abandoned)
    assert os.path.exists(recent) and os.path.exists(entry)
