"""The Redis client built from settings, degrade-on-failure, and Lua scripts run by SHA
or sent without waiting for their reply."""
import hashlib
import os
import threading
import time
import warnings
import weakref
from functools import wraps

import redis
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.functional import SimpleLazyObject, empty
from django.utils.module_loading import import_string

from .conf import settings

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def _handle_connection_failure(func):
    """With CACHEOPS_DEGRADE_ON_FAILURE, a failed Redis call warns and returns None."""
    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CONNECTION_ERRORS as e:
            if not settings.CACHEOPS_DEGRADE_ON_FAILURE:
                raise
            warnings.warn('cacheops: the cache is unavailable: %s' % e, RuntimeWarning)
            return None
    return wrapper


def client_class():
    path = settings.CACHEOPS_CLIENT_CLASS
    if not path:
        return redis.Redis
    try:
        cls = import_string(path) if isinstance(path, str) else path
    except ImportError as e:
        raise ImproperlyConfigured('CACHEOPS_CLIENT_CLASS: cannot import %r: %s' % (path, e))
    if not isinstance(cls, type):
        raise ImproperlyConfigured('CACHEOPS_CLIENT_CLASS must name a redis client class, got %r' % (cls,))
    return cls


def make_client():
    """A client for CACHEOPS_SENTINEL, else CACHEOPS_REDIS (a dict, a URL or empty)."""
    cls = client_class()
    sentinel = settings.CACHEOPS_SENTINEL
    if sentinel:
        return _sentinel_client(cls, sentinel)
    conf = settings.CACHEOPS_REDIS
    if isinstance(conf, str):
        try:
            return cls.from_url(conf)
        except ValueError as e:
            raise ImproperlyConfigured('CACHEOPS_REDIS is not a valid Redis URL: %s' % e)
    if isinstance(conf, dict):
        try:
            return cls(**conf)
        except TypeError as e:
            raise ImproperlyConfigured('CACHEOPS_REDIS has an option the client does not take: %s' % e)
    raise ImproperlyConfigured(
        'CACHEOPS_REDIS must be a dict of connection options or a redis:// URL, got %r' % (conf,))


def _sentinel_client(cls, conf):
    from redis.sentinel import Sentinel
    if not isinstance(conf, dict) or not conf.get('locations') or not conf.get('service_name'):
        raise ImproperlyConfigured(
            "CACHEOPS_SENTINEL must be a dict with 'locations' and 'service_name'")
    conf = dict(conf)
    locations = conf.pop('locations')
    service = conf.pop('service_name')
    db = conf.pop('db', 0)
    sentinel = Sentinel(locations, **conf)
    return sentinel.master_for(service, redis_class=cls, db=db)


redis_client = SimpleLazyObject(make_client)


def get_client():
    """The real client behind redis_client (skips the lazy proxy on hot paths)."""
    client = redis_client.__dict__['_wrapped']  # the proxy's own attribute, read past its hooks
    if client is empty:
        redis_client._setup()
        client = redis_client._wrapped
    return client


def is_cluster():
    return hasattr(get_client(), 'get_nodes')


def _reset_client(setting, **kwargs):
    if setting in ('CACHEOPS_REDIS', 'CACHEOPS_SENTINEL', 'CACHEOPS_CLIENT_CLASS'):
        redis_client._wrapped = empty


setting_changed.connect(_reset_client)


# Lua scripts: read from cacheops/lua once, run by SHA, loaded on NOSCRIPT.

LUA_DIR = os.path.join(os.path.dirname(__file__), 'lua')
_scripts = {}


def _script(name):
    try:
        return _scripts[name]
    except KeyError:
        with open(os.path.join(LUA_DIR, name + '.lua'), 'rb') as f:
            code = f.read()
        _scripts[name] = code, hashlib.sha1(code).hexdigest()
        return _scripts[name]


