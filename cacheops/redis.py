"""The Redis client built from settings, degrade-on-failure, and Lua scripts run by SHA
or sent without waiting for their reply."""
import codecs
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

from .conf import client_class, is_cluster, settings  # noqa: F401 - is_cluster asked here by invalidation.py
from .utils import remember

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


def make_client():
    """A client for CACHEOPS_SENTINEL, else CACHEOPS_REDIS (a dict, a URL or empty)."""
    cls = client_class() or redis.Redis
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
    held = _thread_held.held
    if held is not None and held.pool is getattr(client, 'connection_pool', None) \
            and client.connection is None and _plain_pool(client) is not None:
        # over the thread's connection, after its stores: no round trip to settle them
        reply = _script_over_held(held, ('EVALSHA', sha, len(keys), *keys, *args))
        if reply is not _DROPPED:
            return reply
        # NOSCRIPT or a failure: again below, as any command
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
    held = _thread_held.held
    if held is not None and held.pool is pool:
        return _start_over_held(held, client, (name, keys, args))
    _settle(pool)  # after this thread's stores, as any other command
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


def _start_over_held(held, client, script):
    """start_script() over this thread's connection. The thread lends it to the reply
    until that is read: a command of the thread meanwhile takes another connection,
    instead of reading this reply for its own."""
    name, keys, args = script
    # lent before it is sent: an interruption from now on leaves the reply with the
    # connection, which drops it unread
    _thread_held.held = None
    reply = _HeldReply(client, held, script)
    reply.pinged = _send_over_held(held, ('EVALSHA', _script(name)[1], len(keys), *keys, *args))
    if reply.pinged is _DROPPED:
        reply.held = None
        return _Reply(run_script(name, keys, args, client))
    return reply


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


class _HeldReply:
    """The reply of a script _start_over_held() sent, read when called (once); the
    connection is this thread's again after that, or dropped if never read."""
    __slots__ = ('client', 'held', 'pinged', 'script', 'connection')

    def __init__(self, client, held, script):
        self.client, self.held, self.script = client, held, script
        self.pinged = _DROPPED
        self.connection = held.connection

    def __call__(self):
        try:
            reply = _read_over_held(self.held, self.pinged)  # drops it if the read fails
        except redis.ResponseError:  # the script's own error, read: the connection is sound
            self._give_back()
            raise
        self._give_back()
        return run_script(*self.script, client=self.client) if reply is _DROPPED else reply

    def _give_back(self):
        held, self.held = self.held, None
        _take_back(held)

    def __del__(self):
        held, self.held = self.held, None
        if held is not None and held.pid == os.getpid():  # unread: its reply is left on it
            _drop_held(held)


def _take_back(held):
    """Keep a lent connection as this thread's again, unless the thread took another
    meanwhile (then give it back) or it was dropped."""
    if held.connection is None:
        return
    if _thread_held.held is None and held.pid == os.getpid():
        _thread_held.held = held
        return
    connection, held.connection = held.connection, None
    held.store_pool.release(connection)


# Reads on the hot path: a GET or an MGET, whose replies redis-py hands back as they
# come, go straight to a connection. redis-py's command layer around it (retry
# wrapper, metrics, argument checks) costs a hit 8-12 µs of Python, a tenth of the
# round trip, and taking a connection from the pool and giving it back 9 µs more: a
# thread keeps one (see _Held). A connection error falls back to that layer, retries
# and all.

def read_command(client, *args):
    """client.execute_command(*args), for GET and MGET."""
    pool = _plain_pool(client)
    if pool is None or client.connection is not None:  # single_connection_client
        return client.execute_command(*args)
    held = _thread_held.held
    if held is None or held.pool is not pool:
        held = _keep_connection(pool)
        if held is None:  # none free (max_connections), or not for this pool
            return _pooled_read(client, pool, args)
    reply = _over_held(held, args)
    return client.execute_command(*args) if reply is _DROPPED else reply


