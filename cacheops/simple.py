"""Time-based caching: cache, cached and cached_view in Redis; file_cache on the file system.

Entries here are not tied to the database: they live until their timeout or until they
are invalidated by hand, and transactions don't switch them off. Values go through
CACHEOPS_SERIALIZER; keys get CACHEOPS_PREFIX.
"""
import os
import re
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar, overload

try:
    import fcntl
except ImportError:  # Windows: stores and deletes are not serialized
    fcntl = None

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured

from .conf import settings, unsafe_directory
from .decorators import (
    cached_view_wrapper, call_key_parts, func_identity, signature_of, view_key_parts,
)
from .getset import is_value, new_marker
from .keys import prefix_for, signal_key
from .query.async_reads import MISS, read_plain
from .redis import _handle_connection_failure as handle_connection_failure
from .redis import redis_client, run_script
from .serialization import LayoutChanged
from .signing import dumps as _dumps, loads as _loads  # (key, value), (key, data)
from .stats import count_invalidation, count_read, count_store
from .utils import checked_timeout, md5hex, undecodable


F = TypeVar('F', bound=Callable[..., Any])


class CacheMiss(Exception):
    """Nothing is stored for the key (or it could not be read)."""


class CacheKey(str):
    """The key of one cached call: get(), set() and delete() act on its entry."""

    def __new__(cls, key, cache, timeout):
        self = super().__new__(cls, key)
        self.cache = cache
        self.timeout = timeout
        return self

    def get(self) -> Any:
        """The stored value; raises CacheMiss."""
        return self.cache.get(self)

    def set(self, value: Any) -> None:
        """Store value for the decorator's timeout."""
        self.cache.set(self, value, self.timeout)

    def delete(self) -> None:
        """Drop the entry."""
        self.cache.delete(self)


def _full_key(key):
    # the simple cache queries nothing: the prefix function sees no databases and no tables
    return prefix_for([], []) + key


def _load_or_miss(key, data):
    """The value in data, read for key; CacheMiss for one of another layout (model
    instances written for other fields of their model: another deploy), or one no loads()
    takes (corrupt or foreign bytes, or bytes not signed for the key, logged once)."""
    try:
        return _loads(_full_key(key), data)
    except LayoutChanged:
        pass
    except Exception as e:  # noqa: BLE001 - whatever loads() raises, the value is no hit
        undecodable(key, data, e)
    raise CacheMiss(key)


