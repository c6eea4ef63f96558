"""What the patched connection methods call (see monkey.py): a commit runs the
invalidations queued to it, a rollback drops them, a write marks its level dirty.

The state itself is in transaction.py; this module drives it from the connection.
"""
from .failed import run_safely
from .transaction import is_sql_dirty, transaction_states


def run_queue(queue):
    """Run invalidations queued to a commit, each as a write's own would run."""
    for func, args, kwargs in queue:
        run_safely(func, *args, **kwargs)


def on_set_autocommit(connection, autocommit):
    state = transaction_states[connection.alias]
    if autocommit:
        state.clear()
    elif not state:
        state.begin()


def on_commit(connection):
    state = transaction_states[connection.alias]
    queue = state.commit()
    if not connection.autocommit:
        state.begin()  # manual transaction management: the next transaction has begun
    run_queue(queue)


def on_rollback(connection):
    state = transaction_states[connection.alias]
    state.clear()
    if not connection.autocommit:
        state.begin()


def on_savepoint(connection, sid):
    if sid is not None:
        transaction_states[connection.alias].begin(sid)


def on_savepoint_commit(connection, sid):
    run_queue(transaction_states[connection.alias].release(sid))


def on_savepoint_rollback(connection, sid):
    transaction_states[connection.alias].rollback_to(sid)


def on_close(connection):
    transaction_states._states.pop(connection.alias, None)


def on_execute(cursor, sql):
    state = transaction_states._states.get(cursor.db.alias)
    if state and not state[-1].dirty and is_sql_dirty(sql):
        state.mark_dirty()
