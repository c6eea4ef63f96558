"""Invalidations a process kept, recorded on disk for the other processes of its host.

A kept invalidation (failed.py) lives in its process's memory: if the process dies before
Redis answers again (a command, a task, a recycled worker), it would be lost, and the
entries it should have dropped would read as valid until they time out. So each one kept
is also written here, as a small JSON record of the tables (or everything) it covers; any
process of the same cache that finds a record whose owner is dead, or that is older than
ORPHAN_AGE, does it (orphans.py), whole tables at a time, and removes it. An owner removes
its own once its kept queue is empty. See docs/design.md, "A lost invalidation outlives
no process".

Files in the directory: <token>.lock, held (flock) by its owner for as long as it lives,
and <token>.<n>.json, written once each (a temporary name, then a rename), never changed.
"""
import hashlib
import json
import logging
import os
import tempfile
import threading
import time

from django.core.exceptions import ImproperlyConfigured

from .conf import derived, settings, unsafe_directory

try:
    import fcntl
except ImportError:  # Windows: owners can't be told alive; records are done by age only
    fcntl = None

logger = logging.getLogger('cacheops')

SWEEP_INTERVAL = 1.0  # seconds between one process's looks at the directory
ORPHAN_AGE = 30.0  # a record this old is done by others even while its owner lives
RECORD_SUFFIX, LOCK_SUFFIX, TMP_PREFIX = '.json', '.lock', '.tmp-'
ABANDONED_AFTER = 60 * 60  # a temporary file this old was left by a death mid-write


@derived
def spool_dir():
    """The directory of this cache's records, or None when CACHEOPS_SPOOL_DIR is False.

    A record names tables by their prefixed keys, and must be done against the Redis it
    was kept for: by default (None) processes share one when they share the Redis settings
    and the prefix; a directory given is used as it is, by every process given it."""
    path = settings.CACHEOPS_SPOOL_DIR
    if path is False:
        return None
    if path is None:
        uid = os.getuid() if hasattr(os, 'getuid') else 0
        base = os.path.join(tempfile.gettempdir(), 'cacheops_spool_%d' % uid)
        paths = [base, os.path.join(base, _cache_identity())]
    elif isinstance(path, (str, os.PathLike)):
        paths = [os.fspath(path)]
    else:
        raise ImproperlyConfigured('CACHEOPS_SPOOL_DIR must be a path, None or False, got %r' % (path,))
    for path in paths:
        reason = unsafe_directory(path)
        if reason:
            raise ImproperlyConfigured(
                'CACHEOPS_SPOOL_DIR %r is refused: %s; point CACHEOPS_SPOOL_DIR at a directory '
                'of your own that only you can write, or set it to False' % (path, reason))
    return paths[-1]


def _cache_identity():
    prefix = settings.CACHEOPS_PREFIX
    if callable(prefix):  # its repr holds an address, another in each process
        prefix = '%s.%s' % (prefix.__module__, prefix.__qualname__)
    described = repr([settings.CACHEOPS_REDIS, settings.CACHEOPS_SENTINEL, settings.CACHEOPS_CLUSTER,
                      str(settings.CACHEOPS_CLIENT_CLASS), prefix])
    return hashlib.sha1(described.encode(), usedforsecurity=False).hexdigest()[:16]


class _Own:
    """This process's owner tokens (one per directory it recorded in, each with its lock
    held) and records; reset in a forked child, which is another owner."""

    def __init__(self):
        self.locks = {}  # directory: (token, descriptor holding <token>.lock)
        self.paths = []
        self.count = 0
        self.guard = threading.Lock()


_own = _Own()
# time.monotonic() from which a read looks at the directory again (getset.cached_call)
next_sweep = 0.0


def _after_fork():
    global _own, next_sweep
    for _, fd in _own.locks.values():
        os.close(fd)  # the parent's locks stay held through its own descriptors
    _own = _Own()
    next_sweep = 0.0


os.register_at_fork(after_in_child=_after_fork)


def keep(tables=(), sets=(), everything=False):
    """Record an invalidation this process kept: [(prefix, table)] to invalidate whole, the
    sets of cache keys to drain (keys.handover_key), or everything cacheops cached."""
    path = spool_dir()
    if path is None:
        return
    record = {'tables': sorted(map(list, set(tables))), 'sets': sorted(set(sets)),
              'everything': bool(everything), 'at': time.time()}
    try:
        with _own.guard:
            _write(path, record)
    except OSError as e:  # logged: the process itself still replays what it kept
        logger.warning('cacheops: could not record a kept invalidation in %s: %s', path, e)


