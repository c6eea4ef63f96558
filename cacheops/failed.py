"""Invalidations that failed, kept to replay: a write never fails because Redis did.

An invalidation run from a model event goes through run_safely(): if Redis fails (down,
busy, out of memory) it is logged and kept here, and until every kept one is replayed
this process reads the database instead of the cache (getset.py asks retry_failed()
before each read). See docs/design.md, "A cache failure never breaks or loses a write".
"""
import logging
import threading

import redis

from .transaction import transaction_states

logger = logging.getLogger('cacheops')

# Redis refusing or failing, a cluster's slots moving (not RedisErrors; redis-py has them
# from 4.1 on, with its cluster client): what a replay may get past later
REDIS_FAILURES = (redis.RedisError, getattr(redis.exceptions, 'RedisClusterException', redis.RedisError))


# Invalidation steps that failed, kept to replay (see run_safely() below)

failed = []
# reentrant: a replay that fails again keeps what it leaves (invalidation._delete_dropped_keys)
failed_lock = threading.RLock()


def run_safely(func, *args, **kwargs):
    """Call an invalidation; if Redis fails (down, busy, out of memory), log it and keep
    the call to replay before this process trusts the cache again."""
    try:
        # in a transaction func only queues itself for the commit: it must, as replays
        # run at once (see retry_failed) and its write isn't committed yet. failed is
        # read first, as reads do: retry_failed() locks even with nothing to replay
        if not failed or retry_failed() or transaction_states.any_open():
            func(*args, **kwargs)
            return
    except REDIS_FAILURES as e:
        logger.error('cacheops: invalidation failed, will retry: %s', e)
    with failed_lock:
        failed.append((func, args, kwargs))


class _Replaying(threading.local):
    active = False


_replaying = _Replaying()


def retry_failed():
    """Replay the invalidations that failed before; whether none is left.

    Replays are of writes committed already: they run at once, not queued in a
    transaction open now (whose rollback would drop them). One that reads the cache
    (cache_on_save, a cache_invalidated receiver) is told False: it reads the database."""
    if _replaying.active:
        return False
    with failed_lock:
        _replaying.active = True
        try:
            with transaction_states.hidden():
                while failed:
                    func, args, kwargs = failed[0]
                    kept = len(failed)
                    try:
                        func(*args, **kwargs)
                    except REDIS_FAILURES:
                        # what it kept of itself (kept_on_failure) goes first: replayed
                        # before it, once, instead of piling up behind it
                        added = failed[kept:]
                        del failed[kept:]
                        failed[0:0] = added
                        return False
                    except Exception:  # noqa: BLE001
                        # not Redis (a cache_invalidated receiver raising, say): replaying
                        # it again would fail every read of this process the same way
                        logger.exception('cacheops: replaying a failed invalidation raised; '
                                         'it is dropped')
                    failed.pop(0)
        finally:
            _replaying.active = False
    return True
