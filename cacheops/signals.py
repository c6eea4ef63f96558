"""Signals for keeping stats: cache reads and invalidations."""
import django.dispatch

# sender: the model of a cached queryset, or None; func: the cached function, or None;
# hit: whether the value came from the cache.
cache_read = django.dispatch.Signal()

# sender: the model invalidated, or None for everything; obj_dict: the row's column
# values for an object invalidation, or None for a whole model or everything.
cache_invalidated = django.dispatch.Signal()
