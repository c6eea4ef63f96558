"""Model events -> the rows to invalidate, read so that no write can slip between.

An update invalidates by the row's values before and after it; a delete by the
values the row had when it went. Those must be the values the database held when
the write happened, not an instance's (possibly outdated) copy, and not values read
before another process changed them: with two writers, one reading the old values,
the other committing a change, a reader caching the change and then the first
writer's update moving the row on, the reader's entry would outlive both writes.

- On PostgreSQL a save is one statement: Django's UPDATE, taking the row from a
  subquery that reads it locked and returning the values it overwrote
  (returning.py). Not for multi-table children, select_on_save and composite primary
  keys, nor where the statement can't be built from Django's: those go on as below.
- Elsewhere a save reads the old values first (one SELECT by pk) and makes Django's
  UPDATE conditional on them, retried if another writer moved them (saves.py).
- A delete is a transaction already (Django's Collector): the rows are read there,
  locked, and so are the rows keyed to them that it changes without events
  (deletes.py).

The modules, bottom up: state.py (what a save keeps on its instance), returning.py,
saves.py, deletes.py, receivers.py (the signal receivers). Reading and locking rows
is the layer below, cacheops/rows.py. monkey.py connects the receivers and wraps
Model._do_update and Collector.delete.

This package re-exports the names other modules and projects use.
"""
from ..rows import take_write_lock
from .deletes import collector_delete, invalidate_m2o
from .receivers import _m2m_changed, _post_delete, _post_save, _pre_save
from .saves import UPDATE_ATTEMPTS, conditional_do_update
from .state import RETURNING, UNKNOWN

__all__ = [
    'RETURNING', 'UNKNOWN', 'UPDATE_ATTEMPTS', '_m2m_changed', '_post_delete', '_post_save',
    '_pre_save', 'collector_delete', 'conditional_do_update', 'invalidate_m2o',
    'take_write_lock',
]
