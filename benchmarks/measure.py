"""Timing: the systems of a row run in batches, in rounds, their order rotating; and the quartiles."""
import dataclasses
import statistics
import time
from contextlib import nullcontext

from .config import log


@dataclasses.dataclass
class System:
    """One way to do a row's work: op(i) is timed; setup() runs untimed before each batch and
    before_each(i) untimed before each op. cache_off runs it with CACHEOPS_ENABLED=False,
    settings with these settings overridden.
    batch(n), if given, times n ops itself (an event loop's, awaited in one coroutine) and
    returns the seconds they took."""
    op: object
    setup: object = None
    before_each: object = None
    cache_off: bool = False
    batch: object = None
    settings: dict = None


@dataclasses.dataclass
class Row:
    key: str
    label: str
    ops: int      # ops per batch
    systems: dict  # name ('cacheops', 'floor', 'nocache') -> System


def cache_state(off, settings=None):
    from django.test.utils import override_settings
    overrides = {**(settings or {}), **({'CACHEOPS_ENABLED': False} if off else {})}
    return override_settings(**overrides) if overrides else nullcontext()


def time_batch(system, n):
    """Seconds per op of n ops of a system, gc off while timing."""
    import gc

    with cache_state(system.cache_off, system.settings):
        if system.setup:
            system.setup()
        gc.collect()
        gc.disable()
        try:
            if system.batch is not None:
                return system.batch(n) / n
            if system.before_each is None:
                op = system.op
                start = time.perf_counter()
                for i in range(n):
                    op(i)
                return (time.perf_counter() - start) / n
            total = 0.0
            for i in range(n):
                system.before_each(i)
                start = time.perf_counter()
                system.op(i)
                total += time.perf_counter() - start
            return total / n
        finally:
            gc.enable()


def rotated(items, n):
    n %= len(items)
    return items[n:] + items[:n]


def run_rounds(rows, rounds, label):
    """{row key: {system: [µs per op, one per round]}}, a warm-up round first."""
    import gc
    gc.collect()
    gc.freeze()  # what exists now is never garbage: keeps the collect() before each batch short
    times = {row.key: {name: [] for name in row.systems} for row in rows}
    for r in range(-1, rounds):
        for row in rows:
            for name in rotated(list(row.systems), r):
                seconds = time_batch(row.systems[name], row.ops)
                if r >= 0:
                    times[row.key][name].append(seconds * 1e6)
        if r >= 0:
            log(f'{label}: round {r + 1}/{rounds}')
    gc.unfreeze()
    return times


def queries_of(func):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        result = func()
    return len(queries), result


def quartiles(values):
    """(median, p25, p75) of a list."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    p25, median, p75 = statistics.quantiles(values, n=4, method='inclusive')
    return median, p25, p75
