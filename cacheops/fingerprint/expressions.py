"""The safety tables: the expressions, lookups and where-tree nodes a fingerprint knows,
each with the attributes it may carry. Anything not listed here is Unknown.

Review these tables alone: adding a class or an attribute is where a fingerprint could
start to merge two queries that compile differently.
"""
from django.core.exceptions import FieldError
from django.db.models import aggregates, expressions, functions, lookups
from django.db.models.fields import related_lookups
from django.db.models.sql.where import ExtraWhere, NothingNode, WhereNode

from .models import _field
from .values import MARSHALLED, Unknown, _dict, _empty, _fingerprint, _handlers, _str


# Expressions: a class is known with the attributes it may carry. An attribute's meaning
# is the same in every class, so one table says how to read each.


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

_handlers.update({NothingNode: _nothing, ExtraWhere: _extra_where})
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
