"""Structural fingerprints of Django queries: cache keys without compiling SQL.

query_fingerprint(query) describes everything in a Query that the SQL compiler reads,
so that two queries with equal fingerprints compile to the same SQL and params on the
same database. It knows a fixed set of classes and attributes; meeting anything else
(an unknown attribute, a custom expression, a model instance as a value...) it gives
None, and the caller compiles the query instead. Telling apart two queries that would
compile alike only costs cache sharing; merging two that differ would serve one the
other's result, so every table here errs on the side of telling apart.

The walk reads the instances' __dict__s: a class default changed on an instance shows
up there, so an attribute nobody told us about is noticed instead of ignored. It builds
a tree of tuples of plain values, written out with marshal (format 2), which writes
equal trees alike and tells 1, True, 1.0 and '1' apart, and refuses anything else.

The walk is in parts, each readable alone: values.py (values and the dispatch table),
models.py (models and fields), expressions.py (the safety tables of expressions and
lookups), aggregates.py (plain aggregates read directly), ordering.py, query.py (the
Query and its FROM clause), verification.py (the test suite's check).
"""
import marshal

from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from .aggregates import _aggregate_readers, _read_plainly
from .ordering import plain_ordering_name
from .query import _query
from .values import MARSHALLED, VALUE_HANDLERS, Unknown, _fingerprint, _handlers, _settings, fingerprint_value
from .verification import verify

__all__ = ['VERIFY', 'MARSHALLED', 'Unknown', 'query_fingerprint', 'chain_fingerprint',
           'expressions_fingerprint', 'fingerprint_value', 'plain_ordering_name', 'verify']

# True in the test suite only: every fingerprint is then compiled too, and one
# fingerprint giving two different SQL statements fails loudly
VERIFY = False

def query_fingerprint(query, using=None):
    """A string equal for two queries only if they compile alike, or None if not sure."""
    try:
        tree = (_query(query), _settings())
        # latin-1 maps bytes to str one to one
        fingerprint = marshal.dumps(tree, 2).decode('latin-1')
    except (Unknown, ValueError, RecursionError):  # marshal raises ValueError on other types
        return None
    if VERIFY:
        verify(query, using or DEFAULT_DB_ALIAS, fingerprint)
    return fingerprint


def chain_fingerprint(query, calls, using=None, build=None):
    """A fingerprint of the Query these recorded calls (chain.py) would build from query,
    made without building it; or None. build() gives that Query, for VERIFY."""
    try:
        tree = (('chain', _query(query), *_calls(query, calls)), _settings())
        fingerprint = marshal.dumps(tree, 2).decode('latin-1')
    except (Unknown, ValueError, RecursionError):
        return None
    if VERIFY:
        verify(build(), using or DEFAULT_DB_ALIAS, fingerprint)
    return fingerprint


def _calls(query, calls):
    """The recorded calls as what the SQL of the Query they build depends on, so that the
    spellings of one query share a fingerprint: the conditions in the order they join the
    WHERE clause, whichever calls added them (but a call with a condition on a
    many-to-many joins it anew: such a call stays a part of its own); the last order_by()
    (each replaces the ones before, and names are resolved only when compiling); and the
    bounds the slices leave."""
    where, run, ordering, limits = [], None, None, None
    for call in calls:
        kind = call[0]
        if kind == 'filter':
            if call[2] is None:  # a value fingerprints can't read
                raise Unknown(call)
            conditions, multivalued = call[2]
            if multivalued:
                where.append(conditions)
                run = None
            elif run is None:
                run = list(conditions)
                where.append(run)
            else:
                run.extend(conditions)
        elif kind == 'order_by':
            ordering = call[1]
        else:
            low, high = limits or (query.low_mark, query.high_mark)
            limits = _sliced(low, high, call[1], call[2])
    return tuple(map(tuple, where)), ordering, limits


def _sliced(low, high, start, stop):
    """The bounds Query.set_limits(start, stop) leaves on a query bounded by low and high."""
    if stop is not None:
        high = low + stop if high is None else min(high, low + stop)
    if start is not None:
        low = low + start if high is None else min(high, low + start)
    return low, high


def expressions_fingerprint(args, kwargs):
    """A string equal for two aggregate() calls only if their expressions are alike, or None."""
    try:
        # Plain aggregates are read directly, the rest walked (see _plain_aggregate_reader).
        # Names stay in the call's order: the result dict is in that order too.
        read = _aggregate_readers.get
        named = []
        for name, value in kwargs.items():
            if type(name) is not str:
                raise Unknown(name)
            named.append((name, read(type(value), _fingerprint)(value)))
        tree = (tuple([read(type(value), _fingerprint)(value) for value in args]) if args else (),
                tuple(named))
        if not all(_read_plainly(part) for part in (*tree[0], *(part for _, part in named))):
            # the walk may have read F('created__date'), which compiles in the current
            # time zone: the zone goes into the fingerprint
            tree = (*tree, _settings(), timezone.get_current_timezone_name())
        return marshal.dumps(tree, 2).decode('latin-1')
    except (Unknown, ValueError, RecursionError):
        return None


# class names are the tags: they must not be taken twice, nor by a value container
_tags = [cls.__qualname__ for cls, handler in _handlers.items() if handler not in VALUE_HANDLERS]
assert len(set(_tags)) == len(_tags), _tags
assert not {'list', 'tuple', 'set', 'frozenset', 'dict', 'repr'} & set(_tags), _tags
_plain_tags = [cls.__qualname__ + kind for cls in _aggregate_readers for kind in ('(F)', '(*)')]
assert not set(_plain_tags) & {*_tags, 'list', 'tuple', 'set', 'frozenset', 'dict', 'repr'}, _plain_tags
