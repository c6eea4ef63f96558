"""Recorded queryset calls: a cache hit keyed by the calls, with no Query built.

Building a Query in filter(), order_by() and slicing costs more than the Redis round
trip of a hit. So a queryset of a cached model records the plain calls made on it
(`_pending`) and shares its parent's Query untouched; the calls are replayed through
Django's own methods, in order, when anything needs the Query (a miss, `qs.query`,
any other queryset method). The cache key of a queryset with recorded calls is a
fingerprint of its parent's Query and the calls (fingerprint.chain_fingerprint).

A call is recorded only when Django would raise nothing for it now: its names are
checked against the model and its values prepared by their field, so errors still
surface at the call. Anything else is left to Django, as it would be without cacheops.
"""
import datetime
import decimal
import uuid

from django.db.models import QuerySet

LOOKUPS = frozenset({'exact', 'in', 'gt', 'gte', 'lt', 'lte', 'isnull'})

SCALARS = frozenset({
    type(None), bool, int, float, str, decimal.Decimal, datetime.date, datetime.datetime,
    datetime.time, datetime.timedelta, uuid.UUID})

# QuerySet attributes a subclass must leave alone for its calls to be recorded: replay
# runs Django's own methods on a plain QuerySet
REPLAYED = ('__init__', '_clone', '_chain', 'filter', 'exclude', '_filter_or_exclude',
            '_filter_or_exclude_inplace', 'order_by', '__getitem__', 'query')

_recordable_classes = {}


def recordable_class(cls):
    """Whether calls on querysets of this class may be recorded (see REPLAYED)."""
    try:
        return _recordable_classes[cls]
    except KeyError:
        # on a class, a property is itself: identity works for it as for methods
        value = _recordable_classes[cls] = all(
            getattr(cls, name) is getattr(QuerySet, name) for name in REPLAYED)
        return value


# Names: memoized per model, bounded (names may come from requests)

MEMO_SIZE = 10000
_filter_fields = {}


def _filter_field(model, name):
    """The field preparing the values of a recorded filter keyword and its lookup, or None."""
    try:
        return _filter_fields[model, name]
    except KeyError:
        pass
    value = _resolve_filter(model, name)
    if len(_filter_fields) < MEMO_SIZE:
        _filter_fields[model, name] = value
    return value


def _resolve_filter(model, name):
    parts = name.split('__')
    lookup = parts.pop() if len(parts) == 2 and parts[1] in LOOKUPS else 'exact'
    if len(parts) != 1:
        return None  # joins, transforms: Django checks them
    meta = model._meta
    try:
        field = meta.pk if parts[0] == 'pk' else meta.get_field(parts[0])
    except Exception:  # FieldDoesNotExist: Django raises it at the call
        return None
    if not field.is_relation:
        return (field, lookup) if field.concrete else None
    if not (field.concrete or field.many_to_many and not field.auto_created) \
            or field.related_model is None:
        return None  # reverse and generic relations
    if name != parts[0]:
        # 'tags__in' is a lookup only while the related model has no field named 'in'
        try:
            field.related_model._meta.get_field(lookup)
            return None
        except Exception:
            pass
    try:
        return field.target_field, lookup  # what prepares the values compared
    except Exception:  # a relation on several columns
        return None


def _prepared(field, lookup, value):
    """Whether a value may be recorded for this lookup: prepared as the lookup would,
    raising Django's own error; False when Django must build the call."""
    if lookup == 'isnull':
        return type(value) is bool
    if lookup == 'in':
        if type(value) not in (list, tuple):
            return False
        for item in value:
            if type(item) not in SCALARS:
                return False
            if item is not None:
                field.get_prep_value(item)
        return True
    if type(value) not in SCALARS or value is None and lookup != 'exact':
        return False
    if value is not None:
        field.get_prep_value(value)
    return True


def filter_call(model, negate, kwargs):
    """The record of filter(**kwargs) (exclude() if negate), or None if Django must build it."""
    items = []
    for name, value in kwargs.items():
        found = _filter_field(model, name)
        if found is None:
            return None
        try:
            if not _prepared(*found, value):
                return None
        except Exception:  # a value the field refuses: Django raises its error at the call
            return None
        items.append((name, list(value) if type(value) is list else value))
    # Q() sorts keyword arguments: their order never reaches the query
    items.sort()
    return ('filter', negate, tuple(items))


def order_by_call(model, names, plain_name):
    """The record of order_by(*names), or None; plain_name(model, name) vets a name."""
    for name in names:
        if type(name) is not str or not plain_name(model, name):
            return None
    return ('order_by', tuple(names))


def slice_call(k):
    """The record of qs[k] for a slice without step, or None."""
    if type(k) is not slice or k.step is not None:
        return None
    start, stop = k.start, k.stop
    if start is not None and (type(start) is not int or start < 0) or \
            stop is not None and (type(stop) is not int or stop < 0):
        return None
    return ('slice', start, stop)


def is_sliced(query, calls):
    return query.is_sliced or any(call[0] == 'slice' for call in calls)


def replay(model, query, calls):
    """A new Query: query with the recorded calls made on it by Django's own methods."""
    from .query import _django  # Django's originals, which record nothing
    qs = QuerySet(model=model, query=query)
    qs._query_seen = True  # nothing here is shared or recorded: Django builds
    for call in calls:
        kind = call[0]
        if kind == 'filter':
            qs = _django['QuerySet.exclude' if call[1] else 'QuerySet.filter'](qs, **dict(call[2]))
        elif kind == 'order_by':
            qs = _django['QuerySet.order_by'](qs, *call[1])
        else:
            qs = _django['QuerySet.__getitem__'](qs, slice(call[1], call[2]))
    return qs.query
