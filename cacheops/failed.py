"""Invalidations that failed, kept to replay: a write never fails because Redis did.

An invalidation run from a model event goes through run_safely(): if Redis fails (down,
busy, out of memory) it is logged and kept here, and until every kept one is replayed
this process reads the database instead of the cache (getset.py asks retry_failed()
before each read). See docs/design.md, "A cache failure never breaks or loses a write".
"""
import logging
import os
import threading
import time

import redis
from django.core.exceptions import ImproperlyConfigured

from . import spool
from .outage import answered, state as outage, went_around
from .transaction import transaction_states

logger = logging.getLogger('cacheops')

# Redis refusing or failing, a cluster's slots moving (not RedisErrors; redis-py has them
# from 4.1 on, with its cluster client): what a replay may get past later
REDIS_FAILURES = (redis.RedisError, getattr(redis.exceptions, 'RedisClusterException', redis.RedisError))
# Redis answering with an error (out of memory, BUSY, READONLY, WRONGTYPE, NOPERM): it is
# reachable, so the kept calls after one that it refused are tried all the same
REFUSALS = (redis.ResponseError,)


# Invalidation steps that failed, kept to replay (see run_safely() below)

failed = []
# reentrant: a replay that fails again keeps what it leaves (invalidation._delete_dropped_keys)
failed_lock = threading.RLock()


def _reinit_lock():
    # a fork while another thread held it would leave the child's copy held for good,
    # and its first replay waiting forever. The object is kept (modules import it by
    # name): re-initialised, as threading does with its own locks at fork
    failed_lock._at_fork_reinit()


os.register_at_fork(after_in_child=_reinit_lock)

# The most calls kept. Past it (a long outage under writes) they collapse into one call
# that drops everything cacheops cached, which can leave nothing stale, at the cost of
# the whole cache once Redis is back; set by invalidation.py, a layer above
MAX_KEPT = 10000
drop_everything = None
# what a kept call covers, as spool.keep()'s arguments (None: nothing left stale), for
# the record other processes do if this one dies first; set by orphans.py, a layer above
describe_call = None


def run_safely(func, *args, **kwargs):
    """Call an invalidation; if it fails (Redis down, busy, out of memory; or anything
    else, a CACHEOPS_PREFIX function raising, say), log it and keep the call to replay
    before this process trusts the cache again. Nothing it raises reaches the caller:
    the write it follows is in the database already."""
    try:
        # in a transaction func only queues itself for the commit: it must, as replays
        # run at once (see retry_failed) and its write isn't committed yet. failed is
        # read first, as reads do: retry_failed() locks even with nothing to replay.
        # Only Redis failing keeps a call from being tried: kept calls that raised
        # something else don't hold back the ones after them
        if not failed or _replay() not in HELD_BACK or transaction_states.any_open():
            func(*args, **kwargs)
            if outage.down:
                answered()
            return
        went_around('writes')  # Redis failed the replay just now: kept, untried
    except REDIS_FAILURES as e:
        went_around('writes', e)  # an outage is logged once, as it starts (outage.py)
        logger.debug('cacheops: invalidation failed, will retry: %s', e)
    except Exception:  # noqa: BLE001 - see docs/design.md, "not a Redis error"
        if getattr(func, 'stores_only', False):
            logger.exception('cacheops: storing in the cache raised; the write went through')
            return
        logger.exception('cacheops: invalidation raised; it is kept to retry, and until then '
                         'this process reads the database')
        func = _Raised(func)
    _keep(func, args, kwargs)


def _keep(func, args, kwargs):
    with failed_lock:
        if failed and failed[0][0] is _everything:
            # dropping everything covers it, once recorded: another process may have done
            # the record (its owner cut off for long) while this one still keeps it
            if not spool.has_everything():
                _record(func, args, kwargs, everything=True)
            return
        if len(failed) >= MAX_KEPT:
            logger.warning('cacheops: %d invalidations kept: replaced by one dropping every '
                           'cached entry when Redis is back', len(failed))
            failed[:] = [(_everything, (), {})]
            _record(func, args, kwargs, everything=True)
            return
        failed.append((func, args, kwargs))
        # under the lock: a replay emptying the queue meanwhile must find the record
        # there to remove (spool.clear_own), or others would do it again later
        _record(func, args, kwargs)


def keep_step(replay, args, sets):
    """Keep a step of an invalidation to replay as it is (invalidation.kept_on_failure),
    recording the sets of cache keys it leaves for other processes to drain. One kept
    already (the same step with the same arguments, kept again by a replay Redis refused
    too) is not kept twice."""
    step = getattr(replay, 'step', replay)
    with failed_lock:
        if any(getattr(kept, 'step', kept) is step and kept_args == args for kept, kept_args, _ in failed):
            return
        failed.append((replay, args, {}))
        _record(None, (), {}, sets=sets)


