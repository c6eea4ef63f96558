"""Issue 18, signed values: with CACHEOPS_SIGNING_KEY every stored value carries an HMAC
of its key and bytes (cacheops/signing.py); one that fails it is never unpickled, is a
miss and is logged. Querysets in the run's storage mode, the simple cache, the file
cache, async hits; values written under other settings; the system check."""
import asyncio
import os
import pickle
import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from cacheops import CacheMiss, cache, cached
from cacheops.conf import insideout
from cacheops.query.async_reads import MISS, read_plain
from cacheops.redis import get_client
from cacheops.redis.async_client import aioredis
from cacheops.signing import MARK, TAG_SIZE
from cacheops.simple import FileCache, _full_key
from tests.cluster import redis_keys
from tests.test_async import in_loop
from tests.test_config_errors import cacheops_messages
from tests.utils import queries, warm
from .models import Category

pytestmark = pytest.mark.django_db

SIGNING_KEY = 'k' * 8 + os.urandom(8).hex()
OTHER_KEY = b'another signing key, 32 bytes ok'

unpickled = []  # what a planted pickle recorded when it was loaded


def _record(what):
    unpickled.append(what)
    return [what]


class Planted:
    """Pickles to a call that records that it ran: what someone who can write to Redis
    but not run code would plant."""

    def __reduce__(self):
        return _record, ('planted',)


# signed as the real thing is, but with a MAC made without the key
FORGED = MARK + b'\x00' * TAG_SIZE + pickle.dumps(Planted())


@pytest.fixture(autouse=True)
def signed():
    unpickled.clear()
    with override_settings(CACHEOPS_SIGNING_KEY=SIGNING_KEY):
        yield


def cached_bytes(key):
    """The signed bytes stored at a queryset key (after the stamps' checksum in insideout mode)."""
    data = get_client().get(key)
    return data[40:] if insideout() else data


def plant(key, data):
    """Put data where the signed bytes of a queryset key are, its checksum (insideout) kept."""
    head = get_client().get(key)[:40] if insideout() else b''
    get_client().set(key, head + data, keepttl=True)


def bad_value_warnings(caplog, key):
    return [r for r in caplog.records if r.name == 'cacheops' and 'can not be decoded' in r.getMessage()
            and key in r.getMessage()]


def titles(qs):
    return lambda: [c.title for c in qs.all()]  # a clone: qs itself keeps what it read


# Querysets, in the run's storage mode

def test_a_queryset_hit_round_trips_signed():
    Category.objects.create(title='a')
    qs = Category.objects.cache().filter(title='a')
    assert warm(titles(qs)) == ['a']
    data = cached_bytes(qs._cache_key())
    assert data.startswith(MARK)
    assert pickle.loads(data[len(MARK) + TAG_SIZE:])  # the serializer's bytes, after the MAC


def test_a_tampered_queryset_value_is_a_miss_never_unpickled_and_logged(caplog):
    Category.objects.create(title='a')
    qs = Category.objects.cache().filter(title='a')
    warm(titles(qs))
    key = qs._cache_key()
    plant(key, FORGED)
    assert queries(titles(qs)) == (['a'], 1)
    assert unpickled == []
    assert len(bad_value_warnings(caplog, key)) == 1
    assert queries(titles(qs)) == (['a'], 0)  # stored again, signed


def test_an_unsigned_pickle_is_a_miss_never_unpickled():
    Category.objects.create(title='a')
    qs = Category.objects.cache().filter(title='a')
    warm(titles(qs))
    plant(qs._cache_key(), pickle.dumps(Planted()))
    assert queries(titles(qs)) == (['a'], 1)
    assert unpickled == []


def test_a_value_moved_to_another_key_is_a_miss():
    Category.objects.create(title='x')
    Category.objects.create(title='x')
    # one condition: the same stamps, so in insideout mode only the MAC tells them apart
    up = Category.objects.cache().filter(title='x').order_by('pk')
    down = Category.objects.cache().filter(title='x').order_by('-pk')
    ids = warm(lambda: [c.pk for c in up.all()])
    assert warm(lambda: [c.pk for c in down.all()]) == ids[::-1]
    get_client().set(down._cache_key(), get_client().get(up._cache_key()), keepttl=True)
    assert queries(lambda: [c.pk for c in down.all()]) == (ids[::-1], 1)


# Values written under other settings

def test_values_stored_unsigned_are_misses_once_signing_is_on_and_the_reverse():
    Category.objects.create(title='a')
    qs = Category.objects.cache().filter(title='a')
    with override_settings(CACHEOPS_SIGNING_KEY=None):
        warm(titles(qs))
        cache.set('simple', 1)
    assert queries(titles(qs)) == (['a'], 1)
    assert queries(titles(qs)) == (['a'], 0)
    with pytest.raises(CacheMiss):
        cache.get('simple')
    cache.set('simple', 2)
    with override_settings(CACHEOPS_SIGNING_KEY=None):
        assert queries(titles(qs)) == (['a'], 1)
        assert queries(titles(qs)) == (['a'], 0)
        with pytest.raises(CacheMiss):
            cache.get('simple')


