"""Cache outages, each said once: what a Redis error on a read does, and the log of an
outage from its start to its end.

An outage starts with the first Redis error a read or an invalidation meets, and ends
with the next command Redis answers. Each is logged twice on the `cacheops` logger (a
warning as it starts, one as it ends, with how many reads went to the database and how
many cache writes were kept to replay meanwhile), not once per read. With
CACHEOPS_DEGRADE_ON_FAILURE off a read raises instead, as an error that is still the
Redis one (`except redis.ConnectionError` catches it) and names the setting.
See docs/design.md, "A cache failure never breaks or loses a write".
"""
import logging
import threading
import time
import warnings

from .conf import settings

logger = logging.getLogger('cacheops')


class CacheUnavailable(Exception):
    """Mixed into the Redis error a read raises with CACHEOPS_DEGRADE_ON_FAILURE off."""


class _Outage:
    """Whether the cache is unavailable now (read on every cache read: a plain attribute),
    since when, and what went around it meanwhile."""

    def __init__(self):
        self.down = False
        self.since = 0.0
        self.reads = self.writes = 0
        self.lock = threading.Lock()


state = _Outage()


def read_failed(error: Exception) -> None:
    """A read met this Redis error (called in its except clause): with
    CACHEOPS_DEGRADE_ON_FAILURE it is counted and the caller reads the database; without,
    it is raised again as an error naming the setting."""
    if not settings.CACHEOPS_DEGRADE_ON_FAILURE:
        named = _named(error)
        if named is error:
            raise error
        raise named from error
    went_around('reads', error)


def answered() -> None:
    """Redis answered: the outage, if one is on, ends (logged, with its counts)."""
    with state.lock:
        if not state.down:
            return
        state.down = False
        took, reads, writes = time.monotonic() - state.since, state.reads, state.writes
    logger.warning('cacheops: the cache is back after %.1f s; meanwhile %d reads went to the '
                   'database and %d cache writes (invalidations, stores) were kept to replay',
                   took, reads, writes)


def went_around(what: str, error: Exception | None = None) -> None:
    """Count a read ('reads', to the database) or a cache write ('writes', an invalidation
    or a store, kept to replay) that went around the cache; an error Redis gave it starts
    an outage if none is on (logged, and warned, once)."""
    with state.lock:
        starts = error is not None and not state.down
        if starts:
            state.down, state.since, state.reads, state.writes = True, time.monotonic(), 0, 0
        if state.down:
            setattr(state, what, getattr(state, what) + 1)
    if starts:
        message = ('cacheops: the cache is unavailable (%s: %s); until it is back reads go to '
                   'the database and invalidations are kept to replay' % (type(error).__name__, error))
        logger.warning(message)
        warnings.warn(message, RuntimeWarning)


# Redis error class -> its subclass that is a CacheUnavailable too
_named_classes = {}


def _named(error):
    """error as an instance of a subclass of its class and of CacheUnavailable whose message
    names CACHEOPS_DEGRADE_ON_FAILURE; error itself if it can't be made (a class taking
    other arguments)."""
    if isinstance(error, CacheUnavailable):
        return error
    message = ('%s (cacheops: the cache is unavailable; with CACHEOPS_DEGRADE_ON_FAILURE = True '
               'reads would go to the database instead)' % (error,))
    try:
        cls = _named_classes.get(type(error))
        if cls is None:
            cls = _named_classes[type(error)] = type(
                type(error).__name__, (type(error), CacheUnavailable), {'__module__': type(error).__module__})
        return cls(message)
    except Exception:  # noqa: BLE001 - the original error is raised then
        return error
