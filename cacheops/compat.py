"""Compatibility aliases: names at old import paths that their module's layer cannot hold."""
from . import events, query

# cacheops.query.invalidate_m2o (COMPAT) is a model event's (events/deletes.py), a layer
# above the queryset layer, which must not import it. cacheops/__init__.py imports this
# module, so the name is there whenever cacheops.query is, apps ready or not.
query.invalidate_m2o = events.invalidate_m2o