class BaseCache:
    """The decorators shared by the Redis and the file caches; subclasses store the values."""
    whole_seconds = True  # Redis expires keys by whole seconds (the file cache by mtime)

    def get(self, key: str) -> Any:
        raise NotImplementedError

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    @overload
    def cached(self, timeout: F, extra: None = None) -> F: ...
    @overload
    def cached(self, timeout: int | None = None, extra: Any = None) -> Callable[[F], F]: ...

    def cached(self, timeout=None, extra=None):
        """Cache a function's results by its arguments (and extra) for timeout seconds.

        The decorated function gets .invalidate(*args, **kwargs) and .key(*args, **kwargs),
        the latter with .get(), .set(value) and .delete(). Also usable bare, as @cached.
        """
        if callable(timeout) and extra is None:
            return self.cached()(timeout)
        checked_timeout(timeout, 'cached()', self.whole_seconds)

        def decorator(func):
            identity = func_identity(func)
            signature = signature_of(func)

            def key(args, kwargs):
                parts = call_key_parts(signature, extra, args, kwargs)
                return CacheKey('c:' + md5hex('\n'.join((identity, *parts))), self, timeout)

            if iscoroutinefunction(func):
                @wraps(func)
                async def wrapper(*args, **kwargs):
                    if not settings.CACHEOPS_ENABLED:
                        return await func(*args, **kwargs)
                    # a miss computes in a thread, which awaits func in the event loop
                    return await self._acached_call(
                        key(args, kwargs), lambda: async_to_sync(func)(*args, **kwargs), func)
            else:
                @wraps(func)
                def wrapper(*args, **kwargs):
                    if not settings.CACHEOPS_ENABLED:
                        return func(*args, **kwargs)
                    return self._cached_call(key(args, kwargs), lambda: func(*args, **kwargs), func)

            wrapper.key = lambda *args, **kwargs: key(args, kwargs)
            wrapper.invalidate = _counted(func, lambda *args, **kwargs: key(args, kwargs).delete())
            return wrapper
        return decorator

    @overload
    def cached_view(self, timeout: F, extra: None = None) -> F: ...
    @overload
    def cached_view(self, timeout: int | None = None, extra: Any = None) -> Callable[[F], F]: ...

    def cached_view(self, timeout=None, extra=None):
        """Cache a view's 200 responses (or other values it returns) to GET and HEAD for
        timeout seconds, keyed on the URI.

        .invalidate() and .key() take a request or an absolute URI, then the view's other
        arguments. Also usable bare, as @cached_view.
        """
        if callable(timeout) and extra is None:
            return self.cached_view()(timeout)
        checked_timeout(timeout, 'cached_view()', self.whole_seconds)

        def decorator(view):
            identity = func_identity(view)
            signature = signature_of(view)

            def key(request, args, kwargs):
                parts = view_key_parts(signature, extra, request, args, kwargs)
                return CacheKey('v:' + md5hex('\n'.join((identity, *parts))), self, timeout)

            def call(request, args, kwargs, compute):
                return self._cached_call(key(request, args, kwargs), compute, view)

            def acall(request, args, kwargs, compute):
                return self._acached_call(key(request, args, kwargs), compute, view)

            wrapper = cached_view_wrapper(view, call, acall)
            wrapper.key = lambda request, *args, **kwargs: key(request, args, kwargs)
            wrapper.invalidate = _counted(
                view, lambda request, *args, **kwargs: key(request, args, kwargs).delete())
            return wrapper
        return decorator

    async def _acached_call(self, key, compute, func):
        """_cached_call() for a coroutine function or view, in a thread (compute() is sync)."""
        return await sync_to_async(self._cached_call)(key, compute, func)

    def _cached_call(self, key, compute, func):
        try:
            value = key.get()
        except CacheMiss:
            count_read(None, func, False, key)
            value = compute()
            key.set(value)
            count_store(None, func, key)
            return value
        count_read(None, func, True, key)
        return value


def _counted(func, invalidate):
    """invalidate, counted as an invalidation of func for cacheops.stats()."""
    def counted(*args, **kwargs):
        invalidate(*args, **kwargs)
        count_invalidation(None, func)
    return counted


