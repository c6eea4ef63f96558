"""The read/store protocol: a hit is one GET; a miss stores race-free (docs/design.md, invariant 1).

Conj-set mode: before querying, a pending marker is put at the key and the key is
registered in its conjunction sets; the result is stored only if the marker is still
there. The marker doubles as the dog-pile lock.
Insideout mode: the conjunction stamps are read before querying and the value is stored
with their checksum; a read validates the checksum against the current stamps. Stamps
missing at the read are made by the store, which drops the value if an invalidation
replaced the epoch of one of its tables meanwhile.
"""
import hashlib
import os
import re
import time

import redis

from .conf import derived, insideout, is_cluster, prefix_func, settings
from . import spool
from .failed import failed as failed_invalidations, retry_failed
from .orphans import sweep_now
from .outage import answered, read_failed, state as outage
from .keys import (conj_key, epoch_key, learn_schemes, lock_key, prefix_for, reaping_key, schemes_key, scheme,
                   signal_key)
from .redis import (READ_FAILURES, get_client, mget_by_slot, read_command, run_script, send_script,
                    start_script)
from .serialization import LayoutChanged
from .signing import dumps as _dumps, loads as _loads  # (key, value), (key, data)
# _signal: counts a read for cacheops.stats() and sends cache_read (docs/design.md, "Stats")
from .stats import count_read as _signal, count_store
from .utils import remember, undecodable

_monotonic = time.monotonic

PENDING = b'\x00cacheops:pending:'  # 18 bytes, see lua/prepare.lua
assert len(PENDING) == 18


def new_marker():
    """A pending marker: PENDING and a random token."""
    return PENDING + os.urandom(8).hex().encode()


def is_value(data):
    """Whether bytes read at a cache key are a stored value (not missing, not a marker)."""
    return data is not None and not data.startswith(PENDING)

# Switched off only by the stale-entry test, to show that it can fail.
PROTECT_STORES = True


class _Computed:
    """Calls compute at most once."""
    __slots__ = ('compute', 'done', 'value')

    def __init__(self, compute):
        self.compute = compute
        self.done = False

    def __call__(self):
        if not self.done:
            self.value = self.compute()
            self.done = True
        return self.value


def cached_call(key, dnfs, timeout, compute, lock=False, sender=None, func=None, warm=None):
    """The value cached at key (prefix included), else compute() stored race-free.

    dnfs() gives [(db alias, {table: [conjunction, ...]}), ...] that the value depends on,
    or None when it must not be cached; in conj-set mode it is called only on a miss.
    warm(), if given, does work compute() needs that can run while Redis prepares a miss.
    """
    computed = _Computed(compute)
    if _monotonic() >= spool.next_sweep:  # others' kept invalidations, once a second
        sweep_now()
    if failed_invalidations and not retry_failed():
        # an invalidation Redis refused is still pending: the cache may hold what it
        # should have dropped, so only the database can be trusted until it is replayed
        return computed()
    try:
        if insideout():
            query_dnfs = dnfs()
            if query_dnfs is None:
                return computed()
            value = _insideout(key, query_dnfs, timeout, computed, lock, sender, func)
        else:
            value = _conj_sets(key, dnfs, timeout, computed, lock, sender, func, warm)
    except READ_FAILURES as e:  # any Redis error: degrade (or raise naming the setting)
        read_failed(e)
        return computed()
    if outage.down:
        answered()
    return value


STALE = object()  # what _load() gives for a value that is a miss after all


def _load(data, key, release=True):
    """The value in data read at key, or STALE when it holds model instances written for
    other fields of their model (another deploy), is a value of insideout mode read in
    conj-set mode (a deploy switching modes), or can't be decoded at all (corrupt or
    foreign bytes, or bytes not signed for key with CACHEOPS_SIGNING_KEY, logged once):
    then, if release, it is deleted there unless replaced meanwhile (release.lua compares
    the bytes)."""
    try:
        return _loads(key, data)
    except LayoutChanged:
        pass
    except Exception as e:  # noqa: BLE001 - whatever loads() raises, the value is no hit
        if not release or not _INSIDEOUT_VALUE.match(data):
            undecodable(key, data, e)
    if release:
        _release(key, data, lock=False)
    return STALE