def _write(path, record):
    if path not in _own.locks:
        os.makedirs(path, mode=0o700, exist_ok=True)
        token = '%d-%s' % (os.getpid(), os.urandom(4).hex())
        fd = os.open(os.path.join(path, token + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _own.locks[path] = token, fd
    _own.count += 1
    name = '%s.%d%s' % (_own.locks[path][0], _own.count, RECORD_SUFFIX)
    tmp = os.path.join(path, TMP_PREFIX + name)
    with open(tmp, 'w') as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(path, name))
    _own.paths.append(os.path.join(path, name))


def has_own():
    """Whether this process has records on disk."""
    return bool(_own.paths)


def clear_own():
    """Remove this process's records: what they cover was replayed by the process itself."""
    with _own.guard:
        for path in _own.paths:
            _unlink(path)
        _own.paths = []


def _others(path):
    """{owner token: [record names]} in path, but this process's own."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return [], {}
    by_owner = {}
    for name in names:
        if name.endswith(RECORD_SUFFIX) and not name.startswith(TMP_PREFIX):
            by_owner.setdefault(name.split('.', 1)[0], []).append(name)
    own = _own.locks.get(path)
    if own is not None:
        by_owner.pop(own[0], None)  # its own queue replays them, granularly
    return names, by_owner


def others_waiting():
    """Whether records of other processes wait (sweep() is then due); else the next look
    is SWEEP_INTERVAL away. For an async hit, which leaves sweeping to the sync path."""
    global next_sweep
    path = spool_dir()
    if path is not None and _others(path)[1]:
        return True
    next_sweep = time.monotonic() + SWEEP_INTERVAL
    return False


def sweep(do):
    """Give do() the records of dead owners, and those older than ORPHAN_AGE, as one list;
    remove them once it returns. do() raising (Redis failing) leaves them for a later sweep."""
    global next_sweep
    next_sweep = time.monotonic() + SWEEP_INTERVAL
    path = spool_dir()
    if path is None:
        return
    names, by_owner = _others(path)
    for token, records in by_owner.items():
        _sweep_owner(path, token, records, do)
    _remove_leftovers(path, names, by_owner)


def _remove_leftovers(path, names, by_owner):
    """Remove the locks of dead owners without records, and temporary files a death left."""
    own = _own.locks.get(path, ('',))[0]
    for name in names:
        if name.endswith(LOCK_SUFFIX) and name[:-len(LOCK_SUFFIX)] not in (*by_owner, own):
            held = _lock_if_dead(os.path.join(path, name))
            if held is not None:
                _unlink(os.path.join(path, name))
                os.close(held)
        elif name.startswith(TMP_PREFIX):
            try:
                if time.time() - os.stat(os.path.join(path, name)).st_mtime > ABANDONED_AFTER:
                    _unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass


def _sweep_owner(path, token, names, do):
    lock_path = os.path.join(path, token + LOCK_SUFFIX)
    held = _lock_if_dead(lock_path)  # held while doing them: other sweepers see it alive
    try:
        now = time.time()
        records = []
        for name in names:
            record = _read(os.path.join(path, name))
            if record is not None and (held is not None or now - record.get('at', 0) > ORPHAN_AGE):
                records.append((name, record))
        if records:
            do([record for _, record in records])
            for name, _ in records:
                _unlink(os.path.join(path, name))
        if held is not None and len(records) == len(names):
            _unlink(lock_path)
    finally:
        if held is not None:
            os.close(held)


def _lock_if_dead(lock_path):
    """A descriptor holding the owner's lock if the owner is dead (its lock free or gone), else None."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)  # dead before its first record
    except OSError:
        return None
    if fcntl is None:
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _read(filename):
    try:
        with open(filename) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None  # done by another sweeper meanwhile
    except (OSError, ValueError) as e:
        logger.warning('cacheops: a kept invalidation record %s cannot be read (%s): '
                       'everything cached is dropped instead', filename, e)
        return {'everything': True}
    return record if isinstance(record, dict) else {'everything': True}


def _unlink(filename):
    try:
        os.unlink(filename)
    except FileNotFoundError:
        pass
