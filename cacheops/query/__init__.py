"""The queryset layer: what QuerySet and managers gain, the cached ops and their keys.

Bottom up, each module importing only those before it:

    cacheconf.py    what .cache()/.nocache()/.inplace() set on a queryset
    recording.py    plain calls recorded instead of made (chain.py); the Query shared
    keys.py         a queryset's key and DNFs from its fingerprint, and their memos
    fetch_modes.py  Django 6.1's fetch modes for instances read from the cache
    gets.py         get() by one unique column, keyed from the value; local_get
    writes.py       bulk_create(), update(), bulk_update(), invalidated_update()
    on_save.py      cache_on_save: a saved instance stored where get() reads it
    mixins.py       QuerySetMixin (the parts above gathered in) and ManagerMixin

monkey.py grafts QuerySetMixin and ManagerMixin onto Django's classes; nothing here
patches anything by itself. Other modules import from here, not from the modules.
cacheops/compat.py adds invalidate_m2o (COMPAT), a model event's: this layer is below them.
"""
from .gets import fast_get
from .mixins import ManagerMixin, QuerySetMixin, collector_related_objects
from .on_save import cache_on_save
# COMPAT: the model-event receivers look invalidate_dict up here at call time (tests patch it)
from ..invalidation import invalidate_dict

__all__ = ['ManagerMixin', 'QuerySetMixin', 'cache_on_save', 'collector_related_objects',
           'fast_get', 'invalidate_dict']