# An insideout value starts with the hex SHA-1 of its stamps: a value that fails to load
# and starts so is taken for one
_INSIDEOUT_VALUE = re.compile(rb'[0-9a-f]{40}')


# Conj-set mode

def _conj_sets(key, dnfs, timeout, computed, lock, sender, func, warm=None):
    client = get_client()
    data = read_command(client, 'GET', key)
    if is_value(data):
        value = _load(data, key)
        if value is not STALE:
            _signal(sender, func, True, key)
            return value
    _signal(sender, func, False, key)

    query_dnfs = dnfs()
    if query_dnfs is None:
        return computed()
    keys, args = _registration(query_dnfs)
    if not PROTECT_STORES:
        # the unprotected order, as the original does it: query, then register and store
        value = computed()
        status, marker = _prepare(key, keys, args, timeout)
        _store(key, marker, value, lock)
        count_store(sender, func, key)
        return value
    status, marker = _prepare(key, keys, args, timeout, warm, lock)
    if status == b'hit':
        value = _load(marker, key)
        return computed() if value is STALE else value
    if status == b'other' and lock:
        # Somebody is computing it: wait for their result, bounded, blocking in Redis.
        _wait_for_owner(client, key)
        data = client.get(key)
        if is_value(data):
            value = _load(data, key)
            if value is not STALE:
                return value
        status, marker = _prepare(key, keys, args, timeout)
        if status == b'hit':
            value = _load(marker, key)
            return computed() if value is STALE else value

    try:
        value = computed()
    except BaseException:
        if status == b'mine':  # don't leave waiters waiting for a value that won't come
            try:
                _release(key, marker, lock)
            except Exception:  # noqa: BLE001 - Redis failing now mustn't hide why compute failed
                pass
        raise
    _store(key, marker, value, lock)
    count_store(sender, func, key)
    return value


def _wait_for_owner(client, key):
    """Block until the owner of a key's lock signals, at most CACHEOPS_LOCK_WAIT seconds.

    A single BRPOPLPUSH may not outlast the client's socket timeout, so a long wait
    blocks in slices shorter than it.
    """
    deadline = time.monotonic() + settings.CACHEOPS_LOCK_WAIT
    socket_timeout = _socket_timeout(client)
    while True:
        left = deadline - time.monotonic()
        step = min(left, socket_timeout * 0.8) if socket_timeout else left
        if step < 0.01:
            return
        try:
            if client.brpoplpush(signal_key(key), signal_key(key), step) is not None:
                return
        except redis.TimeoutError:
            return  # the client gave up waiting: compute instead


def _socket_timeout(client):
    pool = getattr(client, 'connection_pool', None)
    if pool is not None:
        return pool.connection_kwargs.get('socket_timeout')
    return client.nodes_manager.connection_kwargs.get('socket_timeout')  # a cluster's


def _store(key, marker, value, lock):
    send_script('store', [key, signal_key(key)], [marker, _dumps(key, value), '1' if lock else '0'])


def _prepare(key, keys, args, timeout, warm=None, lock=False):
    """(status, marker or value) of prepare.lua; warm() runs while Redis answers."""
    if is_cluster():
        return _prepare_cluster(key, keys, timeout, warm, lock)
    marker = new_marker()
    script = ('prepare', [key, signal_key(key), *keys], [marker, timeout, *args])
    if warm is None:
        status, payload = run_script(*script)
    else:
        reply = start_script(*script)
        try:
            warm()
        except Exception:  # noqa: BLE001 - compute() does the same work again, failing as it would
            pass
        except BaseException:
            _release_quietly(key, reply, marker, lock)
            raise
        status, payload = reply()
    return _ours(status, payload, marker)


