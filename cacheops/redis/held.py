"""The connection a thread keeps for its hot reads and its stores, and what its server
was found to do with CLIENT REPLY SKIP.

Taking a connection from redis-py's pool and giving it back costs a hit 9 µs, so a
thread keeps one (_Held) for the hand-packed commands: hot reads (wire.py) and scripts
(scripts.py), stores sent with CLIENT REPLY SKIP among them. A server may refuse the
SKIP (busy running a long script, an ACL changed since it was asked): then replies are
left on the connection, which the next command on it would take for its own (redis-py
doesn't always check a pooled connection for them). So these connections come from a
second pool, the store pool, that redis-py's commands never use; a reply that is an
error after a store drops its connection, and stores wait for their replies for a
while. Redis orders commands only within a connection, and a thread's reads go over
its connection after its stores; any other command of the thread (redis-py's: scripts,
pipelines) waits for its stores first (_settle). A thread ending gives its connection
back.

CACHEOPS_PLAIN_REDIS=1 in the environment (read once, at import) keeps all of this
out of the way: no connection is kept, nothing is hand-packed or sent without its
reply, and every command goes through redis-py's client, so that a bug can be pinned
on this layer or cleared of it.
"""
import codecs
import os
import threading
import time
import weakref

import redis
from django.core.exceptions import ImproperlyConfigured

from .client import CONNECTION_ERRORS


def _plain_redis(value):
    """Whether CACHEOPS_PLAIN_REDIS (the environment's value, or None) asks for plain redis-py."""
    if value in (None, '', '0'):
        return False
    if value == '1':
        return True
    raise ImproperlyConfigured('CACHEOPS_PLAIN_REDIS must be 1 or 0, got %r' % (value,))


PLAIN_REDIS = _plain_redis(os.environ.get('CACHEOPS_PLAIN_REDIS'))


def _direct_pool(client):
    """The client's connection pool if its commands can be sent past its command layer:
    a plain redis.Redis (or a Sentinel master), not a cluster, no commands intercepted,
    and not CACHEOPS_PLAIN_REDIS. Every shortcut of this package asks here first."""
    if PLAIN_REDIS or not isinstance(client, redis.Redis) or \
            type(client).execute_command is not redis.Redis.execute_command:
        return None
    return getattr(client, 'connection_pool', None)


def _connection(pool):
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 6 wants a command name
        return pool.get_connection('EVAL')


class _Held:
    """The connection a thread keeps for its hot reads and stores, from pool's store pool;
    stores: whether a store was sent over it since a reply was last read. Given back if
    the thread ends (whoever takes it next copes with replies a refused SKIP left on it)."""
    __slots__ = ('pid', 'pool', 'store_pool', 'connection', 'stores', 'utf8')

    def __init__(self, pool, store_pool, connection):
        self.pid, self.pool, self.store_pool, self.connection = os.getpid(), pool, store_pool, connection
        self.stores = False
        encoder = getattr(connection, 'encoder', None)
        # whether wire._pack_plain() packs as the connection would
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
        _over_held(held, held.connection.pack_command('PING'), expected=(b'PONG', 'PONG'))


_DROPPED = object()


def _over_held(held, packed, expected=None):
    """The reply to a packed command sent over this thread's connection (so after the
    stores sent over it), or _DROPPED if the connection was given up instead: it failed,
    or the reply was an error or not one of expected."""
    connection = held.connection
    try:
        connection.send_packed_command(packed)
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


# Whether a server skips replies. Asked once per pool, again a while after a refusal:
# a server that was busy, or whose ACL changed, may skip them again later.

_SKIP_REPLY = ('CLIENT', 'REPLY', 'SKIP')
# connection pool -> True if its server skips replies, else when to ask it again
_skips_replies = weakref.WeakKeyDictionary()
ASK_AGAIN_AFTER = 60  # seconds


def _stop_skipping_replies(pool):
    _skips_replies[pool] = time.monotonic() + ASK_AGAIN_AFTER


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
