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
"""
import datetime
import decimal
import marshal
import uuid
import zoneinfo

from django.apps import apps
from django.conf import settings
from django.core.exceptions import EmptyResultSet, FieldError
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS
from django.db.models import aggregates, expressions, fields, functions, lookups
from django.db.models.constants import LOOKUP_SEP
from django.db.models.fields import related_lookups, reverse_related
from django.db.models.sql.datastructures import BaseTable, Join
from django.db.models.sql.query import Query
from django.utils import timezone
from django.db.models.sql.where import ExtraWhere, NothingNode, WhereNode

# True in the test suite only: every fingerprint is then compiled too, and one
# fingerprint giving two different SQL statements fails loudly
VERIFY = False


class Unknown(Exception):
    """The query holds something the fingerprint can't vouch for."""


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


def _fingerprint(obj):
    handler = _handlers.get(type(obj))
    if handler is None:
        raise Unknown(type(obj))
    return handler(obj)


fingerprint_value = _fingerprint  # for chain.py: a recorded value as the walk reads it


# Values go into the tree as they are when marshal writes them (it refuses subclasses),
# else as their repr, which tells equal values from different ones for the whitelisted
# types. Containers are tagged, so that a tuple of values never reads as an expression
# (tagged with its class name).

MARSHALLED = frozenset({type(None), bool, int, float, str, bytes})


def _plain(value):
    """Plain data as it is: marshal refuses any type but the plain ones inside."""
    return value


def _repr(value):
    return ('repr', repr(value))


def _datetime(value):
    # the repr of other tzinfo classes may not tell two zones apart
    tz = value.tzinfo
    if tz is None or type(tz) is datetime.timezone or (type(tz) is zoneinfo.ZoneInfo and tz.key):
        return ('repr', repr(value))
    raise Unknown(type(tz))


def _list(value):
    return ('list', *map(_fingerprint, value))


def _tuple(value):
    return ('tuple', *map(_fingerprint, value))


def _set(value):
    # in iteration order, which is the order their items reach the params in
    return ('set', *map(_fingerprint, value))


def _frozenset(value):
    return ('frozenset', *map(_fingerprint, value))


def _dict(value):
    return ('dict', *[(_str(key), _fingerprint(item)) for key, item in value.items()])


def _str(value):
    if type(value) is not str:
        raise Unknown(type(value))
    return value


def _names(names):
    """A set of names (masks, deferred fields), in an order stable across processes."""
    if names is None:
        return None
    return tuple(sorted(map(_str, names)))


_settings_cache = {}


def _settings():
    """What adapting datetimes to the database depends on besides the value."""
    try:
        return _settings_cache['']
    except KeyError:
        value = _settings_cache[''] = (settings.USE_TZ, settings.TIME_ZONE)
        return value


def _forget_settings(setting, **kwargs):
    if setting in ('USE_TZ', 'TIME_ZONE'):
        _settings_cache.clear()


setting_changed.connect(_forget_settings)


# Models and fields: by their label and name when they are the ones registered in the
# app registry (a historical model in a migration has the same label, not the same
# columns), else by class and the few attributes that reach SQL.

_registered = {}      # model class: its label, or None if not the registered model
_field_labels = {}    # id(field): (field, its fingerprint), for fields of registered models


def _model(model):
    try:
        label = _registered[model]
    except KeyError:
        label = _registered[model] = _registered_label(model)
    if label is None:
        raise Unknown(model)
    return label


def _registered_label(model):
    meta = getattr(model, '_meta', None)
    if meta is None or meta.apps is not apps:
        return None
    try:
        return meta.label if apps.get_model(meta.label) is model else None
    except LookupError:
        return None


def _field(field):
    entry = _field_labels.get(id(field))
    if entry is not None and entry[0] is field:
        return entry[1]
    if field is None:  # an output field not resolved
        return None
    if type(field) in _REVERSE_RELATIONS:
        label = _reverse_relation_label(field)
    elif 'model' in field.__dict__:
        label = _field_label(field)
    else:
        return _unbound_field(field)
    _field_labels[id(field)] = (field, label)  # keeps the field alive: its id stays its own
    return label


def _field_label(field):
    model = field.model
    label = _model(model)
    try:
        same = model._meta.get_field(field.name) is field
    except Exception:  # FieldDoesNotExist and the like
        same = False
    if not same:
        raise Unknown(field)
    return '%s.%s' % (label, field.name)


