"""Doing the invalidations other processes kept and may never replay (their records, spool.py).

A process that kept an invalidation records what it covers: the (prefix, table) pairs its
write touched, the sets of cache keys a step left behind, or everything cacheops cached
when it can't tell. A record whose owner died (or that is older than spool.ORPHAN_AGE) is
done here by whichever process of the cache looks first: whole tables, as a record keeps
no rows. See docs/design.md, "A lost invalidation outlives no process".
"""
import inspect
import logging
import os
import threading
import time

from django.db import DEFAULT_DB_ALIAS

from . import failed, invalidation, spool
from .keys import prefix_for
from .outage import state as outage
from .redis import get_client
from .transaction import transaction_states
from .utils import glob_escape, written_tables

logger = logging.getLogger('cacheops')


# Kept calls whose first argument is the model written and which take using=: what they
# invalidate is within the tables a write to that model touches. A bound method whose
# object has models_written() covers those models' tables. Any other call is recorded as
# everything (invalidating too much only costs hits; too little, staleness)
_BY_MODEL = {
    invalidation.invalidate_model, invalidation._invalidate_model.__wrapped__,
    invalidation.invalidate_dict, invalidation.invalidate_dicts,
    invalidation._invalidate_dicts.__wrapped__,
}


def covers_model_tables(func):
    """Mark a kept call (func(model, ..., using=)) as invalidating only its model's tables."""
    _BY_MODEL.add(func)
    return func


def describe_call(func, args, kwargs):
    """spool.keep()'s arguments for a kept call: its tables, or everything; None for one
    that only stores (nothing is left stale by its failing)."""
    if getattr(func, 'stores_only', False):
        return None
    if func is failed._everything:
        return {'everything': True}
    models_written = getattr(getattr(func, '__self__', None), 'models_written', None)
    if func in _BY_MODEL and args:
        models = [args[0]]
    elif models_written is not None:  # a method of what gathered the writes (events/deletes.py)
        models = models_written()
    else:
        return {'everything': True}
    using = _using(func, args, kwargs) or DEFAULT_DB_ALIAS
    try:
        return {'tables': [(prefix_for([using], [table]), table)
                           for model in models for table, _ in written_tables(model)]}
    except Exception:  # noqa: BLE001 - a CACHEOPS_PREFIX failing here: no prefix to name
        return {'everything': True}


def _using(func, args, kwargs):
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return kwargs.get('using')
    bound.apply_defaults()
    return bound.arguments.get('using')


failed.describe_call = describe_call

_sweeping = threading.Lock()
# a fork while another thread sweeps would leave the child's copy held: it would never sweep
os.register_at_fork(after_in_child=_sweeping._at_fork_reinit)
_ERROR_LOG_INTERVAL = 60.0  # seconds between two logs of a sweep raising, per process
_next_error_log = 0.0


def sweep_now():
    """Do the records of others that are due; a read calls it once spool.next_sweep is past."""
    global _next_error_log
    if outage.down:
        spool.put_off()  # the next read after Redis answers again sweeps (not waiting out its timeouts now)
        return
    if not _sweeping.acquire(blocking=False):
        return  # another thread is at it
    try:
        # the writes they invalidate are committed already: not queued to a transaction open here
        with transaction_states.hidden():
            spool.sweep(do_records)
    except failed.REDIS_FAILURES as e:  # left on disk for a later sweep
        logger.debug('cacheops: doing kept invalidations of other processes failed: %s', e)
    except Exception:  # noqa: BLE001 - a read must not fail for it
        spool.put_off()
        if time.monotonic() >= _next_error_log:
            _next_error_log = time.monotonic() + _ERROR_LOG_INTERVAL
            logger.exception('cacheops: doing kept invalidations of other processes raised')
    finally:
        _sweeping.release()


def do_records(records):
    """Invalidate what these records cover, at once."""
    if any(record.get('everything') for record in records):
        logger.warning('cacheops: invalidations another process kept (it died, or has not '
                       'reached Redis for %d s): everything cached is dropped', spool.ORPHAN_AGE)
        invalidation._invalidate_all()
        return
    tables = sorted({tuple(pair) for record in records for pair in record.get('tables', ())})
    sets = sorted({name for record in records for name in record.get('sets', ())})
    logger.warning('cacheops: invalidations another process kept (it died, or has not reached '
                   'Redis for %d s): tables %s are invalidated whole', spool.ORPHAN_AGE,
                   ', '.join(table for _, table in tables) or '(none)')
    client = get_client()
    invalidation.invalidate_prefixed_tables(client, tables)
    if sets:
        drains = invalidation._scan_any(client, [glob_escape(name) + ':*' for name in sets])
        for name in [*sets, *drains]:
            invalidation.drain_set(client, name)
