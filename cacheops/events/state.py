"""What a save keeps on its instance, from pre_save through Model._do_update to post_save.

The receivers (receivers.py) and the UPDATE (saves.py, returning.py) hand the row's
old values to each other on the instance, in `_cacheops_old`:

- a dict of the row's values as the database had them before the UPDATE;
- None: there was no row (Django inserts);
- RETURNING: not read yet, the UPDATE will return them (PostgreSQL's one statement);
- UNKNOWN: they could not be known; the save invalidates the whole model instead.

Beside it, `_cacheops_new` holds the values the database computed (returned by the
one statement) and `_cacheops_expressions` the fields set to expressions. A save inside
a save of the same instance (a post_save receiver running before ours saving again)
sets the outer one's aside in `_cacheops_outer` until it is done.
"""
from .. import invalidation
from ..rows import db_values

# _cacheops_old when the old values could not be known: the save invalidates the model
UNKNOWN = 'unknown'

# _cacheops_old until the save's UPDATE returns the old values itself (PostgreSQL)
RETURNING = 'returning'

# What a save keeps on its instance from pre_save to post_save: the old values, the
# values the database computed (returned by PostgreSQL's one statement), the fields set
# to expressions
SAVE_STATE = ('_cacheops_old', '_cacheops_new', '_cacheops_expressions')


def read_old_values(instance, using):
    """db_values(), or UNKNOWN if it fails: a failing read must not break the save (the
    save invalidates the model instead)."""
    try:
        return db_values(instance, using)
    except Exception:
        invalidation.logger.exception('cacheops: could not read old values before save')
        return UNKNOWN


def set_outer_aside(instance):
    """At a save's start: if it runs inside another save of instance, keep that one's
    SAVE_STATE values aside until this one is done (pop_save_state())."""
    state = instance.__dict__
    if any(key in state for key in SAVE_STATE):
        state.setdefault('_cacheops_outer', []).append(tuple(state.pop(key, None) for key in SAVE_STATE))


def pop_save_state(instance):
    """The SAVE_STATE values of the save ending, giving back those of a save it ran inside."""
    state = instance.__dict__
    current = tuple(state.pop(key, None) for key in SAVE_STATE)
    outer = state.get('_cacheops_outer')
    if outer:
        for key, value in zip(SAVE_STATE, outer.pop()):
            if value is not None:
                state[key] = value
        if not outer:
            del state['_cacheops_outer']
    return current