def _reverse_relation_label(rel):
    if rel.field.remote_field is not rel:
        raise Unknown(rel)
    return '%s<%s' % (type(rel).__name__, _field(rel.field))


def _unbound_field(field):
    """An output field made by an expression: its class and what shapes params and casts."""
    cls = type(field)
    name = _UNBOUND_FIELDS.get(cls)
    if name is None:
        raise Unknown(cls)
    get = field.__dict__.get
    return (name, get('max_length'), get('max_digits'), get('decimal_places'))


_REVERSE_RELATIONS = frozenset({
    reverse_related.ManyToOneRel, reverse_related.OneToOneRel, reverse_related.ManyToManyRel})

_UNBOUND_FIELDS = {  # field class: its name
    cls: cls.__name__ for cls in (
        fields.Field, fields.AutoField, fields.BigAutoField, fields.SmallAutoField, fields.IntegerField,
        fields.BigIntegerField, fields.SmallIntegerField, fields.PositiveIntegerField,
        fields.PositiveBigIntegerField, fields.PositiveSmallIntegerField, fields.FloatField,
        fields.DecimalField, fields.BooleanField, fields.CharField, fields.TextField,
        fields.DateField, fields.DateTimeField, fields.TimeField, fields.DurationField,
        fields.UUIDField, fields.BinaryField)
}


# Expressions: a class is known with the attributes it may carry. An attribute's meaning
# is the same in every class, so one table says how to read each.

def _empty(value):
    """What must be empty for us to know the SQL (extra tables, filtered relations...)."""
    if value:
        raise Unknown(value)
    return None


_EXPRESSION_ATTRS = {
    # how it was constructed: what it became after resolving is in the other attributes
    '_constructor_args': None,
    'identity': None,        # derived from _constructor_args, for __eq__
    'convert_value': None,   # converts result rows, never reaches SQL
    # Cached properties derived from what is fingerprinted. Compiling a query caches them
    # on expressions its clones share (and Field.get_col() gives every query the same
    # Col): read, they would change a query's key once it or a clone has run. An
    # output field set at construction is indistinguishable from a cached one, so
    # typed classes fingerprint their resolved output field instead (_typed()).
    'contains_aggregate': None,
    'contains_over_clause': None,
    'contains_column_references': None,
    'contains_subquery': None,
    'allowed_default': None,
    'possibly_multivalued': None,
    'output_field': None,
    '_output_field_or_none': None,
    # what they are made of
    'is_summary': _fingerprint,
    'alias': _fingerprint,
    'target': _field,
    'value': _fingerprint,
    'for_save': _fingerprint,
    'name': _str,
    'lhs': _fingerprint,
    'rhs': _fingerprint,
    'bilateral_transforms': _empty,  # transforms applied to the rhs too: not known
    'connector': _str,
    'negated': _fingerprint,
    'resolved': _fingerprint,
    'children': _fingerprint,
    'expression': _fingerprint,
    'source_expressions': _fingerprint,
    'extra': _dict,
    'function': _fingerprint,
    'template': _fingerprint,
    'arg_joiner': _fingerprint,
    'distinct': _fingerprint,
    'filter': _fingerprint,
    'default': _fingerprint,
    'order_by': _fingerprint,
    'descending': _fingerprint,
    'nulls_first': _fingerprint,
    'nulls_last': _fingerprint,
    'refs': _fingerprint,
    'source': _fingerprint,
    'query': _fingerprint,
    'cases': _fingerprint,
    'condition': _fingerprint,
    'result': _fingerprint,
    'sql': _str,
    'params': _fingerprint,
}
_IGNORED = frozenset(name for name, read in _EXPRESSION_ATTRS.items() if read is None)


def _typed(expression):
    """The output field an expression compiles with, resolved as compiling would (which
    caches it), so that a query keeps its key once it ran."""
    try:
        output_field = expression._output_field_or_none
    except (AttributeError, FieldError):
        # Not resolved yet (order_by() keeps what it is given: compiling resolves a copy,
        # which leaves the original as it is), or mixed types, which compiling will reject.
        return _UNRESOLVED
    return _field(output_field)


_UNRESOLVED = ('unresolved',)  # a tag no value container or class has


