"""Invalidations a process kept, recorded on disk for the other processes of its host.

A kept invalidation (failed.py) lives in its process's memory: if the process dies before
Redis answers again (a command, a task, a recycled worker), it would be lost, and the
entries it should have dropped would read as valid until they time out. So each one kept
is also written here, as a small JSON record of the tables (or everything) it covers; any
process of the same cache that finds a record whose owner is dead, or that is older than
ORPHAN_AGE, does it (orphans.py), whole tables at a time, and removes it. An owner removes
its own once its kept queue is empty. See docs/design.md, "A lost invalidation outlives
no process".

Files in the directory, each written under a temporary name and renamed into place:
<token>.lock, held (flock) by its owner for as long as it lives; <token>.<n>.<ms>.json,
a record written at <ms> (milliseconds since the epoch: its age, without opening it),
never changed; <token>.sweep, held by whoever does a live owner's aged records.
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
RECORD_SUFFIX, LOCK_SUFFIX, SWEEP_SUFFIX, TMP_PREFIX = '.json', '.lock', '.sweep', '.tmp-'
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
        _make_private(path)
        reason = unsafe_directory(path)
        if reason:
            raise ImproperlyConfigured(
                'CACHEOPS_SPOOL_DIR %r is refused: %s; point CACHEOPS_SPOOL_DIR at a directory '
                'of your own that only you can write, or set it to False' % (path, reason))
    return paths[-1]


def _make_private(path):
    # each level its own mkdir 0700: os.makedirs() makes the parents 0777 less the umask,
    # 0775 under a umask of 002 (Debian's private groups, many Docker images), which the
    # check above refuses the next time
    try:
        os.mkdir(path, 0o700)
    except OSError:
        pass  # there already, or not made: the check tells why, if it matters


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
        self.everything = None  # the path of its last record of everything
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
    record = {'tables': sorted(map(list, set(tables))),
              'sets': sorted({s.decode(errors='replace') if isinstance(s, bytes) else s for s in sets}),
              'everything': bool(everything)}
    with _own.guard:
        filename = _write(path, record)
        if everything:
            _own.everything = filename


def has_everything():
    """Whether this process's record of everything is still on disk (not done by another)."""
    return _own.everything is not None and os.path.exists(_own.everything)


def _write(path, record):
    if path not in _own.locks:
        token = '%d-%s' % (os.getpid(), os.urandom(4).hex())
        # locked before it is in place: a sweeper finding it unlocked takes its owner for dead
        _own.locks[path] = token, _placed(path, token + LOCK_SUFFIX, _lock)
    _own.count += 1
    name = '%s.%d.%d%s' % (_own.locks[path][0], _own.count, time.time() * 1000, RECORD_SUFFIX)
    _placed(path, name, _writer(json.dumps(record).encode()))
    _own.paths.append(os.path.join(path, name))
    return _own.paths[-1]


def _writer(data):
    def write(fd):
        with open(fd, 'wb') as f:  # closes fd
            f.write(data)
    return write


def _lock(fd):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _placed(path, name, fill):
    """fill(descriptor) of a new file made under a temporary name, then renamed to name."""
    tmp = os.path.join(path, TMP_PREFIX + name)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        result = fill(fd)
        os.replace(tmp, os.path.join(path, name))
    except BaseException:
        _unlink(tmp)
        raise
    return result


def has_own():
    """Whether this process has records on disk."""
    return bool(_own.paths)


def clear_own():
    """Remove this process's records: what they cover was replayed by the process itself."""
    with _own.guard:
        for path in _own.paths:
            _unlink(path)
        _own.paths = []
        _own.everything = None


def _others(path):
    """(names in path, {owner token: [record names]}), but this process's own records."""
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
    """Whether records of other processes wait, for an async hit, which leaves sweeping to
    the sync path; never raising. If none, the next look is SWEEP_INTERVAL away."""
    global next_sweep
    try:
        path = spool_dir()
        if path is not None and _others(path)[1]:
            return True
    except (OSError, ImproperlyConfigured):  # the sync path's sweep logs it
        return True
    next_sweep = time.monotonic() + SWEEP_INTERVAL
    return False


def put_off():
    """Look again SWEEP_INTERVAL from now, not at once."""
    global next_sweep
    next_sweep = time.monotonic() + SWEEP_INTERVAL


def sweep(do):
    """Give do() the records of dead owners, and those older than ORPHAN_AGE, as one list;
    remove them once it returns. do() raising (Redis failing) leaves them for a later sweep."""
    put_off()
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
        if name.endswith(LOCK_SUFFIX) and not name.startswith(TMP_PREFIX) \
                and name[:-len(LOCK_SUFFIX)] not in (*by_owner, own):
            held = _lock_if_dead(os.path.join(path, name))
            if held is not None:
                _unlink(os.path.join(path, name[:-len(LOCK_SUFFIX)] + SWEEP_SUFFIX))
                _unlink(os.path.join(path, name))
                os.close(held)
        elif name.startswith(TMP_PREFIX):
            try:
                if time.time() - os.stat(os.path.join(path, name)).st_mtime > ABANDONED_AFTER:
                    _unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass


def _written_at(name):
    try:
        return int(name.rsplit('.', 2)[-2]) / 1000
    except ValueError:
        return 0.0  # not named by this version: old enough


def _sweep_owner(path, token, names, do):
    lock_path = os.path.join(path, token + LOCK_SUFFIX)
    held = _lock_if_dead(lock_path)  # held while doing them: other sweepers see it alive
    if held is None:  # alive: only its aged records, by one sweeper at a time
        names = [name for name in names if time.time() - _written_at(name) > ORPHAN_AGE]
        if not names:
            return
        held = _lock_free(os.path.join(path, token + SWEEP_SUFFIX))
        if held is None:
            return
        dead = False
    else:
        dead = True
    try:
        records = [(name, record) for name in names
                   if (record := _read(os.path.join(path, name))) is not None]
        if records:
            do([record for _, record in records])
            for name, _ in records:
                _unlink(os.path.join(path, name))
        if dead and len(records) == len(names):
            _unlink(os.path.join(path, token + SWEEP_SUFFIX))
            _unlink(lock_path)
    finally:
        os.close(held)


def _lock_if_dead(lock_path):
    """A descriptor holding the owner's lock if the owner is dead (its lock free or gone), else None."""
    if fcntl is None:
        return None
    return _lock_free(lock_path)


def _lock_free(lock_path):
    """A descriptor holding the lock at lock_path (made if missing), or None if it is held."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    if fcntl is None:
        return fd
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
