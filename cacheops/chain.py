"""Recorded queryset calls: a cache hit keyed by the calls, with no Query built.

Building a Query in filter(), order_by() and slicing costs more than the Redis round
trip of a hit. So a queryset of a cached model records the plain calls made on it
(`_pending`) and shares its parent's Query untouched; the calls are replayed through
Django's own methods, in order, when anything needs the Query (a miss, `qs.query`,
any other queryset method). The cache key of a queryset with recorded calls is a
fingerprint of its parent's Query and the calls (fingerprint.chain_fingerprint).

One query, one key: the calls are recorded as the conditions Django adds to the WHERE
clause, in its order, each on its column, whatever spelling gave it (pk, id, id__exact;
category=c, category_id=c.id, category__pk=c.id; keyword arguments or Q objects), so
that the spellings of one SQL statement share a cache entry (docs/design.md). They are
replayed as they were given: a fingerprint never stands for a Query Django didn't build.

A call is recorded only when Django would raise nothing for it now: its names are
checked against the model and its values prepared by their field, so errors still
surface at the call. Anything else is left to Django, as it would be without cacheops.
"""
import datetime
import decimal
import uuid
from typing import NamedTuple

import django
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Q, QuerySet, lookups
from django.db.models.fields import related_lookups

from .fingerprint import MARSHALLED, Unknown, fingerprint_value
from .utils import remember

LOOKUPS = frozenset({'exact', 'in', 'gt', 'gte', 'lt', 'lte', 'isnull'})

SCALARS = frozenset({
    type(None), bool, int, float, str, decimal.Decimal, datetime.date, datetime.datetime,
    datetime.time, datetime.timedelta, uuid.UUID})

# QuerySet attributes a subclass must leave alone for its calls to be recorded: replay
# runs Django's own methods on a plain QuerySet
REPLAYED = ('__init__', '_clone', '_chain', 'filter', 'exclude', '_filter_or_exclude',
            '_filter_or_exclude_inplace', 'order_by', '__getitem__', 'query')

# Django's own QuerySet methods that query.py's mixins wrap, filled by monkey.py: replay
# calls them, and they record nothing
_django = {}

_recordable_classes = {}


def recordable_class(cls):
    """Whether calls on querysets of this class may be recorded (see REPLAYED)."""
    try:
        return _recordable_classes[cls]
    except KeyError:
        # on a class, a property is itself: identity works for it as for methods
        return remember(_recordable_classes, cls,
                        all(getattr(cls, name) is getattr(QuerySet, name) for name in REPLAYED))


# Names: memoized per model, bounded (names may come from requests)

_filter_fields = {}


class Name(NamedTuple):
    """What a recorded filter keyword names, and how its spellings agree."""
    field: object        # prepares the values compared (a relation's: its target field)
    lookup: str
    column: str          # the attname every spelling of the column takes in a fingerprint
    related: type        # the model whose saved instances stand for their key, or None
    int_range: tuple     # the ints a spelling through the related row may take, or None
    multivalued: bool    # a many-to-many: the call a condition is in decides its joins
    prepares: bool       # the lookup holds the value as field.get_prep_value() gives it
    none_is_null: bool   # exact=None is isnull=True
    dedupes: bool        # an __in list compiles without None and repeated values
    nullable: bool       # the column may hold NULL


def _filter_field(model, name):
    """The Name a recorded filter keyword resolves to, or None if Django must build it."""
    try:
        return _filter_fields[model, name]
    except KeyError:
        pass
    return remember(_filter_fields, (model, name), _resolve_filter(model, name))


def _resolve_filter(model, name):
    parts = name.split('__')
    lookup = parts.pop() if len(parts) > 1 and parts[-1] in LOOKUPS else 'exact'
    if len(parts) > 2:
        return None  # joins, transforms: Django checks them
    meta = model._meta
    try:
        field = meta.pk if parts[0] == 'pk' else meta.get_field(parts[0])
    except Exception:  # FieldDoesNotExist: Django raises it at the call
        return None
    if not field.is_relation:
        return _name(field, field, lookup, field.attname, field.null) \
            if field.concrete and len(parts) == 1 else None
    if not (field.concrete or field.many_to_many and not field.auto_created) \
            or field.related_model is None:
        return None  # reverse and generic relations
    try:
        target = field.target_field  # what prepares the values compared
    except Exception:  # a relation on several columns
        return None
    if len(parts) == 2:
        return _through_target(field, target, parts[1], lookup)
    if name != parts[0] and _has_field(field.related_model, lookup):
        return None  # 'tags__in' is a lookup only while the related model has no field 'in'
    return _name(target, _compared(field), lookup, field.attname, field.null,
                 related=field.related_model, multivalued=field.many_to_many)