def _expression_handler(cls, names, typed):
    """Fingerprints instances of cls carrying no attributes but these and the ignored."""
    tag = cls.__qualname__
    names = (*names, 'is_summary')  # set by resolving, on any expression
    allowed = frozenset(names).union(_IGNORED)
    reads = [(name, _EXPRESSION_ATTRS[name]) for name in names]

    def handler(expression):
        attrs = expression.__dict__
        if not attrs.keys() <= allowed:
            raise Unknown(cls, set(attrs) - allowed)
        # in a fixed order, not the dict's, which may differ for the same state
        parts = [tag]
        for name, read in reads:
            value = attrs.get(name, _ABSENT)
            if value is _ABSENT or read is _fingerprint and type(value) in MARSHALLED:
                parts.append(value)  # most are: spare the call
            else:
                parts.append(read(value))
        if typed:
            parts.append(_typed(expression))
        return tuple(parts)
    return handler


_ABSENT = ('absent',)  # a tag no value container or class has


# The where tree's usual nodes have handlers of their own, for speed.

def _col(col):
    attrs = col.__dict__
    if not attrs.keys() <= _COL_ATTRS:
        raise Unknown(col, set(attrs) - _COL_ATTRS)
    target, output_field = attrs['target'], attrs['output_field']
    args, kwargs = attrs['_constructor_args']
    # The compiler matches GROUP BY and ORDER BY terms to selected columns by equality,
    # which tells Col(alias, field) from Col(alias, field, field): keep that apart too.
    return ('Col', attrs['alias'], _field(target),
            True if output_field is target else _field(output_field),
            len(args) + len(kwargs), attrs.get('is_summary'))


def _lookup_handler(cls):
    tag = cls.__qualname__

    def handler(lookup):
        # its output field is a BooleanField, whatever the lookup
        attrs = lookup.__dict__
        if not attrs.keys() <= _LOOKUP_ATTRS or attrs['bilateral_transforms']:
            raise Unknown(lookup)
        lhs, rhs = attrs['lhs'], attrs['rhs']
        return (tag, _col(lhs) if type(lhs) is expressions.Col else _fingerprint(lhs),
                rhs if type(rhs) in MARSHALLED else _fingerprint(rhs), attrs.get('is_summary'))
    return handler


def _in_lookup(lookup):
    """In and RelatedIn: a list compiles without None and repeated values (In.process_rhs),
    and RelatedIn on one column compiles as In does. Not past Oracle's 1000 items, where
    Django splits the list as given."""
    attrs = lookup.__dict__
    if not attrs.keys() <= _LOOKUP_ATTRS or attrs['bilateral_transforms']:
        raise Unknown(lookup)
    lhs, rhs = attrs['lhs'], attrs['rhs']
    if type(lhs) is not expressions.Col:
        return _lookup_handlers[type(lookup)](lookup)
    if type(rhs) in (list, tuple) and len(rhs) <= 1000:
        try:
            rhs = list(dict.fromkeys(rhs))
        except TypeError:  # unhashable items
            rhs = list(rhs)
        rhs = [item for item in rhs if item is not None]
    return ('In', _col(lhs), _fingerprint(rhs), attrs.get('is_summary'))


def _where_node(node):
    attrs = node.__dict__
    if not attrs.keys() <= _WHERE_ATTRS:
        raise Unknown(node)
    return ('WhereNode', attrs['connector'], attrs['negated'], attrs.get('resolved'),
            attrs.get('is_summary'), *map(_fingerprint, attrs['children']))


_COL_ATTRS = _IGNORED.union({'alias', 'target', 'is_summary'})
_LOOKUP_ATTRS = _IGNORED.union({'lhs', 'rhs', 'bilateral_transforms', 'is_summary'})
_WHERE_ATTRS = _IGNORED.union({'children', 'connector', 'negated', 'resolved', 'is_summary'})

_FUNC_ATTRS = ('source_expressions', 'extra', 'function', 'template', 'arg_joiner')
_AGGREGATE_ATTRS = _FUNC_ATTRS + ('distinct', 'filter', 'default', 'order_by')

# Lookups whose SQL depends on nothing but their class, lhs and rhs. Not the year
# lookups: their bounds depend on the current time zone.
_LOOKUPS = [
    (lookups, name) for name in (
        'Exact', 'IExact', 'GreaterThan', 'GreaterThanOrEqual', 'LessThan', 'LessThanOrEqual',
        'In', 'Contains', 'IContains', 'StartsWith', 'IStartsWith', 'EndsWith', 'IEndsWith',
        'Range', 'IsNull', 'Regex', 'IRegex',
        'IntegerFieldExact', 'IntegerGreaterThan', 'IntegerGreaterThanOrEqual',
        'IntegerLessThan', 'IntegerLessThanOrEqual',
        'UUIDIExact', 'UUIDContains', 'UUIDIContains', 'UUIDStartsWith', 'UUIDIStartsWith',
        'UUIDEndsWith', 'UUIDIEndsWith',
    )
] + [
    (related_lookups, name) for name in (
        'RelatedExact', 'RelatedLessThan', 'RelatedGreaterThan', 'RelatedGreaterThanOrEqual',
        'RelatedLessThanOrEqual', 'RelatedIsNull', 'RelatedIn',
    )
]