def _pooled_read(client, pool, args):
    connection = _connection(pool)
    try:
        connection.send_packed_command(connection.pack_command(*args))
        return connection.read_response()
    except CONNECTION_ERRORS:  # the connection was dropped: it is reconnected on next use
        return client.execute_command(*args)
    finally:
        pool.release(connection)


_DROPPED = object()


def _over_held(held, args, expected=None):
    """The reply to a command sent over this thread's connection (so after the stores sent
    over it), or _DROPPED if the connection was given up instead: it failed, or the reply
    was an error or not one of expected."""
    connection = held.connection
    try:
        connection.send_packed_command(_packed_read(held, args))
        reply = connection.read_response()
        if expected is None or reply in expected:
            held.stores = False
            return reply
    except redis.ResponseError:
        if held.stores:
            # replies of a store whose CLIENT REPLY SKIP the server refused come first (a
            # script busy for long, an ACL changed): drop them, and ask again later
            _stop_skipping_replies(held.pool)
    except BaseException as e:
        _drop_held(held)  # replies may be left unread on it
        if not isinstance(e, CONNECTION_ERRORS):
            raise
        return _DROPPED
    _drop_held(held)
    return _DROPPED


def _script_over_held(held, args):
    """The reply of a script run over this thread's connection, or _DROPPED on NOSCRIPT or
    a failure (an error reply is the script's: raised)."""
    return _read_over_held(held, _send_over_held(held, args))


def _send_over_held(held, args):
    """Send a script over this thread's connection. After stores a PING goes first, in the
    same write, and _read_over_held() reads past the replies up to its PONG: a refused
    SKIP leaves errors, integers, nil, never PONG. Taken for the script's, they would have
    it run again, and a second run of an invalidation returns no keys to delete.
    Whether a PING went first, or _DROPPED if the connection failed."""
    connection = held.connection
    try:
        if held.stores:
            connection.send_packed_command(_packed_all(held, [('PING',), args]))
            return True
        connection.send_packed_command(_packed(held, args))
        return False
    except BaseException as e:
        _drop_held(held)  # what it sent is unknown
        if not isinstance(e, CONNECTION_ERRORS):
            raise
        return _DROPPED


def _read_over_held(held, pinged):
    """The reply of the script _send_over_held() sent, or _DROPPED (see _script_over_held)."""
    if pinged is _DROPPED:
        return _DROPPED
    connection = held.connection
    try:
        if pinged:
            while True:
                try:
                    if connection.read_response() in (b'PONG', 'PONG'):
                        break
                except redis.ResponseError:
                    _stop_skipping_replies(held.pool)
            held.stores = False
        return connection.read_response()
    except redis.exceptions.NoScriptError:
        return _DROPPED
    except redis.ResponseError:
        raise
    except BaseException as e:
        _drop_held(held)  # replies may be left unread on it
        if not isinstance(e, CONNECTION_ERRORS):
            raise
        return _DROPPED


def _packed(held, args):
    """The command to send over this thread's connection: packed by _pack_plain() where
    that packs as the connection would, else by redis-py."""
    packed = _pack_plain(args) if held.utf8 else None
    return [packed] if packed else held.connection.pack_command(*args)


def _packed_read(held, args):
    """_packed() for a hot read (GET, MGET) or a PING: commands of str arguments alone are
    packed once, as a hit sends the same one again and again."""
    if not held.utf8:
        return held.connection.pack_command(*args)
    try:
        packed = _packs.get(args)
    except TypeError:  # an argument that can't be hashed: redis-py packs it, or refuses
        return held.connection.pack_command(*args)
    if packed is None:
        packed = _pack_plain(args)
        if packed is None:
            return held.connection.pack_command(*args)
        # only str: a tuple equal to one of them is of str too, and packs the same
        if all(type(arg) is str for arg in args):
            remember(_packs, args, packed)
    return [packed]