def test_another_signing_key_makes_every_value_a_miss():
    Category.objects.create(title='a')
    qs = Category.objects.cache().filter(title='a')
    warm(titles(qs))
    cache.set('simple', 1)
    with override_settings(CACHEOPS_SIGNING_KEY=OTHER_KEY):
        assert queries(titles(qs)) == (['a'], 1)
        with pytest.raises(CacheMiss):
            cache.get('simple')
        assert queries(titles(qs)) == (['a'], 0)
    assert queries(titles(qs)) == (['a'], 1)


# The simple cache in Redis

def test_the_simple_cache_round_trips_signed():
    cache.set('k', {'a': 1})
    assert get_client().get(_full_key('k')).startswith(MARK)
    assert cache.get('k') == {'a': 1}


def test_a_tampered_simple_cache_value_is_a_miss_never_unpickled():
    calls = []

    @cached(timeout=60)
    def compute(x):
        calls.append(x)
        return x * 2
    assert compute(2) == compute(2) == 4
    cache.set('k', 1)
    get_client().set(_full_key('k'), FORGED)
    get_client().set(_full_key(compute.key(2)), FORGED)
    with pytest.raises(CacheMiss):
        cache.get('k')
    assert compute(2) == 4
    assert calls == [2, 2]
    assert unpickled == []


def test_a_simple_cache_value_moved_to_another_key_is_a_miss():
    cache.set('a', 1)
    cache.set('b', 2)
    get_client().set(_full_key('b'), get_client().get(_full_key('a')))
    with pytest.raises(CacheMiss):
        cache.get('b')
    assert cache.get('a') == 1


# The file cache

def test_the_file_cache_round_trips_signed_and_refuses_tampered_or_moved_files(tmp_path):
    files = FileCache(str(tmp_path / 'cache'))
    files.set('a', 1, timeout=60)
    files.set('b', 2, timeout=60)
    assert files.get('a') == 1
    with open(files._filename('a'), 'rb') as f:
        signed_a = f.read()
    assert signed_a.startswith(MARK)

    def overwrite(key, data):  # keeps the mtime, which is the expiry
        name = files._filename(key)
        times = os.stat(name).st_atime, os.stat(name).st_mtime
        with open(name, 'wb') as f:
            f.write(data)
        os.utime(name, times)
    overwrite('b', signed_a)
    with pytest.raises(CacheMiss):
        files.get('b')
    overwrite('a', FORGED)
    with pytest.raises(CacheMiss):
        files.get('a')
    assert unpickled == []


# Async hits

@pytest.mark.skipif(aioredis is None, reason='redis-py < 4.2 has no redis.asyncio')
@pytest.mark.django_db(transaction=True)  # asgiref's thread reads the row over a connection of its own
def test_a_tampered_value_read_in_the_event_loop_is_a_miss_never_unpickled():
    category = Category.objects.create(title='a')

    async def get():
        return (await Category.objects.cache().aget(pk=category.pk)).title
    assert in_loop(get) == in_loop(get) == 'a'  # a miss, then a hit read in the loop
    [key] = [k.decode() for k in redis_keys('*q:*') if re.fullmatch(rb'(.*:)?q:[0-9a-f]{32}', k)]
    plant(key, FORGED)
    assert in_loop(get) == 'a'  # read in the loop, a miss, then the sync way
    assert unpickled == []
    assert cached_bytes(key).startswith(MARK)  # stored again, signed

    cache.set('k', 1)
    assert asyncio.run(read_plain(_full_key('k'))) == 1
    get_client().set(_full_key('k'), FORGED)
    assert asyncio.run(read_plain(_full_key('k'))) is MISS
    assert unpickled == []


# The setting

def test_the_mac_is_hmac_sha256_of_the_key_length_the_key_and_the_bytes():
    import hashlib
    import hmac
    from cacheops import signing

    secret = hashlib.sha256(b'cacheops.signing\x00' + SIGNING_KEY.encode()).digest()
    key, data = 'q:é', b'some bytes' * 20
    signed = signing.sign(key, data)
    assert signed == MARK + hmac.digest(secret, b'\x00\x00\x00\x04' + key.encode() + data,
                                        'sha256')[:TAG_SIZE] + data
    assert signing.verify(key, signed) == data
    assert signing.verify('q:e', signed) is None



@pytest.mark.parametrize('value', [42, '', b'', 'too short', b'\x00' * 15, ['a' * 16]],
                         ids=['int', 'empty-str', 'empty-bytes', 'short-str', 'short-bytes', 'list'])
def test_a_bad_signing_key_fails_system_checks_and_use(value):
    Category.objects.create(title='a')
    with override_settings(CACHEOPS_SIGNING_KEY=value):
        assert [m.id for m in cacheops_messages()] == ['cacheops.E014']
        with pytest.raises(ImproperlyConfigured, match='CACHEOPS_SIGNING_KEY'):
            cache.set('k', 1)
        with pytest.raises(ImproperlyConfigured, match='CACHEOPS_SIGNING_KEY'):
            list(Category.objects.cache().filter(title='a'))


@pytest.mark.parametrize('value', [None, SIGNING_KEY, SIGNING_KEY.encode(), OTHER_KEY])
def test_a_good_signing_key_passes_system_checks(value):
    with override_settings(CACHEOPS_SIGNING_KEY=value):
        assert cacheops_messages() == []