class RedisCache(BaseCache):
    """The simple cache in Redis: get() raises CacheMiss, set() with timeout=None never expires."""

    def __init__(self, client: Any) -> None:
        self.client = client
        # Looked up now, through this module, so that tests can patch handle_connection_failure.
        # With CACHEOPS_DEGRADE_ON_FAILURE a failed read is a miss, a failed write is skipped.
        self._read = handle_connection_failure(self._read)
        self._pending = handle_connection_failure(self._pending)
        self._store = handle_connection_failure(self._store)
        self.set = handle_connection_failure(self.set)
        self.delete = handle_connection_failure(self.delete)

    def _read(self, key):
        return self.client.get(_full_key(key))

    def get(self, key: str) -> Any:
        """The value stored at key; raises CacheMiss."""
        data = self._read(key)
        if not is_value(data):
            raise CacheMiss(key)
        return _load_or_miss(key, data)

    def _cached_call(self, key, compute, func):
        """A miss puts a pending marker at the key before computing and stores only if the
        marker is still there, so an invalidate() during the computation is never
        overwritten by what was computed before it (docs/design.md, invariant 1)."""
        data = self._read(key)
        if is_value(data):
            try:
                value = _load_or_miss(key, data)
            except CacheMiss:
                # else _pending() finds it there and nothing is stored; deleting what
                # another process put there meanwhile costs it a store, nothing more
                self.delete(key)
            else:
                count_read(None, func, True, key)
                return value
        count_read(None, func, False, key)
        marker = self._pending(key)
        value = compute()
        if marker is not None:
            self._store(key, marker, value)
            count_store(None, func, key)
        return value

    async def _acached_call(self, key, compute, func):
        """_cached_call() awaited: a hit read in the event loop, the rest in a thread."""
        value = await read_plain(_full_key(key))
        if value is MISS:
            return await sync_to_async(self._cached_call)(key, compute, func)
        count_read(None, func, True, key)
        return value

    def _pending(self, key):
        """Our marker at key, or the marker somebody else computing it put there; None
        when a value was stored meanwhile (then ours is not needed)."""
        if key.timeout is not None and key.timeout <= 0:
            return None  # expired as soon as stored: nothing to store
        full, marker = _full_key(key), new_marker()
        if self.client.set(full, marker, ex=key.timeout, nx=True):
            return marker
        current = self.client.get(full)
        return current if current is not None and not is_value(current) else None

    def _store(self, key, marker, value):
        # the value keeps the marker's expiry: the timeout, counted from the miss
        full = _full_key(key)
        run_script('store', [full, signal_key(full)], [marker, _dumps(full, value), '0'])

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        """Store value at key for timeout seconds (None: until deleted)."""
        if timeout is not None and timeout <= 0:
            self.client.delete(_full_key(key))  # expired already
            return
        full = _full_key(key)
        self.client.set(full, _dumps(full, value), ex=timeout)

    def delete(self, key: str) -> None:
        """Drop the value at key, if any."""
        self.client.delete(_full_key(key))


cache = RedisCache(redis_client)
cached = cache.cached
cached_view = cache.cached_view


# File cache

TMP_PREFIX = '.tmp-'
PENDING = '.pending-'  # <entry name>.pending-<token>: a miss computing the entry
LOCK_NAME = '.lock'  # one per directory, held while storing after a miss or deleting
ABANDONED_AFTER = 60 * 60  # a temporary or pending file this old was left behind by a crash
_ENTRY_NAME = re.compile(r'^[0-9a-f]{32}$')
_PENDING_NAME = re.compile(r'^[0-9a-f]{32}%s[0-9a-f]+$' % re.escape(PENDING))


_trusted_dirs = set()  # directories found safe (few: one per FileCache path)