# (module, class name, attributes, whether its output field reaches SQL); classes
# missing in this Django version are skipped.
# None of these asks the time zone or anything else outside the query. Transforms
# (__date, __year, __lower...) are not here: most of them read the current time zone.
_EXPRESSIONS = [
    (expressions, 'Value', ('value', 'for_save'), True),
    (expressions, 'F', ('name',), False),
    (expressions, 'Ref', ('refs', 'source'), False),         # compiles to the name
    (expressions, 'Star', (), False),
    (expressions, 'OrderBy', ('expression', 'descending', 'nulls_first', 'nulls_last'), False),
    (expressions, 'OrderByList', _FUNC_ATTRS, False),
    (expressions, 'RawSQL', ('sql', 'params'), True),
    (expressions, 'ExpressionWrapper', ('expression',), True),
    (expressions, 'NegatedExpression', ('expression',), True),
    (expressions, 'CombinedExpression', ('lhs', 'connector', 'rhs'), True),
    (expressions, 'Subquery', ('query', 'extra', 'template'), True),
    (expressions, 'Exists', ('query', 'extra', 'template', 'negated'), True),
    (expressions, 'When', ('condition', 'result'), True),
    (expressions, 'Case', ('cases', 'default', 'extra'), True),
    (expressions, 'Func', _FUNC_ATTRS, True),
    (functions, 'Coalesce', _FUNC_ATTRS, True),
    (functions, 'Lower', _FUNC_ATTRS, True),
    (functions, 'Upper', _FUNC_ATTRS, True),
    (functions, 'Length', _FUNC_ATTRS, True),
    (aggregates, 'AggregateFilter', _FUNC_ATTRS, True),
    (aggregates, 'Avg', _AGGREGATE_ATTRS, True),
    (aggregates, 'Count', _AGGREGATE_ATTRS, True),
    (aggregates, 'Max', _AGGREGATE_ATTRS, True),
    (aggregates, 'Min', _AGGREGATE_ATTRS, True),
    (aggregates, 'Sum', _AGGREGATE_ATTRS, True),
    (aggregates, 'StdDev', _AGGREGATE_ATTRS, True),
    (aggregates, 'Variance', _AGGREGATE_ATTRS, True),
]


# aggregate()'s arguments: a hit fingerprints them every time, and they are mostly built-in
# aggregates of a field name, Avg('price') or Count('*'). Those are read directly, as
# their class and the name, when every other attribute is what constructing them with
# no options sets; anything else (distinct=True, filter=, default=, output_field=, any
# other expression) takes the walk above. The direct reading is tagged with the class
# name and the source's kind, 'Avg(F)' or 'Count(*)': no class tag or container tag,
# so it never equals what the walk gives.

# What constructing an aggregate with no options sets these to. Read by identity: an
# equal value of another type may compile otherwise (a default of 0.0 is not None).
_FRESH_OPTIONS = {'distinct': False, 'filter': None, 'default': None, 'order_by': None}
# The rest of a fresh aggregate: _constructor_args is derived (see _EXPRESSION_ATTRS),
# and StdDev and Variance set 'function' (by sample=)
_PLAIN_PARTS = frozenset({'_constructor_args', 'source_expressions', 'extra', 'function'})


def _plain_aggregate_reader(cls):
    """Fingerprints instances of cls, directly when built from a field name (or '*') with
    no options. None instead if this Django gives a fresh instance anything not known
    here, or not as known: an attribute the reader doesn't check would be ignored."""
    fresh = cls('name').__dict__
    if not fresh.keys() <= _PLAIN_PARTS.union(_FRESH_OPTIONS) or \
            not {'distinct', 'filter', 'default', 'source_expressions', 'extra'} <= fresh.keys() or \
            any(fresh[name] is not value for name, value in _FRESH_OPTIONS.items() if name in fresh):
        return None
    keys = frozenset(fresh)
    of_name, of_star = cls.__qualname__ + '(F)', cls.__qualname__ + '(*)'
    has_function = 'function' in keys
    walk = _handlers[cls]

    def read(aggregate):
        attrs = aggregate.__dict__
        # the same attributes as a fresh one (so order_by is there only if this Django
        # sets it), with the fresh values; output_field= and the like add one
        if attrs.keys() == keys and attrs['distinct'] is False and attrs['filter'] is None \
                and attrs['default'] is None and attrs.get('order_by') is None \
                and type(attrs['extra']) is dict and not attrs['extra']:
            sources = attrs['source_expressions']
            if type(sources) is list and len(sources) == 1:
                name = _plain_name(sources[0])
                if name is not None:
                    parts = (of_name, name) if name is not _STAR else (of_star,)
                    if not has_function:
                        return parts
                    if type(attrs['function']) is str:
                        return (*parts, attrs['function'])
        return walk(aggregate)
    return read