def _record(func, args, kwargs, **what):
    """Write a kept call's record to the spool; never raising: the write went through."""
    try:
        if func is not None and not what:
            what = describe_call(func.func if isinstance(func, _Raised) else func, args, kwargs)
            if what is None:
                return
        spool.keep(**what)
    except Exception:  # noqa: BLE001 - a bug here must not break the write
        logger.exception('cacheops: could not record a kept invalidation for other processes')


def _everything():
    drop_everything()


def stores_only(func):
    """Mark a function run_safely() calls that only stores (cache_on_save): if it raises
    something other than a Redis error, nothing is left stale, and it is not kept."""
    func.stores_only = True
    return func


class _Raised:
    """A kept call that raised something other than a Redis error: replaying it again
    raising is logged without its traceback (it was, once), and the replay goes on past it."""
    __slots__ = ('func',)

    def __init__(self, func):
        self.func = func

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


class _Replaying(threading.local):
    active = False


_replaying = _Replaying()


def retry_failed():
    """Replay the invalidations that failed before; whether none is left.

    Replays are of writes committed already: they run at once, not queued in a
    transaction open now (whose rollback would drop them). One that reads the cache
    (cache_on_save, a cache_invalidated receiver) is told False: it reads the database."""
    replayed = _replay()
    if replayed in HELD_BACK or replayed == REFUSED:
        went_around('reads')  # the caller reads the database
    return replayed == DONE


# what _replay() ends with; REFUSED: Redis answered an error to some (each is kept, and
# tried again no sooner than REPLAY_INTERVAL later); WAITING: not tried, as Redis failed
# a replay less than REPLAY_INTERVAL ago or another thread is replaying
DONE, REDIS_FAILED, REFUSED, RAISED, BUSY, WAITING = (
    'done', 'redis failed', 'refused', 'raised', 'busy', 'waiting')
HELD_BACK = (REDIS_FAILED, WAITING)  # what keeps a new invalidation from being tried

# Seconds between replays after Redis failed one. Each try against a Redis that times
# out waits out the timeout: tried before every read, it would hold every read (and
# with the lock, every thread) that long (docs/design.md, "Timeouts").
REPLAY_INTERVAL = 1.0
_next_replay = 0.0  # time.monotonic() before which no replay is tried
_last_replay = DONE  # what the last one ended with, answered meanwhile


def _replay():
    """Replay the kept calls in order: DONE if none is left; REDIS_FAILED if Redis failed
    again (the replay stops there); RAISED if only calls that raised something else are
    left (each is kept, and the replay goes on past it); BUSY inside a replay; WAITING
    if not tried now (see REPLAY_INTERVAL), or if another thread replays."""
    global _next_replay, _last_replay
    if _replaying.active:
        return BUSY
    if time.monotonic() < _next_replay:
        # refused ones don't hold new invalidations back: Redis answers, other keys may go
        return WAITING if _last_replay == REDIS_FAILED else _last_replay
    if not failed_lock.acquire(blocking=False):
        return WAITING  # the caller goes on without Redis, not waiting for it
    try:
        _replaying.active = True
        with transaction_states.hidden():
            replayed = _last_replay = _replay_all()
        if replayed in (REDIS_FAILED, REFUSED):
            _next_replay = time.monotonic() + REPLAY_INTERVAL
        if replayed == DONE and spool.has_own():
            spool.clear_own()
        return replayed
    finally:
        _replaying.active = False
        failed_lock.release()


def _replay_all():
    i, refused = 0, False
    while i < len(failed):
        func, args, kwargs = failed[i]
        kept = len(failed)
        try:
            func(*args, **kwargs)
        except REDIS_FAILURES as e:
            # what it kept of itself (kept_on_failure) goes first: replayed
            # before it, once, instead of piling up behind it
            added = failed[kept:]
            del failed[kept:]
            failed[i:i] = added
            if not isinstance(e, REFUSALS):
                return REDIS_FAILED
            # Redis answered: a permanent refusal (WRONGTYPE, NOPERM) must not hold back
            # the calls after it
            refused = True
            i += len(added) + 1
            continue
        except ImproperlyConfigured:
            # a bad setting: the read replaying it raises, as it would meeting it itself
            # (the write that kept it went through)
            raise
        except Exception as e:  # noqa: BLE001
            # not Redis: kept, as the entries it should drop may still be there (a
            # CACHEOPS_PREFIX failing outside a request works again in one)
            if isinstance(func, _Raised):
                logger.debug('cacheops: a kept invalidation raised again: %r', e)
            else:
                logger.exception('cacheops: replaying a failed invalidation raised; it is kept')
                failed[i] = (_Raised(func), args, kwargs)
            i += 1
            continue
        failed.pop(i)
    if outage.down:
        answered()
    return REFUSED if refused else RAISED if failed else DONE