def _prepare_cluster(key, registrations, timeout, warm, lock):
    """_prepare() on a cluster: the marker in the cache key's slot, then each table's
    registration in its own, whatever marker was found there (its owner may not have
    registered yet), all before the query (docs/design.md, "Redis Cluster")."""
    marker = new_marker()
    status, payload = _ours(*run_script('prepare', [key, signal_key(key)], [marker, timeout]), marker)
    if status == b'hit':
        return status, payload
    try:
        for keys, args in registrations:
            run_script('register', keys, [key, timeout, *args])
        if warm is not None:
            try:
                warm()
            except Exception:  # noqa: BLE001 - compute() does the same work again, failing as it would
                pass
    except BaseException:
        if status == b'mine':
            _release_quietly(key, lambda: (status, payload), marker, lock)
        raise
    return status, payload


def _ours(status, payload, marker):
    """prepare.lua's (status, payload), with our own marker found there taken as placed
    by us: the script ran, its reply was lost, and it was run again."""
    if status == b'other' and payload == marker:
        return b'mine', payload
    return status, payload


def _release_quietly(key, reply, marker, lock):
    """Read prepare's reply and release the marker if it placed it, on the way out of an
    interrupted miss: a Redis failure now mustn't replace the interruption."""
    try:
        if _ours(*reply(), marker)[0] == b'mine':
            _release(key, marker, lock)
    except Exception:  # noqa: BLE001 - the marker expires; waiters stop waiting in time
        pass


def _release(key, marker, lock):
    """Remove marker (ours, or a stale value) from key if it is still there, and wake
    dog-pile waiters if lock."""
    run_script('release', [key, signal_key(key)], [marker, '1' if lock else '0'])


def _tables(dnfs):
    """(prefix, table, conjs) for each table of [(db, {table: conjs})], prefixed as invalidation does."""
    for db, tables in dnfs:
        for table, conjs in tables.items():
            yield prefix_for([db], [table]), table, conjs


def _learned_schemes(prefix, table, conjs):
    """The schemes of these conjunctions, which a registration records: known in use from
    now on (keys.learn_schemes), so that a write here names their conj keys at once."""
    schemes = [scheme(conj) for conj in conjs]
    learn_schemes(prefix, table, schemes)
    return schemes


def _registration(dnfs):
    """KEYS and ARGV tails registering a key: per table its schemes set and conj keys.
    On a cluster, [(KEYS, ARGV tail)] of register.lua, one per table."""
    if is_cluster():
        return _registrations(dnfs), None
    keys, args = [], []
    for prefix, table, conjs in _tables(dnfs):
        keys.append(schemes_key(prefix, table))
        args.append(len(conjs))
        schemes = _learned_schemes(prefix, table, conjs)
        keys.extend(conj_key(prefix, table, conj) for conj in conjs)
        args.extend(schemes)
    return keys, args


def _registrations(dnfs):
    found = []
    for prefix, table, conjs in _tables(dnfs):
        conj_keys = [conj_key(prefix, table, conj) for conj in conjs]
        schemes = _learned_schemes(prefix, table, conjs)
        found.append(([schemes_key(prefix, table), *conj_keys,
                       *(reaping_key(prefix, conj) for conj in conj_keys)], schemes))
    return found


# Insideout mode

def insideout_keys(dnfs):
    """(stamp keys of these DNFs' conjunctions, epoch keys of their tables). A hit needs
    them each time: they are kept per DNFs object, which the DNFs memo (query/keys.py) hands
    out again for the same query (not with a CACHEOPS_PREFIX function, whose prefix may
    change by request)."""
    if len(dnfs) != 1 or prefix_func() is not None:
        return _insideout_keys(dnfs)
    db, tables = dnfs[0]
    memo = _insideout_keys_memo()
    found = memo.get(id(tables))
    if found is not None and found[0] is tables and found[1] == db:
        return found[2]
    keys = _insideout_keys(dnfs)
    remember(memo, id(tables), (tables, db, keys))  # holding tables keeps its id from being reused
    return keys