class FileCache(BaseCache):
    """The simple cache in files: one file per key, written atomically, expiring by mtime.

    A file's mtime is its expiry time. Readers ignore expired files; `manage.py
    cleanfilecache` removes them. path and timeout default to FILE_CACHE_DIR and
    FILE_CACHE_TIMEOUT, read when used.
    """
    whole_seconds = False

    def __init__(self, path: str | None = None, timeout: int | None = None) -> None:
        self._path = path
        self._timeout = timeout

    @property
    def path(self) -> str:
        """The cache directory; ImproperlyConfigured if another user owns it or others can
        write in it (they could plant a pickle this process loads), asked once per path."""
        path = self._path or settings.FILE_CACHE_DIR
        if path not in _trusted_dirs:
            reason = unsafe_directory(path)
            if reason:
                raise ImproperlyConfigured('cacheops: the file cache refuses %r: %s' % (path, reason))
            _trusted_dirs.add(path)
        return path

    def _filename(self, key):
        digest = md5hex(_full_key(key))
        return os.path.join(self.path, digest[:2], digest)

    def _make_dirs(self, dirname):
        # only we may write in them, whatever the umask (a group-writable one is refused
        # by the next process); makedirs' mode is for the last directory only
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        os.makedirs(dirname, mode=0o700, exist_ok=True)

    def get(self, key: str) -> Any:
        """The value stored at key; raises CacheMiss when missing or expired."""
        try:
            with open(self._filename(key), 'rb') as f:
                if os.fstat(f.fileno()).st_mtime < time.time():
                    raise CacheMiss(key)
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise CacheMiss(key)
        return _load_or_miss(key, data)

    def set(self, key: str, value: Any, timeout: int | None = None) -> None:
        """Store value at key for timeout seconds (None: the cache's default timeout)."""
        def put(tmp, filename):
            # newer than what the misses computing it will store: theirs are dropped
            with _locked(os.path.dirname(filename)):
                os.replace(tmp, filename)
                _remove_pending(filename)
        self._write(key, value, timeout, put)

    def _write(self, key, value, timeout, put):
        """Write value aside, then put(that file, the entry's file name)."""
        if timeout is None:
            timeout = self._timeout if self._timeout is not None else settings.FILE_CACHE_TIMEOUT
        data = _dumps(_full_key(key), value)
        if isinstance(data, str):
            data = data.encode()
        filename = self._filename(key)
        dirname = os.path.dirname(filename)
        self._make_dirs(dirname)
        # Written aside and renamed over the entry: a reader sees the old file or the new
        # one, never a partial one, however many processes write the key at once.
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dirname)
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            expires = time.time() + timeout
            os.utime(tmp, (expires, expires))
            put(tmp, filename)
        finally:
            _remove(tmp)  # gone if put() renamed it

    def delete(self, key: str) -> None:
        """Drop the value at key, if any, and the stores of the misses computing it."""
        filename = self._filename(key)
        with _locked(os.path.dirname(filename)):
            _remove(filename)
            _remove_pending(filename)

    def _cached_call(self, key, compute, func):
        """A miss leaves a pending file by the entry before computing and stores only if
        it is still there: delete() removes them with the entry, so an invalidate() during
        the computation is never overwritten by what was computed before it (docs/design.md,
        invariant 1)."""
        try:
            value = self.get(key)
        except CacheMiss:
            pass
        else:
            count_read(None, func, True, key)
            return value
        count_read(None, func, False, key)
        filename = self._filename(key)
        self._make_dirs(os.path.dirname(filename))
        pending = '%s%s%s' % (filename, PENDING, os.urandom(8).hex())
        open(pending, 'xb').close()
        try:
            value = compute()

            def put_if_pending(tmp, filename):
                with _locked(os.path.dirname(filename)):
                    if os.path.exists(pending):
                        os.replace(tmp, filename)
            self._write(key, value, key.timeout, put_if_pending)
            count_store(None, func, key)
        finally:
            _remove(pending)
        return value

    def clean(self) -> int:
        """Remove expired entries and abandoned temporary files; returns how many were removed."""
        now = time.time()
        removed = 0
        for dirpath, _, filenames in os.walk(self.path):
            for name in filenames:
                if name.startswith(TMP_PREFIX) or _PENDING_NAME.match(name):
                    limit = now - ABANDONED_AFTER
                elif _ENTRY_NAME.match(name):
                    limit = now
                else:
                    continue  # not ours: leave it
                filename = os.path.join(dirpath, name)
                try:
                    expired = os.lstat(filename).st_mtime < limit
                except FileNotFoundError:
                    continue
                if expired and _remove(filename):
                    removed += 1
        return removed


@contextmanager
def _locked(dirname):
    """Hold the lock of a cache directory (which exists) for the block."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(os.path.join(dirname, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # no directory: nothing to store into or delete from
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_pending(filename):
    """Remove the pending files of an entry: the misses computing it store nothing."""
    dirname, prefix = os.path.dirname(filename), os.path.basename(filename) + PENDING
    try:
        names = os.listdir(dirname)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix):
            _remove(os.path.join(dirname, name))


def _remove(filename):
    try:
        os.remove(filename)
        return True
    except FileNotFoundError:
        return False


file_cache = FileCache()


# Template fragments

def fragment_function(render):
    """The function a template tag decorates to cache a fragment.

    Keys depend on the decorated function's identity: every fragment goes through this
    one, so that invalidate_fragment() can compute their keys.
    """
    def fragment():
        return render()
    return fragment


def invalidate_fragment(fragment_name: str, *extra: Any) -> None:
    """Drop the fragment {% cached ... fragment_name extra... %} stored under these values."""
    cached(extra=(fragment_name, *extra))(fragment_function(None)).invalidate()
