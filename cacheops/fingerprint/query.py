"""The Query walk: every attribute of a Query the compiler reads, and its FROM clause."""
from django.db.models.sql.datastructures import BaseTable, Join
from django.db.models.sql.query import Query

from ..utils import remember
from .models import _field, _model
from .ordering import _ordering, _plain_ordering, _plain_orderings
from .values import MARSHALLED, Unknown, _empty, _fingerprint, _handlers, _names, _plain, _str


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
    return remember(_fresh_queries, model, value)  # models: a handful, unless made on the fly


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
    return remember(_plans, names, plan)  # a handful in practice: one per sequence of calls



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



_handlers.update({Query: _query, BaseTable: _base_table, Join: _join})