@derived
def _insideout_keys_memo():
    return {}  # dropped on every setting change


def _insideout_keys(dnfs):
    tables = list(_tables(dnfs))
    return ([conj_key(prefix, table, conj) for prefix, table, conjs in tables for conj in conjs],
            [epoch_key(prefix, table) for prefix, table, _ in tables])


def _checksum(stamps):
    """The hex SHA-1 of stamps, which prefixes a value stored with them. Memoized: every
    hit checks it, and stamps change only when a write invalidates them."""
    key = tuple(stamps)
    found = _checksums.get(key)
    if found is None:
        found = remember(_checksums, key, hashlib.sha1(b' '.join(stamps)).hexdigest().encode())
    return found


_checksums = {}


def _read_insideout(client, key, conj_keys, epoch_keys):
    """(the value stored at key if the stamps of its conjunctions are all there and
    unchanged since it was computed, else None; the stamps; the tables' epochs). One
    MGET reads them all at once: a plain command costs Redis a tenth of what a script does."""
    if is_cluster():
        reply = mget_by_slot(client, [key, *conj_keys, *epoch_keys])
    else:
        reply = read_command(client, 'MGET', key, *conj_keys, *epoch_keys)
    value, end = reply[0], len(conj_keys) + 1
    stamps, epochs = reply[1:end], reply[end:]
    if value is None or None in stamps or value[:40] != _checksum(stamps):
        return None, stamps, epochs
    return value[40:], stamps, epochs


def _insideout(key, dnfs, timeout, computed, lock, sender, func):
    client = get_client()
    conj_keys, epoch_keys = insideout_keys(dnfs)
    data, stamps, epochs = _read_insideout(client, key, conj_keys, epoch_keys)
    if data is not None:
        value = _load(data, key, release=False)  # a stale one is computed and stored over below
        if value is not STALE:
            _signal(sender, func, True, key)
            return value
    _signal(sender, func, False, key)

    if lock and not _acquire_lock(client, key):
        # Somebody is computing it: wait for their result, bounded, blocking in Redis.
        _wait_for_owner(client, key)
        data, stamps, epochs = _read_insideout(client, key, conj_keys, epoch_keys)
        if data is not None:
            value = _load(data, key, release=False)
            if value is not STALE:
                return value
        lock = False  # the owner failed or was invalidated: compute, without the lock

    try:
        if not PROTECT_STORES:
            value = computed()
            stamps = _prepare_insideout(dnfs, conj_keys, epoch_keys, timeout)
        elif None not in stamps:
            # Stamps read before the query protect the store as well as fresh ones: an
            # invalidation since deletes one, and the checksum never validates.
            value = computed()
        elif None not in epochs and not is_cluster():
            # Missing stamps have nothing for an invalidation to delete, but the
            # invalidation replaces its tables' epochs: the store checks them, and
            # makes the stamps itself.
            value = computed()
            _store_insideout_fresh(key, dnfs, conj_keys, epoch_keys, stamps, epochs,
                                   value, timeout, lock)
            count_store(sender, func, key)
            return value
        else:  # a table without an epoch yet: make the stamps, and the epochs, first
            stamps = _prepare_insideout(dnfs, conj_keys, epoch_keys, timeout)
            value = computed()
    except BaseException:
        if lock:  # don't leave waiters waiting for a value that won't come
            _release_lock(client, key)
        raise

    if stamps is None:  # a condition is a set of conj-set mode: not stored
        if lock:
            _release_lock(client, key)
        return value
    if is_cluster():
        _store_insideout_cluster(key, dnfs, conj_keys, stamps, value, timeout, lock)
    else:
        send_script('store_insideout', [key, lock_key(key), signal_key(key), *conj_keys],
                    [_checksum(stamps) + _dumps(key, value), timeout, '1' if lock else '0',
                     settings.CACHEOPS_LOCK_WAIT])
    count_store(sender, func, key)
    return value