_STAR = ('star',)


def _read_plainly(part):
    """Whether an expression's fingerprint is a direct reading (tagged 'Avg(F)'...)."""
    return type(part) is tuple and bool(part) and type(part[0]) is str and part[0].endswith(('(F)', '(*)'))


def _plain_name(source):
    """The field name an F() names, _STAR for a Star(), else None. A name with a separator
    may end in a transform, and __date, __year and the like read the current time zone
    (see _EXPRESSIONS): that is for the walk to judge."""
    cls = type(source)
    if cls is expressions.F:
        attrs = source.__dict__
        name = attrs.get('name')
        # two attributes, these two (cheaper than comparing the keys with _F_KEYS)
        if type(name) is str and len(attrs) == 2 and '_constructor_args' in attrs \
                and LOOKUP_SEP not in name:
            return name
    elif cls is expressions.Star and source.__dict__.keys() == _STAR_KEYS:
        return _STAR
    return None


_F_KEYS = frozenset({'_constructor_args', 'name'})
_STAR_KEYS = frozenset({'_constructor_args'})
_PLAIN_AGGREGATES = ('Avg', 'Count', 'Max', 'Min', 'Sum', 'StdDev', 'Variance')


# The where tree's other nodes

def _nothing(node):
    if node.__dict__:
        raise Unknown(node)
    return ('Nothing',)


def _extra_where(node):
    attrs = node.__dict__
    if attrs.keys() != {'sqls', 'params'}:
        raise Unknown(node)
    return ('ExtraWhere', _fingerprint(attrs['sqls']), _fingerprint(attrs['params']))


# The FROM clause

_BASE_TABLE_ATTRS = frozenset({'table_name', 'table_alias'})
# join_cols and join_fields are derived from join_field
_JOIN_ATTRS = frozenset({'table_name', 'parent_alias', 'table_alias', 'join_type', 'join_cols',
                         'join_fields', 'join_field', 'nullable', 'filtered_relation'})


def _base_table(table):
    attrs = table.__dict__
    if not attrs.keys() <= _BASE_TABLE_ATTRS:
        raise Unknown(table)
    return ('BaseTable', attrs['table_name'], attrs['table_alias'])


def _join(join):
    attrs = join.__dict__
    if not attrs.keys() <= _JOIN_ATTRS or attrs.get('filtered_relation') is not None:
        raise Unknown(join)
    return ('Join', attrs['table_name'], attrs['parent_alias'], attrs['table_alias'],
            attrs['join_type'], _field(attrs['join_field']), attrs['nullable'])


def _alias_map(alias_map):
    # in order: it is the order of the FROM clause
    return tuple([(alias, _join(table) if type(table) is Join else _fingerprint(table))
                  for alias, table in alias_map.items()])


# The query itself

def _by_name(mapping):
    """Annotations, extra selects, Query.selected: names to expressions, in order."""
    if mapping is None:  # Query.selected, before values() or an annotation
        return None
    return tuple([(_str(name), _fingerprint(expression)) for name, expression in mapping.items()])


def _select_related(value):
    if type(value) is bool:
        return value
    if type(value) is not dict:
        raise Unknown(value)
    return tuple([(_str(name), _select_related(nested)) for name, nested in value.items()])


def _deferred_loading(value):
    names, defer = value
    return _names(names), defer


def _none_only(value):
    if value is not None:
        raise Unknown(value)
    return None


def _combined_queries(queries):
    return tuple(map(_query, queries))


_ORDERING = object()  # names the compiler resolves: read by _ordering(), which needs the query


def _group_by(group_by):
    if type(group_by) is tuple and any(type(expression) is str for expression in group_by):
        raise Unknown('group_by names')  # resolved while compiling: see _ordering()
    return _fingerprint(group_by)


