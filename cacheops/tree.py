"""A query -> {db_table: [conjunction, ...]}: the DNF of its exact/in/isnull=True conditions.

A conjunction maps column names to prepared values; keys.conj_key() makes them canonical.
A table without narrowing conditions gets [{}]: any change to it invalidates.
Anything we can't reason about narrows nothing, which is always safe.
"""
from itertools import product

from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.expressions import Col
from django.db.models.lookups import Exact, In, IsNull
from django.db.models.sql.constants import LOUTER
from django.db.models.sql.query import Query
from django.db.models.sql.where import AND, OR, NothingNode, WhereNode

from .conf import long_disjunction
from .utils import conj_value, is_granular_field

TRUE = [{}]    # no narrowing: matches anything
FALSE = []     # matches nothing


def dnfs(qs):
    """{db_table: [conjunction dict, ...]} for a queryset or a Query."""
    query = getattr(qs, 'query', qs)
    db = getattr(qs, 'db', None) or DEFAULT_DB_ALIAS
    return query_dnfs(query, db)


def query_dnfs(query, db):
    result = {}
    _add_query(result, query, db)
    return {table: _simplify(conjs) for table, conjs in result.items()}


def _add_query(result, query, db):
    for combined in _read_parts(query, db):
        _add_query(result, combined, db)

    # isnull=True on an outer-joined table also matches rows missing there
    outer = {alias for alias, join in query.alias_map.items() if getattr(join, 'join_type', None) == LOUTER}
    conjs = _where_dnf(query.where, connections[db].vendor, outer)
    for alias, table in _tables_in_sql(query, db):
        table_conjs = result.setdefault(table, [])
        for conj in conjs:
            table_conjs.append({col: val for (a, col), val in conj.items() if a == alias})
    # extra(tables=) joins them in raw SQL, which tells no condition on them
    for table in query.extra_tables:
        result.setdefault(table, []).append({})

    # Conditions inside subqueries don't narrow (README, caveat 2) but their tables are used,
    # unless Django finds the subquery matches nothing (filter(x__in=[])), leaving it out
    for sub in _subqueries(query):
        if _matches_nothing(sub, db):
            continue
        for table in query_dnfs(sub, db):
            result.setdefault(table, []).append({})


def _read_parts(query, db):
    """The parts of a union, intersection or difference its SQL has: Django leaves out a
    union's parts that match nothing, and a difference's after the first."""
    parts = query.combined_queries
    if query.combinator not in ('union', 'difference'):
        return parts
    return [part for i, part in enumerate(parts)
            if (i == 0 and query.combinator == 'difference') or not _matches_nothing(part, db)]


def _matches_nothing(query, db):
    """Whether Django finds, compiling it, that a query matches no row whatever the data."""
    try:
        query.get_compiler(using=db).as_sql()
    except EmptyResultSet:
        return True
    except Exception:  # a part that only compiles within its query (OuterRef): it is read
        return False
    return False


def _tables_in_sql(query, db):
    """[(alias, table)] of the query's FROM clause, joins added by compilation included.

    Compilation adds joins (multi-table parents, select_related, ordering) and as_sql()
    resets refcounts afterwards, so a compiled query can't tell them from joins trimmed
    away. A clone set up for compilation can: its referenced aliases are the FROM clause.
    """
    if query.combinator:
        return []
    clone = query.clone()
    clone.get_compiler(using=db).pre_sql_setup()
    base = next(iter(clone.alias_map), None)
    return [(alias, join.table_name) for alias, join in clone.alias_map.items()
            if getattr(join, 'table_name', None) and (alias == base or clone.alias_refcount[alias])]


def _simplify(conjs):
    if any(not c for c in conjs):
        return [{}]
    unique = []
    for conj in conjs:
        if conj not in unique:
            unique.append(conj)
    return unique


def _where_dnf(node, vendor, outer):
    if isinstance(node, WhereNode):
        if node.negated:
            return TRUE
        children = [_where_dnf(child, vendor, outer) for child in node.children]
        if node.connector == AND:
            return _and(children)
        if node.connector == OR:
            return [conj for child in children for conj in child]
        return TRUE  # XOR
    if isinstance(node, NothingNode):
        return FALSE
    return _lookup_dnf(node, vendor, outer)


def _and(children):
    result = [{}]
    for child in children:
        merged = []
        for left, right in product(result, child):
            conj = _merge(left, right)
            if conj is not None:
                merged.append(conj)
        result = merged
    return result


def _merge(left, right):
    """Two conjunctions ANDed, or None if they contradict each other."""
    conj = dict(left)
    for key, value in right.items():
        if key in conj and conj_value(conj[key]) != conj_value(value):
            return None
        conj[key] = value
    return conj


def _lookup_dnf(lookup, vendor, outer):
    lhs = getattr(lookup, 'lhs', None)
    if not isinstance(lhs, Col) or not is_granular_field(lhs.target, vendor):
        return TRUE
    rhs = lookup.rhs
    if hasattr(rhs, 'resolve_expression'):
        return TRUE
    key = (lhs.alias, lhs.target.column)
    if isinstance(lookup, Exact):
        return [{key: rhs}] if rhs is not None else TRUE
    if isinstance(lookup, IsNull):
        return [{key: None}] if rhs and lhs.alias not in outer else TRUE
    if isinstance(lookup, In):
        # distinct by canonical string: values may be unhashable or of mixed types
        values = {conj_value(v): v for v in rhs if v is not None}
        if len(values) > long_disjunction():
            return TRUE
        return [{key: values[s]} for s in sorted(values)]
    return TRUE


def _subqueries(query):
    """Query objects nested in a query's conditions, annotations and selected expressions."""
    stack = [query.where, *query.annotations.values()]
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Query):
            yield node
            continue
        sub = getattr(node, 'query', None)
        if isinstance(sub, Query):
            yield sub
            continue
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, WhereNode):
            stack.extend(node.children)
        else:
            stack.extend(getattr(node, 'lhs', None) and [node.lhs] or ())
            rhs = getattr(node, 'rhs', None)
            if hasattr(rhs, 'resolve_expression') or isinstance(rhs, (list, tuple)):
                stack.append(rhs)
            if hasattr(node, 'get_source_expressions'):
                stack.extend(node.get_source_expressions())
