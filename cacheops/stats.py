"""Per-process counts of cache reads, stores and invalidations, by model and by cached
function; and the recorder a debug toolbar panel follows one request through.

A hit pays one dict increment here and nothing else (docs/design.md, "Stats"). There is
no lock: threads counting the same thing at the same moment may lose an increment now
and then. The counts are for watching a cache, not for accounting; a lock on every hit
would cost more than the counts are worth.

The package exports stats() as cacheops.stats, which hides this module's name on the
package: import the module's other names from cacheops.stats directly.
"""
from collections import defaultdict
from contextvars import ContextVar
from typing import Any

from .signals import cache_read

# {model or function: count}, each keyed by the model (of a queryset) or else the cached
# function's code (_func_key): one object, no tuple to build on a hit. None is invalidate_all()
hits = defaultdict(int)
misses = defaultdict(int)
stores = defaultdict(int)  # stores sent after a miss
invalidations = defaultdict(int)

COUNTS = ('hits', 'misses', 'stores', 'invalidations')
_names = {}  # a cached function's code: its 'module.qualname'


def stats(reset: bool = False) -> dict[str, Any]:
    """This process' counts since it started (or since the last reset): {'models': {label:
    counts}, 'functions': {'module.qualname': counts}, 'total': counts}, counts being a
    dict of hits, misses, stores and invalidations; reset=True also starts them anew."""
    found = {'models': {}, 'functions': {}, 'total': dict.fromkeys(COUNTS, 0)}
    for count, counter in zip(COUNTS, (hits, misses, stores, invalidations)):
        for key, n in _take(counter, reset):
            _add(found, key, count, n)
    return found


def _take(counter, reset):
    """counter's (key, count) pairs; with reset, what is taken is subtracted (not cleared:
    what is counted meanwhile is kept)."""
    taken = [(key, n) for key, n in counter.copy().items() if n]
    if reset:
        for key, n in taken:
            counter[key] -= n
    return taken


def _add(found, key, count, n):
    found['total'][count] += n
    if key is None:
        return  # invalidate_all(): in the total only
    if isinstance(key, type) and hasattr(key, '_meta'):  # a model (a cached class is a function here)
        counts = found['models'].setdefault(model_label(key), dict.fromkeys(COUNTS, 0))
    else:
        name = _names.get(key) or func_name(key)
        counts = found['functions'].setdefault(name, dict.fromkeys(COUNTS, 0))
    counts[count] += n


def model_label(model):
    """'app_label.ModelName'."""
    return model._meta.label


def func_name(func):
    """'module.qualname' of a cached function or view."""
    module = getattr(func, '__module__', None)
    name = getattr(func, '__qualname__', None) or getattr(func, '__name__', None) or repr(func)
    return '%s.%s' % (module, name) if module else name


def _func_key(func):
    """What a cached function is counted under: its code, one per place it is defined, so
    that a function decorated anew on each call (inside a view, say) counts as one and is
    not kept alive by its counts; a class or another callable, itself."""
    code = getattr(func, '__code__', None)
    if code is None:
        return func
    if code not in _names:
        _names[code] = func_name(func)
    return code


def count_read(model, func, hit, key=None):
    """Count a cache read and send cache_read: all a hit pays for the counts is the increment."""
    if hit:
        hits[model or _func_key(func)] += 1
    else:
        misses[model or _func_key(func)] += 1
    if cache_read.receivers:
        cache_read.send(sender=model, func=func, hit=hit, key=key)


def count_store(model, func, key):
    """Count a store sent after a miss (Redis drops it if an invalidation came first)."""
    stores[model or _func_key(func)] += 1
    recorder = _recorder.get()
    if recorder is not None:
        recorder.store(model, func, key)


def count_invalidation(model, func=None, conditions=None):
    """Count an invalidation of a model's rows (conditions: their {column: value} dicts, or
    None for the whole model), of a cached function's entry (func), or of everything."""
    invalidations[model or _func_key(func)] += 1
    recorder = _recorder.get()
    if recorder is not None:
        recorder.invalidation(model, func, conditions)


# The recorder of the request this context handles, if its debug toolbar panel records.
# A ContextVar: set in a request's thread or task, it is seen by the reads of that request
# (a sync view an ASGI request runs in a thread gets a copy of its context) and no other.
_recorder: ContextVar = ContextVar('cacheops_recorder', default=None)


def start_recording(recorder):
    """Send this context's stores and invalidations to recorder (its store() and
    invalidation() methods); reads come through the cache_read signal. Returns the token
    to stop with."""
    return _recorder.set(recorder)


def stop_recording(token):
    """Stop what start_recording() started."""
    _recorder.reset(token)


def recorder():
    """The recorder of this context, or None."""
    return _recorder.get()