_QUERY_ATTRS = {
    'model': _model,
    # dicts of names to names, lists of names, ints and bools, as they are
    'alias_refcount': _plain,        # unreferenced joins are left out of the FROM clause
    'alias_map': _alias_map,
    'alias_cols': _fingerprint,
    'external_aliases': _plain,
    'table_map': _plain,             # decides which names are quoted
    'base_table': None,              # cached from alias_map: checked in _query()
    'alias_prefix': _str,            # names the joins compilation may add
    'subq_aliases': _names,
    'where': _fingerprint,
    'annotations': _by_name,
    'annotation_select_mask': _names,
    '_annotation_select_cache': None,   # cached from annotations: checked in _query()
    'extra': _by_name,                  # alias: (sql, params)
    'extra_select_mask': _names,
    '_extra_select_cache': None,        # cached from extra: checked in _query()
    'extra_order_by': _ORDERING,
    'extra_tables': _empty,             # compilation would add them to alias_map
    'select': _fingerprint,
    'selected': _by_name,
    'values_select': _fingerprint,
    'default_cols': _fingerprint,
    'has_select_fields': _fingerprint,
    'select_related': _select_related,
    'max_depth': _fingerprint,
    'deferred_loading': _deferred_loading,
    'order_by': _ORDERING,           # names the compiler resolves: see _ordering()
    'default_ordering': _fingerprint,
    'standard_ordering': _fingerprint,
    'group_by': _group_by,
    'low_mark': _fingerprint,
    'high_mark': _fingerprint,
    'distinct': _fingerprint,
    'distinct_fields': _ORDERING,
    'combinator': _fingerprint,
    'combinator_all': _fingerprint,
    'combined_queries': _combined_queries,
    'subquery': _fingerprint,
    'contains_subquery': _fingerprint,
    'empty_result_set_value': _fingerprint,
    'select_for_update': _fingerprint,
    'select_for_update_nowait': _fingerprint,
    'select_for_update_skip_locked': _fingerprint,
    'select_for_update_of': _fingerprint,
    'select_for_no_key_update': _fingerprint,
    'explain_info': _none_only,
    '_filtered_relations': _empty,
    # Query is an expression too: its cached properties, derived from what is fingerprinted
    'contains_aggregate': None,
    'contains_over_clause': None,
    'contains_column_references': None,
    'output_field': None,
    '_output_field_or_none': None,
    'identity': None,
    'convert_value': None,
    # read only while adding filters, never by the compiler
    'used_aliases': None,
    'filter_is_sticky': None,
    '_lookup_joins': None,
    '_db': None,                     # the inner queryset's database: the outer one's is used
}


def _query(query):
    if type(query) is not Query:  # UpdateQuery and friends, custom query classes
        raise Unknown(type(query))
    attrs = query.__dict__
    # a manager's queryset starts from a fresh Query, and a hit with recorded calls
    # fingerprints it as it is: comparing its state with a fresh one's is a third of a walk
    model = attrs.get('model')
    fresh = _fresh_queries.get(model)
    if fresh is None and model is not None:
        fresh = _fresh_query(model)
    if fresh is not None and fresh[1] is not None and attrs == fresh[0]:
        return fresh[1]
    return _walk_query(query, attrs)


_fresh_queries = {}  # model: (the state of a fresh Query(model), its fingerprint or None)


def _fresh_query(model):
    fresh = Query(model)
    try:
        value = (fresh.__dict__, _walk_query(fresh, fresh.__dict__))
    except (Unknown, ValueError, RecursionError):  # Meta.ordering that isn't plain...
        value = (fresh.__dict__, None)
    if len(_fresh_queries) < 10000:  # models: a handful, unless made on the fly
        _fresh_queries[model] = value
    return value