def _through_target(field, target, part, lookup):
    """'category__id': the related row's column the relation holds, which Django compiles
    as 'category_id' (the join left out) for ints every database takes; outside them
    Django 5+ compiles the first to no rows instead. Only for exact, in and isnull."""
    if field.many_to_many or target.is_relation or lookup not in ('exact', 'in', 'isnull'):
        return None
    if part not in (target.name, target.attname) and \
            not (part == 'pk' and target is field.related_model._meta.pk):
        return None
    int_range = BaseDatabaseOperations.integer_field_ranges.get(target.get_internal_type())
    if int_range is None:
        return None
    return _name(target, target, lookup, field.attname, field.null, int_range=int_range)


def _name(field, compared, lookup, column, nullable, related=None, int_range=None,
          multivalued=False):
    """The Name of a column: compared is the field whose lookups Django uses on it."""
    exact, in_ = compared.get_lookup('exact'), compared.get_lookup('in')
    dedupes = in_ in _DEDUPING_IN
    prepares = exact in _PREPARING_EXACT if lookup == 'exact' else lookup == 'in' and dedupes
    return Name(field, lookup, column, related, int_range, multivalued, prepares,
                none_is_null=exact is not None and not exact.can_use_none_as_rhs, dedupes=dedupes,
                nullable=nullable)


def _compared(field):
    """The field a relation's lookups compare: a many-to-many's through model's key."""
    if field.many_to_many:
        return field.remote_field.through._meta.get_field(field.m2m_reverse_field_name())
    return field


def _has_field(model, name):
    try:
        model._meta.get_field(name)
        return True
    except Exception:
        return False


# Django's own lookups whose value is the field's get_prep_value() of what was given
_PREPARING_EXACT = frozenset(filter(None, (
    lookups.Exact, getattr(lookups, 'IntegerFieldExact', None), related_lookups.RelatedExact)))
# ... and __in lookups that also drop None and repeated values, keeping the first of equals
_DEDUPING_IN = frozenset({lookups.In, related_lookups.RelatedIn})
# Since Django 6.1 a negated __in whose list holds None on a nullable column also excludes
# NULLs (OR col IS NULL inside the NOT, and no IS NOT NULL): the None is then in the SQL.
NEGATED_IN_READS_NONE = django.VERSION >= (6, 1)


# Values

_REFUSED = object()  # a value Django must see for itself
_PLAIN_EXACT = SCALARS - {type(None)}


def _value(name, value):
    """The value Django would compare for this one given: a saved instance of the related
    model stands for its key (read now: the instance may change later), a scalar for
    itself; _REFUSED for anything else. Prepared by the field, raising Django's error."""
    if type(value) not in SCALARS:
        if type(value) is not name.related or value.pk is None:
            return _REFUSED
        value = getattr(value, name.field.attname)
        if type(value) not in SCALARS or value is None:
            return _REFUSED
    if value is None:
        return value
    if name.int_range is not None:
        low, high = name.int_range
        if type(value) is not int or not low <= value <= high:
            return _REFUSED
    prepared = name.field.get_prep_value(value)
    return prepared if name.prepares else value


def _condition(name, value, state, negated):
    """(the value to replay, the condition in a fingerprint), or None if Django must build it."""
    lookup = name.lookup
    if lookup == 'exact' and value is not None and type(value) in SCALARS and name.int_range is None:
        item = name.field.get_prep_value(value)  # the common case, spared the calls below
        if not name.prepares:
            item = value
        return value, (name.column, lookup, item if type(item) in MARSHALLED else _read(item, state))
    if lookup == 'in':
        if type(value) not in (list, tuple):
            return None
        items = [_value(name, item) for item in value]
        if _REFUSED in items:
            return None
        or_null = negated and NEGATED_IN_READS_NONE and None in items and name.nullable
        if or_null and (name.multivalued or not name.dedupes):
            return None  # joins decide it
        if name.dedupes:
            items = list(dict.fromkeys(items))
            if None in items:
                items.remove(None)
        # replayed with the instances' keys: Django reads the list at the call
        replayed = type(value)([item if type(item) in SCALARS else getattr(item, name.field.attname)
                                for item in value])
        return replayed, (name.column, 'in or null' if or_null else lookup, _read(items, state))
    if lookup == 'isnull':
        return (value, (name.column, lookup, value)) if type(value) is bool else None
    item = _value(name, value)
    if item is _REFUSED or item is None and lookup != 'exact':
        return None
    if type(value) not in SCALARS:
        value = getattr(value, name.field.attname)
    if item is None and name.none_is_null:
        return value, (name.column, 'isnull', True)
    return value, (name.column, lookup, item if type(item) in MARSHALLED else _read(item, state))