_packs = {}  # a command of str arguments -> its packed bytes


def _packed_all(held, commands):
    """Commands to send in one write over this thread's connection, packed as _packed()."""
    if held.utf8:
        packed = [_pack_plain(args) for args in commands]
        if None not in packed:
            return [b''.join(packed)]
    return held.connection.pack_commands(commands)


def _pack_plain(args):
    """A command as Redis reads it, if its arguments are all str, bytes or int (as
    redis-py packs them with a UTF-8 encoder); else None. redis-py's own packer, in
    Python without hiredis, takes 2-5 µs for a GET or an MGET: a fifth of a hit's Python."""
    parts = [b'*%d\r\n' % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode()
        elif kind is int:
            arg = b'%d' % arg
        elif kind is not bytes:
            return None
        parts.append(b'$%d\r\n%s\r\n' % (len(arg), arg))
    return b''.join(parts)


# Scripts whose reply nobody needs: a store after a miss. Losing one is harmless (the
# next read misses again), so it is sent with CLIENT REPLY SKIP and nobody waits for
# Redis: a round trip less per miss. As EVAL with the code, not EVALSHA, so that no
# NOSCRIPT can go unseen. Invalidations are never sent this way: one that failed
# unseen (a busy or read-only server) would leave stale entries.
#
# A server may refuse the SKIP (busy running a long script, an ACL changed since it was
# asked): then replies are left on the connection, which the next command on it would
# take for its own (redis-py doesn't always check a pooled connection for them). So
# stores and hot reads go over connections of their own, from a second pool that
# redis-py's commands never use; a reply that is an error after a store drops its
# connection, and stores wait for their replies for a while. A thread keeps its
# connection (_Held), so its reads run after its stores: Redis orders commands only
# within a connection. Any other command of the thread (redis-py's: scripts,
# pipelines) waits for its stores first (_settle). A thread ending gives it back.

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
    held = None
    if pool is not None and _store_pool(pool) is not None and _may_skip_replies(pool):
        held = _thread_held.held
        try:
            if held is None or held.pool is not pool:
                held = _keep_connection(pool)  # None if none is free (max_connections)
            if held is not None and not _can_skip_replies(pool, held):
                held = None
        except CONNECTION_ERRORS:  # none to be made
            held = None
    if held is None:
        run_script(name, keys, args, client)
        return
    code = _script(name)[0]
    connection = held.connection
    try:
        if held.stores and connection.can_read():
            # replies of a refused SKIP: drop them, and wait for replies a while
            _drop_held(held)
            _stop_skipping_replies(pool)
        else:
            # send_packed_command drops a connection it failed to write to
            connection.send_packed_command(_packed_all(
                held, [_SKIP_REPLY, ('EVAL', code, len(keys), *keys, *args)]))
            held.stores = True
            return
    except CONNECTION_ERRORS:
        _drop_held(held)  # sent again below
    except BaseException:
        _drop_held(held)  # replies may be left unread on it
        raise
    # with the client's retries, as any command (a store that ran twice finds its marker
    # gone, or stores the same value again)
    run_script(name, keys, args, client)


class _Held:
    """The connection a thread keeps for its hot reads and stores, from pool's store pool;
    stores: whether a store was sent over it since a reply was last read. Given back if
    the thread ends (whoever takes it next copes with replies a refused SKIP left on it)."""
    __slots__ = ('pid', 'pool', 'store_pool', 'connection', 'stores', 'utf8')

    def __init__(self, pool, store_pool, connection):
        self.pid, self.pool, self.store_pool, self.connection = os.getpid(), pool, store_pool, connection
        self.stores = False
        encoder = getattr(connection, 'encoder', None)
        # whether _pack_plain() packs as the connection would
        self.utf8 = encoder is not None and getattr(encoder, 'encoding_errors', None) == 'strict' \
            and codecs.lookup(encoder.encoding).name == 'utf-8'

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


def _forget_held():
    # a forked child has its own pools (redis-py resets them): not the parent's connection
    _thread_held.held = None


os.register_at_fork(after_in_child=_forget_held)


def _keep_connection(pool):
    """A connection from pool's store pool, kept by this thread as its _Held from now on
    (any it kept for another pool is given back); None if there is none to take."""
    store_pool = _store_pool(pool)
    if store_pool is None:
        return None
    _take_held(None)
    try:
        connection = _connection(store_pool)
    except redis.ConnectionError as e:
        if 'Too many connections' in str(e):  # (MaxConnectionsError from redis-py 5.1)
            return None
        raise
    held = _thread_held.held = _Held(pool, store_pool, connection)
    return held


def _drop_held(held):
    """Disconnect this thread's connection and give it back: it may hold unread replies."""
    if _thread_held.held is held:
        _thread_held.held = None
    connection, held.connection = held.connection, None
    if connection is not None:
        connection.disconnect()
        held.store_pool.release(connection)


def _take_held(store_pool):
    """(store pool, connection) this thread kept from store_pool, or None; this thread
    no longer keeps it, and the caller gives it back. One kept from another pool (a
    client replaced since) is given back here."""
    held = _thread_held.held
    if held is None:
        return None
    _thread_held.held = None
    connection, held.connection = held.connection, None
    if held.store_pool is not store_pool or connection is None:
        if connection is not None:
            held.store_pool.release(connection)
        return None
    return store_pool, connection


_store_pools = weakref.WeakKeyDictionary()  # a client's pool -> the pool its stores use


def _store_pool(pool):
    """The pool of connections that send only stores and hot reads, for a plain or
    blocking connection pool (not Sentinel's, whose connections find their server through
    it); None for others. As big as the client's, but never blocking: a store finding no
    connection free (threads keep theirs, see _Held) waits for its reply on the
    client's, a read goes over the client's."""
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
    pipelines, a test reading a key) run after the stores this thread sent."""
    def settled_get_connection(*args, **kwargs):
        held = _thread_held.held
        if held is not None and held.stores:
            _settle(pool)
        # the class's, looked up each time: fault injection patches it there
        return type(pool).get_connection(pool, *args, **kwargs)
    pool.get_connection = settled_get_connection


def _settle(pool):
    """Wait until Redis has run the stores this thread sent: a PING after them, on their
    connection, is answered after them."""
    held = _thread_held.held
    if held is not None and held.stores and held.pool is pool:
        # dropped or not, the command that follows goes on as it would
        _over_held(held, ('PING',), expected=(b'PONG', 'PONG'))


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


def _may_skip_replies(pool):
    """Whether pool's server skips replies, or may: it is time to ask it (again)."""
    known = _skips_replies.get(pool)
    return known is True or known is None or time.monotonic() >= known


def _can_skip_replies(pool, held):
    """Whether the server honours CLIENT REPLY SKIP (a proxy or an ACL may refuse it),
    asked once per pool (again a while after a refusal) on this thread's connection:
    SKIP, ECHO 1, ECHO 2 give one reply, 2, only if it skipped. Any other first reply
    leaves an unknown number behind: the connection is dropped."""
    if _skips_replies.get(pool) is True:
        return True
    connection = held.connection
    skips = False
    try:
        connection.send_packed_command(connection.pack_commands(
            [_SKIP_REPLY, ('ECHO', '1'), ('ECHO', '2')]))
        try:
            skips = connection.read_response() in (b'2', '2')
        except redis.ResponseError:  # CLIENT REPLY refused, or ECHO: don't find out which
            pass
    except BaseException:
        _drop_held(held)  # replies may be left unread on it
        raise
    if skips:
        _skips_replies[pool] = True
    else:
        _drop_held(held)
        _stop_skipping_replies(pool)
    return skips