def _walk_query(query, attrs):
    names = tuple(attrs)
    plan = _plans.get(names) or _plan(names)
    parts = []
    for name, read in plan:
        value = attrs[name]
        if read is _plain or read is _fingerprint and type(value) in MARSHALLED:
            parts.append((name, value))
        elif type(value) is dict and not value:  # annotations, extra...: mostly empty
            parts.append((name, 'empty'))
        elif read is _ORDERING:
            parts.append((name, _ordering(value, attrs)))
        else:
            parts.append((name, read(value)))

    model = attrs['model']
    if not (attrs.get('order_by') or attrs.get('extra_order_by')) and \
            not _plain_orderings.get(model, False) and not _plain_ordering(model):
        raise Unknown('Meta.ordering')  # the compiler would order by it
    # what compiling caches must agree with its source, or we don't know what it reads
    alias_map = attrs['alias_map']
    if 'base_table' in attrs and attrs['base_table'] != next(iter(alias_map), None):
        raise Unknown('Query.base_table')
    if len(alias_map) == 1 and 0 in attrs['alias_refcount'].values() and \
            _only_base_table_unreferenced(query, attrs):
        parts = [part for part in parts if part[0] not in _FROM_ATTRS] + _NO_FROM
        parts.sort()
    if attrs.get('_annotation_select_cache') is not None:
        _check_select_cache(attrs, '_annotation_select_cache', 'annotations', 'annotation_select_mask')
    if attrs.get('_extra_select_cache') is not None:
        _check_select_cache(attrs, '_extra_select_cache', 'extra', 'extra_select_mask')
    return ('Query', *parts)


_plans = {}  # the names in a Query's __dict__, in order: [(name, read)] of those read, sorted


def _plan(names):
    """How to read a Query with these attributes: by name, so that the same state set in
    another order gives the same fingerprint; ignoring what doesn't reach SQL."""
    unknown = [name for name in names if name not in _QUERY_ATTRS]
    if unknown:
        raise Unknown('Query.' + unknown[0])
    plan = sorted((name, _QUERY_ATTRS[name]) for name in names if _QUERY_ATTRS[name] is not None)
    if len(_plans) < 1000:  # a handful in practice: one per sequence of queryset calls
        _plans[names] = plan
    return plan


# Ordering: order_by() keeps names and expressions as given, for the compiler to resolve.
# A name may end in a transform (order_by('created__date')), and some transforms read
# the current time zone: only names of fields and relations (whose models' Meta.ordering
# is itself plain) are known. Expressions other than F() are not: the compiler matches
# them against the selected ones by equality, which depends on how they were built.

def _ordering(items, attrs):
    return tuple([_ordering_item(item, attrs) for item in items])


def _ordering_item(item, attrs):
    cls = type(item)
    if cls is str:
        name = item
    elif cls is expressions.F:
        name = item.name
    elif cls is expressions.OrderBy and type(item.expression) is expressions.F:
        name = item.expression.name
    else:
        raise Unknown(item)
    bare = name[1:] if name.startswith('-') else name
    if bare not in attrs.get('annotations', ()) and bare not in attrs.get('extra', ()) \
            and not plain_ordering_name(attrs['model'], name):
        raise Unknown(name)
    return _fingerprint(item)


_plain_names = {}  # (model, ordering name): whether it names fields and relations only


def plain_ordering_name(model, name):
    try:
        return _plain_names[model, name]
    except KeyError:
        plain = _fields_path(model, name, frozenset())
        if len(_plain_names) < 10000:  # names may come from requests: don't grow forever
            _plain_names[model, name] = plain
        return plain


def _fields_path(model, name, visiting):
    if name == '?':  # random
        return True
    pieces = (name[1:] if name.startswith('-') else name).split('__')
    meta = model._meta
    for position, piece in enumerate(pieces, start=1):
        last = position == len(pieces)
        try:
            field = meta.pk if piece == 'pk' else meta.get_field(piece)
        except Exception:  # FieldDoesNotExist: a transform, or an error compiling will raise
            return False
        if not field.is_relation:
            return last  # anything after a column is a transform
        if field.related_model is None:  # a generic foreign key
            return False
        if last:
            # by a relation's column, or else by its model's ordering (as the compiler does)
            return piece in ('pk', getattr(field, 'attname', None)) or \
                _plain_ordering(field.related_model, visiting)
        meta = field.related_model._meta
    return True


_plain_orderings = {}  # model: whether its Meta.ordering is plain


def _plain_ordering(model, visiting=frozenset()):
    """Whether a model's Meta.ordering is made of names of fields and relations only."""
    try:
        return _plain_orderings[model]
    except KeyError:
        pass
    ordering = model._meta.ordering
    if not ordering or model in visiting:  # a cycle: the compiler refuses it
        return True
    inner = visiting | {model}
    plain = all(type(item) is str and _fields_path(model, item, inner) for item in ordering)
    if not visiting:  # what a cycle assumed is not known
        _plain_orderings[model] = plain
    return plain


