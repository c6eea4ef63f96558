"""What invalidations removed, counted for a block of code: the `invalidate` command
reports it. Nothing is counted outside such a block, so a write pays one ContextVar read."""
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

__all__ = ['Removed', 'counting_removed', 'count_removed']


@dataclass
class Removed:
    """Keys invalidations deleted: conjunction keys (conj sets or insideout stamps) and
    cache entries. An entry already expired, or deleted by another writer meanwhile, is
    not counted."""
    conj_keys: int = 0
    cache_keys: int = 0


_tally: ContextVar[Removed | None] = ContextVar('cacheops_removed', default=None)


@contextmanager
def counting_removed() -> Iterator[Removed]:
    """Count what invalidations in this block (and this context) remove."""
    tally = Removed()
    token = _tally.set(tally)
    try:
        yield tally
    finally:
        _tally.reset(token)


def count_removed(conj_keys: int = 0, cache_keys: int = 0) -> None:
    """Add to the tally of the counting_removed() block around, if any."""
    tally = _tally.get()
    if tally is not None:
        tally.conj_keys += conj_keys
        tally.cache_keys += cache_keys