def run_script(name, keys=(), args=(), client=None):
    """Run cacheops/lua/<name>.lua with KEYS and ARGV."""
    client = client or get_client()
    code, sha = _script(name)
    try:
        return client.evalsha(sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        client.script_load(code)
        return client.evalsha(sha, len(keys), *keys, *args)


def start_script(name, keys=(), args=()):
    """Send cacheops/lua/<name>.lua and return a callable giving its reply later, as
    run_script() would: whatever needs no Redis can be done while Redis runs it."""
    client = get_client()
    pool = _plain_pool(client)
    if pool is None or client.connection is not None:
        return _Reply(run_script(name, keys, args, client))
    if _thread_held.held is not None:
        _settle(pool)  # after this thread's last store, as any other command
    connection = _connection(pool)
    try:
        connection.send_packed_command(
            connection.pack_command('EVALSHA', _script(name)[1], len(keys), *keys, *args))
    except BaseException as e:
        pool.release(connection)  # (send_packed_command drops a connection it failed on)
        if not isinstance(e, CONNECTION_ERRORS):
            raise
        return _Reply(run_script(name, keys, args, client))
    return _PendingReply(client, pool, connection, name, keys, args)


class _Reply:
    __slots__ = ('value',)

    def __init__(self, value):
        self.value = value

    def __call__(self):
        return self.value


class _PendingReply:
    """The reply of a script start_script() sent, read when called (once)."""
    __slots__ = ('client', 'pool', 'connection', 'script')

    def __init__(self, client, pool, connection, *script):
        self.client, self.pool, self.connection, self.script = client, pool, connection, script

    def __call__(self):
        connection, self.connection = self.connection, None
        try:
            return connection.read_response()
        except (redis.exceptions.NoScriptError, *CONNECTION_ERRORS):
            pass  # run again below: loaded, or over a sound connection with retries
        except BaseException as e:
            if not isinstance(e, redis.ResponseError):  # interrupted: a reply may be left
                connection.disconnect()
            raise
        finally:
            self.pool.release(connection)
        return run_script(*self.script, client=self.client)


# Reads on the hot path: a GET or an MGET, whose replies redis-py hands back as they
# come, go straight to a pooled connection. redis-py's command layer around it (retry
# wrapper, metrics, argument checks) costs a hit 8-12 µs of Python, a tenth of the
# round trip. A connection error falls back to that layer, retries and all.

def read_command(client, *args):
    """client.execute_command(*args), for GET and MGET."""
    pool = _plain_pool(client)
    if pool is None or client.connection is not None:  # single_connection_client
        return client.execute_command(*args)
    if _thread_held.held is not None:
        held = _take_held(_store_pools.get(pool))
        if held is not None:
            reply = _after_store(pool, held, args)
            return client.execute_command(*args) if reply is _DROPPED else reply
    connection = _connection(pool)
    try:
        connection.send_packed_command(connection.pack_command(*args))
        return connection.read_response()
    except CONNECTION_ERRORS:  # the connection was dropped: it is reconnected on next use
        return client.execute_command(*args)
    finally:
        pool.release(connection)


_DROPPED = object()


def _after_store(pool, held, args, expected=None):
    """The reply to a command sent over the connection this thread's last store went over
    (so it runs after the store), or _DROPPED if the connection was dropped instead: it
    failed, or the reply was an error or not one of expected."""
    store_pool, connection = held
    try:
        connection.send_packed_command(connection.pack_command(*args))
        reply = connection.read_response()
        if expected is None or reply in expected:
            return reply
        connection.disconnect()
    except redis.ResponseError:
        # replies of a store whose CLIENT REPLY SKIP the server refused start with the
        # refusal (a script busy for long, an ACL changed): drop them, and ask again
        connection.disconnect()
        _stop_skipping_replies(pool)
    except BaseException as e:
        connection.disconnect()  # replies may be left unread on it
        if not isinstance(e, CONNECTION_ERRORS):
            raise
    finally:
        store_pool.release(connection)
    return _DROPPED


# Scripts whose reply nobody needs: a store after a miss. Losing one is harmless (the
# next read misses again), so it is sent with CLIENT REPLY SKIP and nobody waits for
# Redis: a round trip less per miss. As EVAL with the code, not EVALSHA, so that no
# NOSCRIPT can go unseen. Invalidations are never sent this way: one that failed
# unseen (a busy or read-only server) would leave stale entries.
#
# A server may refuse the SKIP (busy running a long script, an ACL changed since it was
# asked): then replies are left on the connection, which the next command on it would
# take for its own (redis-py doesn't always check a pooled connection for them). So
# stores go over connections of their own, from a second pool, that redis-py's commands
# never use; one found holding replies is dropped, and stores wait for their replies
# for a while. The thread keeps the connection its store went over for its next read
# (read_command), which so runs after the store: Redis orders commands only within a
# connection. Any other command of the thread (redis-py's: scripts, pipelines) waits
# for the store first (_settle). A thread ending first gives it back.

_SKIP_REPLY = ('CLIENT', 'REPLY', 'SKIP')
# connection pool -> True if its server skips replies, else when to ask it again (a
# server that was busy, or whose ACL changed, may skip them again later)
_skips_replies = weakref.WeakKeyDictionary()
ASK_AGAIN_AFTER = 60  # seconds


def _stop_skipping_replies(pool):
    _skips_replies[pool] = time.monotonic() + ASK_AGAIN_AFTER


def send_script(name, keys=(), args=()):
    """Run cacheops/lua/<name>.lua without waiting for its reply, where the client and
    the server allow; else as run_script() does."""
    client = get_client()
    pool = _plain_pool(client)
    store_pool = None if pool is None else _store_pool(pool)
    if store_pool is None or not _can_skip_replies(pool, store_pool):
        run_script(name, keys, args, client)
        return
    code = _script(name)[0]
    held = _take_held(store_pool)
    try:
        connection = _connection(store_pool) if held is None else held[1]
    except CONNECTION_ERRORS:  # none free (max_connections), or none to be made
        run_script(name, keys, args, client)
        return
    kept = False
    try:
        if connection.can_read():  # replies of a refused SKIP: drop them, and wait a while
            connection.disconnect()
            _stop_skipping_replies(pool)
        else:
            # send_packed_command drops a connection it failed to write to
            connection.send_packed_command(connection.pack_commands(
                [_SKIP_REPLY, ('EVAL', code, len(keys), *keys, *args)]))
            _hold(store_pool, connection)
            kept = True
            return
    except CONNECTION_ERRORS:
        pass  # sent again below
    except BaseException:
        connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        if not kept:
            store_pool.release(connection)
    # with the client's retries, as any command (a store that ran twice finds its marker
    # gone, or stores the same value again)
    run_script(name, keys, args, client)


class _Held:
    """The store connection a thread keeps for its next read; given back if the thread
    ends first (whoever takes it next copes with replies a refused SKIP left on it)."""
    __slots__ = ('pid', 'store_pool', 'connection')

    def __init__(self, store_pool, connection):
        self.pid, self.store_pool, self.connection = os.getpid(), store_pool, connection

    def __del__(self):
        connection, self.connection = self.connection, None
        if connection is not None and self.pid == os.getpid():
            try:
                self.store_pool.release(connection)
            except Exception:  # noqa: BLE001 - at interpreter exit, say
                pass


class _ThreadHeld(threading.local):
    held = None


_thread_held = _ThreadHeld()


def _hold(store_pool, connection):
    _thread_held.held = _Held(store_pool, connection)


def _take_held(store_pool):
    """(store pool, connection) this thread kept after a store on store_pool, or None;
    the caller gives the connection back."""
    held = _thread_held.held
    if held is None or store_pool is None:
        return None
    _thread_held.held = None
    connection, held.connection = held.connection, None
    if held.store_pool is not store_pool or held.pid != os.getpid() or connection is None:
        if connection is not None and held.pid == os.getpid():
            held.store_pool.release(connection)  # of a client replaced since
        return None
    return store_pool, connection


_store_pools = weakref.WeakKeyDictionary()  # a client's pool -> the pool its stores use


def _store_pool(pool):
    """The pool of connections that send only stores, for a plain or blocking connection
    pool (not Sentinel's, whose connections find their server through it); None for
    others. As big as the client's, but never blocking: a store finding no connection
    free (threads keep theirs, see _Held) waits for its reply on the client's."""
    try:
        return _store_pools[pool]
    except KeyError:
        pass
    store_pool = None
    if type(pool) in (redis.ConnectionPool, redis.BlockingConnectionPool):
        store_pool = redis.ConnectionPool(connection_class=pool.connection_class,
                                          max_connections=pool.max_connections,
                                          **pool.connection_kwargs)
        _settle_stores_first(pool)
    _store_pools[pool] = store_pool
    return store_pool


def _settle_stores_first(pool):
    """Make every other command of a thread through pool (redis-py's own: scripts,
    pipelines, a test reading a key) run after the store this thread sent last."""
    def settled_get_connection(*args, **kwargs):
        if _thread_held.held is not None:
            _settle(pool)
        # the class's, looked up each time: fault injection patches it there
        return type(pool).get_connection(pool, *args, **kwargs)
    pool.get_connection = settled_get_connection


def _settle(pool):
    """Wait until Redis has run the store this thread sent last: a PING after it, on its
    connection, is answered after it."""
    held = _take_held(_store_pools.get(pool))
    if held is not None:  # dropped or not, the command that follows goes on as it would
        _after_store(pool, held, ('PING',), expected=(b'PONG', 'PONG'))


def _plain_pool(client):
    """The client's connection pool if its commands can be sent past it: a plain
    redis.Redis (or a Sentinel master), not a cluster, no commands intercepted."""
    if not isinstance(client, redis.Redis) or \
            type(client).execute_command is not redis.Redis.execute_command:
        return None
    return getattr(client, 'connection_pool', None)


def _connection(pool):
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 6 wants a command name
        return pool.get_connection('EVAL')


def _can_skip_replies(pool, store_pool):
    """Whether the server honours CLIENT REPLY SKIP (a proxy or an ACL may refuse it),
    asked once per pool (again a while after a refusal) on a store connection: SKIP,
    ECHO 1, ECHO 2 give one reply, 2, only if it skipped. Any other first reply leaves
    an unknown number behind: the connection is dropped."""
    known = _skips_replies.get(pool)
    if known is True or known is not None and time.monotonic() < known:
        return known is True
    connection = _connection(store_pool)
    skips = False
    try:
        connection.send_packed_command(connection.pack_commands(
            [_SKIP_REPLY, ('ECHO', '1'), ('ECHO', '2')]))
        try:
            skips = connection.read_response() in (b'2', '2')
        except redis.ResponseError:  # CLIENT REPLY refused, or ECHO: don't find out which
            pass
        if not skips:
            connection.disconnect()
    except BaseException:
        connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        store_pool.release(connection)
    if skips:
        _skips_replies[pool] = True
    else:
        _stop_skipping_replies(pool)
    return skips