def _read(value, state):
    """A value as fingerprints read it; None, noted in state, if they can't."""
    try:
        return fingerprint_value(value)
    except (Unknown, ValueError, RecursionError):
        state[1] = True
        return None


# Calls

def filter_call(model, negate, args, kwargs):
    """The record of filter(*args, **kwargs) (exclude() if negate), or None if Django
    must build it. args may be Q objects joining conditions with AND, negated or not.

    The record is ('filter', negate, its conditions for a fingerprint (or None), the Q
    objects and keyword arguments to replay). The conditions are in the order Django adds
    them to the WHERE clause, each on its column by attname (pk, id, id__exact, category,
    category_id, category__pk are spellings of two columns): ((column, lookup, value), ...),
    with (None, condition, ...) for a negated group, and whether any is on a many-to-many."""
    where, state = [], [False, False]  # on a many-to-many; a value fingerprints can't read
    try:
        replayed_args = []
        for arg in args:
            replayed = _q(model, arg, negate, where, state)
            if replayed is None:
                return None
            replayed_args.append(replayed)
        replayed_kwargs = []
        # Q() sorts keyword arguments: their order never reaches the query
        for name, value in sorted(kwargs.items()) if len(kwargs) > 1 else kwargs.items():
            # _keyword(), inlined: a hit makes this call
            try:
                found = _filter_fields[model, name]
            except KeyError:
                found = _filter_field(model, name)
            if found is None:
                return None
            if found.multivalued:
                state[0] = True
            if found.lookup == 'exact' and type(value) in _PLAIN_EXACT and found.int_range is None:
                # _condition()'s common case: a hit makes this call
                item = found.field.get_prep_value(value) if found.prepares else value
                where.append((found.column, 'exact', item if type(item) in MARSHALLED else _read(item, state)))
                replayed_kwargs.append((name, value))
                continue
            made = _condition(found, value, state, negate)
            if made is None:
                return None
            where.append(made[1])
            replayed_kwargs.append((name, made[0]))
    except Exception:  # a value the field refuses: Django raises its error at the call
        return None
    if not where:
        return None
    if negate:
        where = [(None, *where)]
    conditions = None if state[1] else (tuple(where), state[0])
    return ('filter', negate, conditions, tuple(replayed_args), tuple(replayed_kwargs))


def _keyword(model, name, value, negated, where, state):
    """Adds the condition name=value to where; (name, the value to replay) or None."""
    try:
        found = _filter_fields[model, name]
    except KeyError:
        found = _filter_field(model, name) if type(name) is str else None
    if found is None:
        return None
    made = _condition(found, value, state, negated)
    if made is None:
        return None
    where.append(made[1])
    if found.multivalued:
        state[0] = True
    return name, made[0]


def _q(model, q, negated, where, state):
    """Adds the conditions of q to where as add_q() flattens them (in a negated group if q
    is negated); a copy of q to replay (Q objects are mutable), or None."""
    if type(q) is not Q or q.connector != Q.AND or not q.children:
        return None
    if q.negated:
        if negated:
            return None  # a negation in a negation
        group = []
        children = _q_children(model, q.children, True, group, state)
        where.append((None, *group))
    else:
        children = _q_children(model, q.children, negated, where, state)
    return None if children is None else Q(*children, _negated=q.negated)


def _q_children(model, children, negated, where, state):
    replayed = []
    for child in children:
        if type(child) is tuple and len(child) == 2:
            made = _keyword(model, child[0], child[1], negated, where, state)
        else:
            made = _q(model, child, negated, where, state)
        if made is None:
            return None
        replayed.append(made)
    return replayed


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
    qs = QuerySet(model=model, query=query)
    qs._query_seen = True  # nothing here is shared or recorded: Django builds
    for call in calls:
        kind = call[0]
        if kind == 'filter':
            qs = _django['QuerySet.exclude' if call[1] else 'QuerySet.filter'](qs, *call[3], **dict(call[4]))
        elif kind == 'order_by':
            qs = _django['QuerySet.order_by'](qs, *call[1])
        else:
            qs = _django['QuerySet.__getitem__'](qs, slice(call[1], call[2]))
    return qs.query
