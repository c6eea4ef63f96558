"""Async reads whose hits are served in the event loop (see docs/design.md, "Async").

aget() by a unique column, acount(), aexists(), aaggregate() and async for make the sync
op's decisions in the loop (is the op cached, its key and DNFs) and read the key with
redis.asyncio (read_hit). afirst(), alast() and other gets run the sync op in the loop
in probe mode (served): Django's own logic runs until the op's cached call, which raises
Probe with the key instead of reading; the key is read, and on a hit the op runs again
with that value as the call's answer. Anything else goes the sync way in a thread, as
Django's async API goes by default: a miss (which then reads, computes and stores with
the sync protocol, so invariant 1 holds), a read Django must do itself
(SynchronousOnlyOperation, raised before any query is sent), or a sync thread above
the loop that may be inside a transaction.
"""
import asyncio
import contextvars
import os
import threading

from asgiref.sync import AsyncToSync, sync_to_async
from django.core.exceptions import SynchronousOnlyOperation

from .. import spool
from ..conf import insideout
from ..failed import failed as failed_invalidations
from ..getset import _checksum, _loads, _monotonic, _signal, cached_call, insideout_keys, is_value
from ..outage import answered, read_failed, state as outage
from ..redis import READ_FAILURES
from ..redis.async_client import async_client

MISS = object()


class Probe(BaseException):
    """Raised by a cached call in probe mode: its key to read. A BaseException, so that
    no `except Exception` of the code between unwinds it as the op's failure."""

    def __init__(self, key, dnfs, sender, func):
        super().__init__(key)
        self.key, self.dnfs, self.sender, self.func = key, dnfs, sender, func


class _Probing(threading.local):
    answers = None  # in probe mode: key -> the value read there


_probing = _Probing()


def cached_or_probed(key, dnfs, timeout, compute, lock=False, sender=None, func=None, warm=None):
    """getset.cached_call(), or in probe mode the value read at key, or Probe."""
    answers = _probing.answers
    if answers is None:
        return cached_call(key, dnfs, timeout, compute, lock=lock, sender=sender, func=func, warm=warm)
    try:
        return answers[key]
    except KeyError:
        raise Probe(key, dnfs, sender, func) from None


async def served(op):
    """op() (a sync cached op), its hits read in the event loop, the rest in a thread."""
    # probe mode counts on Django refusing a query in the loop (DJANGO_ALLOW_ASYNC_UNSAFE
    # lets it run there, over the loop thread's own connection)
    if may_read_in_loop() and not os.environ.get('DJANGO_ALLOW_ASYNC_UNSAFE'):
        answers = {}
        while True:
            try:
                return _probed(op, answers)
            except Probe as probe:
                value = await read_hit(probe.key, probe.dnfs, probe.sender, probe.func)
                if value is MISS or probe.key in answers:
                    break
                answers[probe.key] = value
            except SynchronousOnlyOperation:
                break
    return await sync_to_async(op)()


def _probed(op, answers):
    _probing.answers = answers
    try:
        return op()
    finally:
        _probing.answers = None


def may_read_in_loop():
    """Whether a hit may be served here: no invalidation waits to be replayed (the sync
    path replays it), and no sync thread above this loop (async_to_sync() called from
    one) that may be inside a transaction, whose state only that thread knows."""
    if failed_invalidations:
        return False
    if _monotonic() >= spool.next_sweep and spool.others_waiting():  # the sync path sweeps
        return False
    if _executor_above() is not None:
        return False
    return asyncio.get_running_loop() not in getattr(AsyncToSync, 'loop_thread_executors', {None: None})


# asgiref's Local keeps its data in a ContextVar of immutable snapshots (asgiref 3.8+,
# replaced on every change): the answer for a snapshot is kept, as reading the Local
# takes a lock and costs an async hit a few per cent. Other layouts read the Local.
_storage_var = getattr(getattr(AsyncToSync.executors, '_storage', None), '_data', None)
if not isinstance(_storage_var, contextvars.ContextVar):
    _storage_var = None
_above = (None, None, None)  # the snapshot last asked about, its thread, its executor


def _executor_above():
    """asgiref's executor of the sync thread above this loop (async_to_sync), or None."""
    global _above
    if _storage_var is None:
        return getattr(AsyncToSync.executors, 'current', None)
    snapshot = _storage_var.get(None)
    if snapshot is None:  # nothing set in this context: no thread above
        return None
    thread = threading.get_ident()  # asgiref reads a snapshot of another thread as empty
    seen = _above
    if seen[0] is snapshot and seen[1] == thread:
        return seen[2]
    executor = getattr(AsyncToSync.executors, 'current', None)
    _above = (snapshot, thread, executor)
    return executor


async def read_hit(key, dnfs, sender=None, func=None):
    """The value stored at key, read by the event loop's client as a sync hit reads it,
    or MISS (a miss, a value the sync path must look at, no async client)."""
    client = async_client()
    if client is None:
        return MISS
    try:
        if insideout():
            data = await _read_insideout(client, key, dnfs)
        else:
            data = await client.read('GET', key)
            if not is_value(data):
                data = None
    except READ_FAILURES as e:  # any Redis error, as a sync read (outage.py)
        return _failed(e)
    if outage.down:  # Redis answered: the outage ends, as a sync read ends it
        answered()
    if data is None:
        return MISS
    value = _loaded(key, data)
    if value is not MISS:
        _signal(sender, func, True, key)
    return value


async def read_plain(key):
    """The value stored at key (a full key of the simple cache), read in the event loop, or
    MISS (a miss, a value the sync path must look at, no async client, a loop that
    async_to_sync() made for the call)."""
    client = async_client() if may_read_in_loop() else None
    if client is None:
        return MISS
    try:
        data = await client.read('GET', key)
    except READ_FAILURES as e:  # any Redis error, as a sync read (outage.py)
        return _failed(e)
    if outage.down:  # Redis answered: the outage ends, as a sync read ends it
        answered()
    if not is_value(data):
        return MISS
    return _loaded(key, data)


def _failed(error):
    """MISS for a read Redis failed, with CACHEOPS_DEGRADE_ON_FAILURE (the sync path tries
    Redis once more, and reads the database); else the error, raised."""
    read_failed(error)  # raises it, naming the setting, without CACHEOPS_DEGRADE_ON_FAILURE
    return MISS


def _loaded(key, data):
    try:
        return _loads(key, data)
    except Exception:  # noqa: BLE001 - another layout or mode, a bad signature: the sync path sees to it
        return MISS


async def _read_insideout(client, key, dnfs):
    """The value at key if its stamps are all there and unchanged (getset._read_insideout)."""
    try:
        query_dnfs = dnfs()
    except SynchronousOnlyOperation:  # building what a miss evaluates is Django's to do
        return None
    if query_dnfs is None:
        return None
    conj_keys, epoch_keys = insideout_keys(query_dnfs)
    # the epochs too, as the sync read: a Redis answers both in one reply
    reply = await client.read('MGET', key, *conj_keys, *epoch_keys)
    value, stamps = reply[0], reply[1:len(conj_keys) + 1]
    if value is None or None in stamps or value[:40] != _checksum(stamps):
        return None
    return value[40:]
