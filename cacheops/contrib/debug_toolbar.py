"""A django-debug-toolbar panel: what cacheops did for the request (every read, store and
invalidation) and this process' counts (cacheops.stats()).

    DEBUG_TOOLBAR_PANELS = [..., 'cacheops.contrib.debug_toolbar.CacheopsPanel']

It records only while the toolbar has it enabled for a request: enable_instrumentation()
connects a cache_read receiver and sets this request's recorder (docs/design.md, "Stats").
Without the toolbar nothing of this runs, and a hit costs what it did.
"""
import threading
from time import perf_counter

from debug_toolbar.panels import Panel
from django.utils.translation import ngettext

from ..removed import counting_removed
from ..signals import cache_read
from ..stats import COUNTS, func_name, model_label, recorder, start_recording, stats, stop_recording

# A condition's value is shown up to this many characters: a row may hold a long text
VALUE_WIDTH = 80


class Recorder:
    """What cacheops does in one request, as JSON-ready events (the toolbar's store keeps them)."""

    def __init__(self):
        self.started = perf_counter()
        self.events = []
        self.totals = dict.fromkeys(COUNTS, 0)
        self._missed = {}  # key: when its miss was read, for the store's "after"
        # What the request's invalidations removed (cacheops/removed.py counts it in this
        # context while the block is open): each invalidation's share is what was counted
        # since the one before
        self._counting = counting_removed()
        self.removed = self._counting.__enter__()
        self._removed_before = (0, 0)

    def close(self):
        """Stop counting removed keys (in the context that started to)."""
        self._counting.__exit__(None, None, None)

    def _at(self):
        """Milliseconds since the request began recording."""
        return round((perf_counter() - self.started) * 1000, 3)

    def read(self, model, func, hit, key):
        """A cache read: a hit, or a miss about to compute."""
        at = self._at()
        self.totals['hits' if hit else 'misses'] += 1
        if not hit:
            self._missed[key] = at
        self._add('hit' if hit else 'miss', at, model, func, key)

    def store(self, model, func, key):
        """A store of what a miss computed."""
        at = self._at()
        self.totals['stores'] += 1
        missed = self._missed.pop(key, None)
        details = '' if missed is None else '%.3f ms after the miss' % (at - missed)
        self._add('store', at, model, func, key, details)

    def invalidation(self, model, func, conditions):
        """An invalidation done: of rows (conditions), of a whole model, of a function's
        entry or of everything."""
        self.totals['invalidations'] += 1
        details = describe_conditions(model, func, conditions)
        removed = (self.removed.cache_keys, self.removed.conj_keys)
        if func is None:  # a function's entry is deleted by the simple cache, uncounted
            details += '; removed %d cached results and %d conj keys' % (
                removed[0] - self._removed_before[0], removed[1] - self._removed_before[1])
        self._removed_before = removed
        self._add('invalidation', self._at(), model, func, '', details)

    def _add(self, kind, at, model, func, key, details=''):
        self.events.append({'kind': kind, 'at': at, 'target': target(model, func),
                            'key': str(key), 'details': details})


def target(model, func):
    """What an event is about: a model's label, a function's name, or everything."""
    if model is not None:
        return model_label(model)
    if func is not None:
        return func_name(func)
    return '(everything)'


def describe_conditions(model, func, conditions):
    """An invalidation's conditions in words: its rows' values, or what it covers."""
    if conditions is not None:
        return ' | '.join(', '.join('%s=%s' % (name, _short(value)) for name, value in row.items())
                          for row in conditions)
    if model is not None:
        return 'all rows'
    if func is not None:
        return 'one entry'
    return 'everything'


def _short(value):
    text = repr(value)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + '...'


def summary(totals):
    """'12 hits, 3 misses'."""
    hits, misses = totals.get('hits', 0), totals.get('misses', 0)
    return '%s, %s' % (ngettext('%d hit', '%d hits', hits) % hits,
                       ngettext('%d miss', '%d misses', misses) % misses)


def _on_read(sender, func=None, hit=None, key=None, **kwargs):
    found = recorder()
    if found is not None:
        found.read(sender, func, hit, key)


# The receiver is connected while some request records; requests that don't record
# pass it (it finds no recorder in their context)
_receiver_lock = threading.Lock()
_recording = 0


def _connect():
    global _recording
    with _receiver_lock:
        _recording += 1
        if _recording == 1:
            cache_read.connect(_on_read, dispatch_uid='cacheops.contrib.debug_toolbar')


def _disconnect():
    global _recording
    with _receiver_lock:
        _recording -= 1
        if _recording == 0:
            cache_read.disconnect(dispatch_uid='cacheops.contrib.debug_toolbar')


class CacheopsPanel(Panel):
    """Cacheops' reads, stores and invalidations for the request, and the process' counts."""

    template = 'cacheops/debug_toolbar.html'
    is_async = True  # the recorder is a ContextVar: a request's task or thread sees its own
    nav_title = 'Cacheops'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder = None
        self._token = None

    @property
    def nav_subtitle(self):
        return summary(self.get_stats().get('totals', {}))

    @property
    def title(self):
        totals = self.get_stats().get('totals', {})
        stores, invalidations = totals.get('stores', 0), totals.get('invalidations', 0)
        return 'Cacheops: %s, %s, %s' % (
            summary(totals), ngettext('%d store', '%d stores', stores) % stores,
            ngettext('%d invalidation', '%d invalidations', invalidations) % invalidations)

    def enable_instrumentation(self):
        if self._token is None:
            self.recorder = Recorder()
            self._token = start_recording(self.recorder)
            _connect()

    def disable_instrumentation(self):
        if self._token is not None:
            _disconnect()
            stop_recording(self._token)
            self.recorder.close()
            self._token = None

    def generate_stats(self, request, response):
        process, recorded = stats(), self.recorder
        self.record_stats({
            'totals': recorded.totals if recorded else dict.fromkeys(COUNTS, 0),
            'events': recorded.events if recorded else [],
            'process': [('model', name, counts) for name, counts in sorted(process['models'].items())]
                       + [('function', name, counts) for name, counts in sorted(process['functions'].items())],
            'process_total': process['total'],
        })
