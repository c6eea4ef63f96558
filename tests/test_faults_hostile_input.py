"""Issue 18, finding 11: md5 allowed on FIPS builds; no key from a repr() that is a
memory address; conj key names of bounded length; a bounded queue of kept
invalidations; the replay lock usable in a forked child; the file cache refusing a
directory another user owns or others can write."""
import hashlib
import os
import stat
import threading
from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from cacheops import cached, cached_as, failed, invalidation, utils
from cacheops.simple import FileCache
from tests.cluster import redis_keys
from tests.models import Category, Post
from tests.test_config_errors import cacheops_messages
from tests.test_degrade import redis_down
from tests.utils import queries, warm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_pending_failures():
    yield
    invalidation.failed.clear()


def test_keys_use_md5_where_a_fips_build_refuses_it_for_security():
    real = hashlib.md5

    def fips_md5(data=b'', *, usedforsecurity=True):
        if usedforsecurity:
            raise ValueError('[digital envelope routines] unsupported')
        return real(data, usedforsecurity=False)

    cat = Category.objects.create(title='c')
    with mock.patch.object(hashlib, 'md5', fips_md5):
        assert warm(lambda: [p.title for p in Post.objects.cache().filter(category=cat)]) == []
        assert cached(timeout=60)(lambda x: x * 2)(21) == 42
        assert cached_as(Post, timeout=60)(lambda: 'as')() == 'as'


class Opaque:
    """Its repr is object's: '<...Opaque object at 0x...>', new in every process."""


def test_an_argument_whose_repr_is_a_memory_address_is_refused():
    @cached(timeout=60)
    def simple(thing):
        return 1

    @cached_as(Post, timeout=60)
    def as_post(thing):
        return 2

    for func in (simple, as_post):
        with pytest.raises(TypeError, match="argument 'thing': .*Opaque.*memory address"):
            func(Opaque())
    assert simple(3) == 1  # a value with a repr of its own is keyed as before


def test_a_string_that_reads_like_a_memory_address_is_keyed_as_any_string():
    @cached(timeout=60)
    def search(query):
        return query.upper()

    # a query string is anyone's to choose: it must never turn a cached view into a 500
    assert search('segfault at 0x7f00') == 'SEGFAULT AT 0X7F00'
    assert search('<crash at 0x1f>') == '<CRASH AT 0X1F>'


def conj_keys():
    return sorted(k.decode() for k in redis_keys('*conj:*'))


@pytest.mark.skipif(connection.vendor == 'mysql',
                    reason="MySQL's collations compare strings loosely: no string value is in a conj key there")
def test_conj_key_names_hold_short_values_and_hash_long_ones():
    cat = Category.objects.create(title='c')
    long_title = 'x' * 128  # the column's length, past the cap

    def short():
        return [p.pk for p in Post.objects.cache().filter(title='short')]

    def long():
        return [p.pk for p in Post.objects.cache().filter(title=long_title)]
    assert warm(short) == [] and warm(long) == []
    names = conj_keys()
    assert any(name.endswith('title=short') for name in names), names  # COMPAT.md's layout
    assert len(long_title) > utils.CONJ_VALUE_MAX
    assert not any(long_title in name for name in names), names
    assert any(name.endswith('title=md5:' + utils.md5hex(long_title)) for name in names), names
    post = Post.objects.create(title=long_title, category=cat)  # invalidates the long one
    assert queries(long) == ([post.pk], 1)
    assert queries(short) == ([], 0)


def test_kept_invalidations_past_the_bound_collapse_into_dropping_everything(monkeypatch):
    monkeypatch.setattr(failed, 'MAX_KEPT', 3)
    cat = Category.objects.create(title='c')
    posts = [Post.objects.create(title='old%d' % i, category=cat) for i in range(5)]

    def titles(i):
        return lambda: [p.title for p in Post.objects.cache().filter(pk=posts[i].pk)]
    for i in range(5):
        warm(titles(i))
    with redis_down():
        for post in posts:
            post.title = 'new'
            post.save()
    assert len(failed.failed) == 1  # one call, whatever the writes
    for i in range(5):  # the first read replays it: nothing cached before is left
        assert queries(titles(i)) == (['new'], 1)
    assert not failed.failed


def test_the_replay_lock_is_free_in_a_forked_child():
    held, release = threading.Event(), threading.Event()

    def hold():
        with failed.failed_lock:
            held.set()
            release.wait(10)
    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holder thread is not there to release it
            os._exit(0 if failed.failed_lock.acquire(timeout=2) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
    assert os.waitstatus_to_exitcode(status) == 0, 'the child found the lock held'


def test_the_file_cache_makes_its_directories_only_its_own_whatever_the_umask(tmp_path):
    path = tmp_path / 'cache'
    umask = os.umask(0o002)  # a common default: group-writable directories
    try:
        FileCache(str(path)).set('k', 'v', timeout=60)
    finally:
        os.umask(umask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [path, *path.iterdir()] if p.is_dir()}
    assert modes == {0o700}
    assert FileCache(str(path)).get('k') == 'v'  # another process would accept them too


@pytest.mark.parametrize('mode', [0o777, 0o775, 0o757])
def test_a_file_cache_directory_others_can_write_is_refused(tmp_path, mode):
    path = tmp_path / 'cache'
    path.mkdir()
    path.chmod(mode)
    with override_settings(FILE_CACHE_DIR=str(path)):
        assert [m.id for m in cacheops_messages()] == ['cacheops.E013']
    with pytest.raises(ImproperlyConfigured, match='refuses'):
        FileCache(str(path)).set('key', 1)
    path.chmod(0o755)
    with override_settings(FILE_CACHE_DIR=str(path)):
        assert cacheops_messages() == []
    FileCache(str(path)).set('key', 1)
    assert FileCache(str(path)).get('key') == 1


@pytest.mark.skipif(not hasattr(os, 'getuid') or os.getuid() != 0, reason='chown needs root')
def test_a_file_cache_directory_another_user_owns_is_refused(tmp_path):
    path = tmp_path / 'cache'
    path.mkdir(mode=0o700)
    os.chown(path, 12345, 12345)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    with override_settings(FILE_CACHE_DIR=str(path)):
        assert [m.id for m in cacheops_messages()] == ['cacheops.E013']
    with pytest.raises(ImproperlyConfigured, match='another user'):
        FileCache(str(path)).set('key', 1)
