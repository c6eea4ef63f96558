"""Memory usage cleanup for conj-set mode: reap_conjs() drops references to expired keys.

A cache key expires on its own, but its name stays in the conjunction sets it was
registered in until one of them is invalidated. Big sets of mostly dead names make
invalidation slow and use memory. reap_conjs() walks the conjunction keys with SCAN
and removes, chunk by chunk, the members that no longer exist, so Redis is never
blocked for long. Insideout mode has no such sets: its stamps are left alone.
It also drains the handover and drain sets an invalidation left when its process died
before deleting the cache keys they name.
"""
from dataclasses import dataclass

from .invalidation import drain_leftovers
from .keys import reaping_key, scan_conj_keys
from .redis import get_client, is_cluster, run_script
from .utils import chunks


@dataclass
class ReapStats:
    """What reap_conjs() found and did."""
    conj_keys: int = 0  # conjunction keys found by SCAN
    sets: int = 0       # sets of at least min_conj_set_size members, checked
    total: int = 0      # members of those sets when they were found
    members: int = 0    # members checked
    removed: int = 0    # references to expired keys removed
    trimmed: int = 0    # sets that had some removed
    emptied: int = 0    # sets left empty, which Redis deletes
    drained: int = 0    # handover and drain sets of unfinished invalidations, emptied


def reap_conjs(chunk_size=1000, min_conj_set_size=1000, progress=None):
    """Remove references to expired cache keys from conj sets of at least min_conj_set_size members.

    Every Redis call handles at most chunk_size keys or members. progress(stats), if
    given, is called as the work goes on; the final ReapStats is returned.
    """
    if chunk_size < 1:
        raise ValueError('chunk_size must be at least 1, got %r' % (chunk_size,))
    if min_conj_set_size < 0:
        raise ValueError('min_conj_set_size must not be negative, got %r' % (min_conj_set_size,))
    client = get_client()
    stats = ReapStats()
    notify = progress or (lambda stats: None)
    big_sets = list(_big_conj_sets(client, chunk_size, min_conj_set_size, stats, notify))
    stats.sets = len(big_sets)
    stats.total = sum(size for _, size in big_sets)
    notify(stats)
    for conj, _ in big_sets:
        _reap_set(client, conj, chunk_size, stats, notify)
    _drain_leftovers(client, chunk_size, stats, notify)
    return stats


def _drain_leftovers(client, chunk_size, stats, notify):
    def drained():
        stats.drained += 1
        notify(stats)
    drain_leftovers(client, chunk_size, drained)


def _big_conj_sets(client, chunk_size, min_size, stats, notify):
    """(key, size) of each conjunction set with at least min_size members."""
    for prefix, keys in scan_conj_keys(client, chunk_size):
        stats.conj_keys += len(keys)
        for key, size in zip(keys, _set_sizes(client, keys)):
            if size is not None and size >= min_size:
                yield (prefix, key), size
        notify(stats)


def _set_sizes(client, keys):
    """SCARD of each key, None for keys that are not sets (insideout stamps)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.scard(key)
    return [None if isinstance(r, Exception) else r for r in pipe.execute(raise_on_error=False)]


def _reap_set(client, found, chunk_size, stats, notify):
    removed_before = stats.removed
    _reap_members_of(client, found, chunk_size, stats, notify)
    stats.trimmed += stats.removed > removed_before
    notify(stats)


def _reap_members_of(client, found, chunk_size, stats, notify):
    prefix, conj = found
    cursor = 0
    while True:
        # SSCAN returns every member present for the whole walk, whatever we remove meanwhile
        cursor, members = client.sscan(conj, cursor, count=chunk_size)
        for chunk in chunks(members, chunk_size):
            removed, left = _reap_members(client, prefix, conj, chunk)
            stats.members += len(chunk)
            stats.removed += removed
            notify(stats)
            if left <= 0:  # emptied by us (Redis deleted it), or gone meanwhile
                stats.emptied += left == 0
                return
        if not cursor:
            return


def _reap_members(client, prefix, conj, members):
    """SREM the members that don't exist as keys; checked and removed in one script, or
    on a cluster, where they live in other slots, in three steps (lua/reap_marked.lua)."""
    if not is_cluster():
        return run_script('reap_conj', [conj, *members])
    reaping = reaping_key(prefix, conj.decode() if isinstance(conj, bytes) else conj)
    client.pipeline(transaction=False).sadd(reaping, *members).expire(reaping, 3600).execute()
    return run_script('reap_marked', [conj, reaping], _missing(client, members), client)


def _missing(client, keys):
    """The keys that don't exist (each checked in its own slot)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return [key for key, found in zip(keys, pipe.execute()) if not found]
