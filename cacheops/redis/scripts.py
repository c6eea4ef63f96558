"""Lua scripts, one file each in cacheops/lua: run by SHA and loaded on NOSCRIPT, sent
now and read later (start_script), or sent without waiting for a reply (send_script).

Over the connection the thread keeps (held.py) where the client allows, else through
redis-py's client.
"""
import hashlib
import os

import redis

from .client import CONNECTION_ERRORS, get_client
from .held import (
    _DROPPED, _can_skip_replies, _connection, _direct_pool, _drop_held, _keep_connection,
    _may_skip_replies, _settle, _SKIP_REPLY, _stop_skipping_replies, _store_pool, _take_back,
    _thread_held,
)
from .wire import _packed, _packed_all

LUA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lua')
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
            and client.connection is None and _direct_pool(client) is not None:
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
    pool = _direct_pool(client)
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


# Scripts whose reply nobody needs: a store after a miss. Losing one is harmless (the
# next read misses again), so it is sent with CLIENT REPLY SKIP and nobody waits for
# Redis: a round trip less per miss. As EVAL with the code, not EVALSHA, so that no
# NOSCRIPT can go unseen. Invalidations are never sent this way: one that failed
# unseen (a busy or read-only server) would leave stale entries. A server refusing the
# SKIP leaves replies behind: held.py says how the connection copes.

def send_script(name, keys=(), args=()):
    """Run cacheops/lua/<name>.lua without waiting for its reply, where the client and
    the server allow; else as run_script() does."""
    client = get_client()
    pool = _direct_pool(client)
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