def _store_insideout_cluster(key, dnfs, conj_keys, stamps, value, timeout, lock):
    """The insideout store on a cluster: each table's stamps kept past the value, in
    their slot, then the value with the checksum of the stamps read, in its own."""
    for table_keys in _by_table(dnfs, conj_keys):
        send_script('extend_stamps', table_keys, [timeout])
    send_script('store_insideout', [key, lock_key(key), signal_key(key)],
                [_checksum(stamps) + _dumps(key, value), timeout, '1' if lock else '0',
                 settings.CACHEOPS_LOCK_WAIT])


def _by_table(dnfs, conj_keys):
    """conj_keys (in _insideout_keys() order) cut into one list per table."""
    start = 0
    for _, _, conjs in _tables(dnfs):
        yield conj_keys[start:start + len(conjs)]
        start += len(conjs)


def _release_lock(client, key):
    """Release the dog-pile lock of a key (insideout mode) and wake its waiters."""
    pipe = client.pipeline(transaction=False)  # a cluster's returns no pipeline to chain on
    pipe.delete(lock_key(key))
    pipe.rpush(signal_key(key), 1)
    pipe.expire(signal_key(key), 30)
    pipe.execute()


def _prepare_insideout(dnfs, conj_keys, epoch_keys, timeout):
    """The stamps of these conjunctions, created where missing, with the schemes recorded
    and the tables' epochs created where missing; None if a conjunction is a set of
    conj-set mode (a deploy switching modes), which a stamp must not replace."""
    if is_cluster():
        return _prepare_insideout_cluster(dnfs, conj_keys, epoch_keys, timeout)
    args = [os.urandom(8).hex(), timeout, len(conj_keys)]
    schemes_keys = []
    for prefix, table, conjs in _tables(dnfs):
        schemes_keys.append(schemes_key(prefix, table))
        args.append(len(conjs))
        args.extend(_learned_schemes(prefix, table, conjs))
    return run_script('prepare_insideout', [*conj_keys, *schemes_keys, *epoch_keys], args)


def _prepare_insideout_cluster(dnfs, conj_keys, epoch_keys, timeout):
    """_prepare_insideout() one table at a time, each in its slot: all before the query,
    so an invalidation after a table's turn replaces a stamp read there."""
    fresh, stamps, conj_set = os.urandom(8).hex(), [], False
    tables = list(_tables(dnfs))
    for (prefix, table, conjs), table_keys, epoch in zip(tables, _by_table(dnfs, conj_keys), epoch_keys):
        schemes = _learned_schemes(prefix, table, conjs)
        found = run_script('prepare_insideout', [*table_keys, schemes_key(prefix, table), epoch],
                           [fresh, timeout, len(table_keys), len(conjs), *schemes])
        if found is None:
            conj_set = True
        else:
            stamps.extend(found)
    return None if conj_set else stamps


def _store_insideout_fresh(key, dnfs, conj_keys, epoch_keys, stamps, epochs, value, timeout, lock):
    keys, args = [key, lock_key(key), signal_key(key), *conj_keys], []
    for (prefix, table, conjs), epoch_key_, epoch in zip(_tables(dnfs), epoch_keys, epochs):
        keys += [epoch_key_, schemes_key(prefix, table)]
        args += [epoch, len(conjs), *(scheme(conj) for conj in conjs)]
    send_script('store_insideout_fresh', keys,
                [_dumps(key, value), timeout, '1' if lock else '0', settings.CACHEOPS_LOCK_WAIT,
                 os.urandom(8).hex(), len(conj_keys), *(stamp or b'' for stamp in stamps), *args])


def _acquire_lock(client, key):
    """Take the dog-pile lock of a key (insideout mode); True if we are to compute."""
    if not client.set(lock_key(key), 1, nx=True, ex=settings.CACHEOPS_LOCK_WAIT):
        return False
    client.delete(signal_key(key))  # a signal left by an earlier owner would wake waiters early
    return True