def _only_base_table_unreferenced(query, attrs):
    """Whether the FROM clause is the model's table alone, as compiling a query with no
    tables leaves it (compiling adds the table, then resets its refcount to 0). Compiling
    then does as it would with no tables: it adds the table, or refers to it once."""
    (alias, table), = attrs['alias_map'].items()
    return (type(table) is BaseTable and alias == table.table_name == table.table_alias
            == query.model._meta.db_table and attrs['alias_refcount'] == {alias: 0}
            and attrs['table_map'] == {alias: [alias]})


_FROM_ATTRS = frozenset({'alias_map', 'alias_refcount', 'table_map'})
# how _query() reads the empty dicts Query.__init__() sets
_NO_FROM = [('alias_map', 'empty'), ('alias_refcount', {}), ('table_map', {})]


def _check_select_cache(attrs, name, source_name, mask_name):
    """A cached annotation_select/extra_select must be what the mask selects."""
    cache = attrs.get(name)
    if cache is None:
        return
    source, mask = attrs.get(source_name, {}), attrs.get(mask_name)
    selected = [(key, value) for key, value in source.items() if mask is not None and key in mask]
    if type(cache) is not dict or list(cache) != [key for key, _ in selected] or \
            any(cache[key] is not value for key, value in selected):
        raise Unknown('Query.' + name)


# Verification, for the test suite: one fingerprint must always give one SQL statement

_verified = {}  # (database alias, fingerprint): (sql, repr(params))


def verify(query, using, fingerprint):
    """Compile a copy of the query; AssertionError if its fingerprint was seen with other SQL."""
    try:
        sql, params = query.clone().get_compiler(using=using).as_sql()
        # binary params are memoryviews on some backends, whose repr is their address
        compiled = (sql, repr([bytes(p) if type(p) is memoryview else p for p in params]))
    except EmptyResultSet:
        compiled = ('EmptyResultSet', '')
    except Exception as e:  # what compiling raises is part of what the query is
        compiled = ('raises %s' % type(e).__name__, '')
    seen = _verified.setdefault((using, fingerprint), compiled)
    if seen != compiled:
        raise AssertionError('cacheops: one fingerprint, two SQL statements:\n%r\n%r\n%r'
                             % (fingerprint, seen, compiled))


# The dispatch table, built once

_handlers = {cls: _plain for cls in MARSHALLED}
_handlers.update({cls: _repr for cls in (decimal.Decimal, datetime.date, datetime.timedelta, uuid.UUID)})
_handlers.update({
    datetime.datetime: _datetime,
    datetime.time: _datetime,
    list: _list,
    tuple: _tuple,
    set: _set,
    frozenset: _frozenset,
    Query: _query,
    BaseTable: _base_table,
    Join: _join,
    NothingNode: _nothing,
    ExtraWhere: _extra_where,
})
_handlers[expressions.Col] = _col
_handlers[WhereNode] = _where_node
for _module, _name in _LOOKUPS:
    _cls = getattr(_module, _name, None)
    if _cls is not None:
        _handlers[_cls] = _lookup_handler(_cls)
_lookup_handlers = {cls: _handlers[cls] for cls in (lookups.In, related_lookups.RelatedIn)}
_handlers[lookups.In] = _handlers[related_lookups.RelatedIn] = _in_lookup
for _module, _name, _attrs, _typed_output in _EXPRESSIONS:
    _cls = getattr(_module, _name, None)
    if _cls is not None:
        _handlers[_cls] = _expression_handler(_cls, _attrs, _typed_output)

# aggregate()'s arguments: exact classes (a subclass may compile otherwise) read directly
# when plain. Only if F() and Star() are as this Django builds them: else an attribute
# they gained would be ignored.
_aggregate_readers = {}
if expressions.F('name').__dict__.keys() == _F_KEYS and expressions.Star().__dict__.keys() == _STAR_KEYS:
    for _name in _PLAIN_AGGREGATES:
        _cls = getattr(aggregates, _name)
        _read = _plain_aggregate_reader(_cls)
        if _read is not None:
            _aggregate_readers[_cls] = _read

# class names are the tags: they must not be taken twice, nor by a value container
_tags = [cls.__qualname__ for cls, handler in _handlers.items()
         if handler not in (_plain, _repr, _datetime, _list, _tuple, _set, _frozenset)]
assert len(set(_tags)) == len(_tags), _tags
assert not {'list', 'tuple', 'set', 'frozenset', 'dict', 'repr'} & set(_tags), _tags
_plain_tags = [cls.__qualname__ + kind for cls in _aggregate_readers for kind in ('(F)', '(*)')]
assert not set(_plain_tags) & {*_tags, 'list', 'tuple', 'set', 'frozenset', 'dict', 'repr'}, _plain_tags
