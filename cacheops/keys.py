"""The Redis key layout: prefixes, conjunction keys, scheme sets, epochs.

On one Redis (or Sentinel): <prefix>conj:<table>:<f>=<v>&..., <prefix>schemes:<table>
and, in insideout mode, <prefix>epoch:<table>. On a cluster the table is a hash tag,
<prefix>conj:{<table>}:..., so that one table's invalidation runs on one shard.
"""
import datetime
import decimal
import uuid
from collections import defaultdict

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from .conf import derived, is_cluster, prefix_func
from .utils import chunks, conj_value, glob_escape, table_models


class PrefixQuery:
    """What CACHEOPS_PREFIX receives: the databases and tables a query uses."""
    def __init__(self, dbs, tables):
        self.dbs = list(dbs)
        self.tables = list(tables)

    @property
    def db(self):
        return self._single('dbs', self.dbs)

    @property
    def table(self):
        return self._single('tables', self.tables)

    def _single(self, what, values):
        if len(values) != 1:
            raise ImproperlyConfigured(
                'CACHEOPS_PREFIX used query.%s for a query with %d %s: %r; use query.%s'
                % (what[:-1], len(values), what, values, what))
        return values[0]


def prefix_for(dbs, tables):
    """The key prefix for a query on these databases and tables."""
    func = prefix_func()
    if func is None:
        return ''
    prefix = func(PrefixQuery(dbs, tables))
    return prefix or ''


@derived
def _table_format():
    return '{%s}' if is_cluster() else '%s'


def table_tag(table):
    return _table_format() % table


def conj_prefix(prefix, table):
    """The part shared by all conjunction keys of a table."""
    return '%sconj:%s:' % (prefix, table_tag(table))


def conj_key(prefix, table, conj):
    """Key of the set (or stamp) for one conjunction of a table."""
    return conj_prefix(prefix, table) + '&'.join(
        '%s=%s' % (column, conj_value(value)) for column, value in sorted(conj.items()))


def schemes_key(prefix, table):
    """Key of the set of column combinations used in a table's conjunctions."""
    return '%sschemes:%s' % (prefix, table_tag(table))


def epoch_key(prefix, table):
    """Key of a table's epoch (insideout mode): a random token replaced by every
    invalidation of the table, so that a miss can tell none happened since its read."""
    return '%sepoch:%s' % (prefix, table_tag(table))


def handover_key(prefix, token, table=None):
    """Key of the set an invalidation keeps the cache keys it leaves to the client in, for
    a run of the same call (token) to find them after its reply was lost."""
    if table is None:
        return '%shandover:%s' % (prefix, token)
    return '%shandover:%s:%s' % (prefix, table_tag(table), token)


def scheme(conj):
    return ','.join(sorted(conj))


def signal_key(cache_key):
    """The list a dog-pile lock's waiters block on."""
    return beside(cache_key, ':signal')


def lock_key(cache_key):
    """The dog-pile lock of a key in insideout mode (conj-set mode locks with its pending marker)."""
    return beside(cache_key, ':lock')


def reaping_key(prefix, conj):
    """Key of the set reap_conjs() keeps, on a cluster, the members of a conj set it is
    checking in: a registration meanwhile takes its key out, and it is not removed."""
    return '%sreaping:%s' % (prefix, conj[len(prefix):])


def hash_tag(key):
    """The part of a key a cluster hashes when it has one: after the first '{', up to
    the next '}', if not empty (Redis Cluster's rule); else None."""
    start = key.find('{')
    if start == -1:
        return None
    end = key.find('}', start + 1)
    return key[start + 1:end] if end > start + 1 else None


def beside(key, suffix):
    """key + suffix, in key's slot on a cluster: there, a key without a hash tag of its
    own becomes the tag. On one Redis the names are COMPAT.md's."""
    if not is_cluster() or hash_tag(key) is not None:
        return key + suffix
    if '}' not in key:
        return '{%s}%s' % (key, suffix)
    # a '}' can't be in a tag: one that hashes to the key's slot goes first instead
    from redis.crc import key_slot
    return '{%s}%s%s' % (_tag_of_slot(key_slot(key.encode())), key, suffix)


def _tag_of_slot(slot):
    """A short hash tag in this cluster slot, found once per slot (16384 tries on average)."""
    found = _slot_tags.get(slot)
    if found is None:
        from redis.crc import key_slot
        n = 0
        while key_slot(b'%x' % n) != slot:
            n += 1
        found = _slot_tags[slot] = '%x' % n
    return found


_slot_tags = {}  # at most one per slot: 16384


# Which keys are cacheops' conjunction keys

def prefixed_tables():
    """{prefix: tables}: the prefix conj keys of each installed table have, over all databases."""
    tables = list(table_models())
    if prefix_func() is None:
        return {'': set(tables)}
    result = defaultdict(set)
    for db in connections:
        for table in tables:
            result[table_prefix(db, table)].add(table)
    return dict(result)


def table_prefix(db, table):
    """prefix_for([db], [table]); ImproperlyConfigured if CACHEOPS_PREFIX fails for it."""
    try:
        return prefix_for([db], [table])
    except ImproperlyConfigured:
        raise
    except Exception as e:
        # e.g. a prefix taken from the current request, run from a management command
        raise ImproperlyConfigured(
            'CACHEOPS_PREFIX failed for a query on database %r and table %r (%s: %s); finding '
            "cacheops' keys needs the prefix of every database and table outside of requests"
            % (db, table, type(e).__name__, e)) from e


def conj_patterns():
    """[(prefix, SCAN pattern, the conj key prefixes of known tables it should match)],
    one per prefix.

    The pattern alone could match another application's keys in a shared Redis
    database; the found keys are checked against the third item.
    """
    return [
        (prefix, glob_escape(prefix) + 'conj:*', {conj_prefix(prefix, table) for table in tables})
        for prefix, tables in sorted(prefixed_tables().items())
    ]


def scan_conj_keys(client, count=1000):
    """(prefix, [conj keys]): cacheops' conjunction keys (sets or stamps) under each
    prefix, found with SCAN, up to count at a time."""
    for prefix, pattern, own_prefixes in conj_patterns():
        for keys in chunks(client.scan_iter(match=pattern, count=count), count):
            keys = [key for key in keys if is_conj_key(key, own_prefixes)]
            if keys:
                yield prefix, keys


def is_conj_key(key, own_prefixes):
    """Whether a key starts with one of these '<prefix>conj:<table>:' strings."""
    text = key.decode(errors='replace') if isinstance(key, bytes) else key
    colon = text.find(':')
    while colon != -1:  # prefixes and table names may contain ':' too
        if text[:colon + 1] in own_prefixes:
            return True
        colon = text.find(':', colon + 1)
    return False


# Rows as conj keys see them

def row_of(columns, values, like=None):
    """{column: canonical string} from [(column, attname, field)] and {attname or column: value}.

    like: (values, row) of another row of the same columns (an update's old one next to
    its new one), whose strings serve for the values that are sure to give the same."""
    row = {}
    like_values, like_row = like or ({}, {})
    for column, attname, field in columns:
        if attname in values:
            value = values[attname]
        elif column in values:
            value = values[column]
        else:
            continue
        if column in like_row:
            other = like_values.get(attname, like_values.get(column, _MISSING))
            if _same_string(other, value):
                row[column] = like_row[column]
                continue
        if value is None and field.primary_key:
            continue  # not known yet (bulk_create without RETURNING): matches any value
        try:
            value = field.get_prep_value(value)
        except (TypeError, ValueError):
            pass
        row[column] = conj_value(value)
    return row


# Types whose equal values give equal canonical strings. Not datetimes or times: equal
# clock times in one zone may be different instants (fold, in a repeated hour), and a
# naive one is made aware in the current zone by its field
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, decimal.Decimal, uuid.UUID, datetime.date})


def _same_string(other, value):
    """Whether value's canonical string is surely other's: for row_of()'s like."""
    kind = type(value)
    return kind in _PLAIN_TYPES and type(other) is kind and other == value


_MISSING = object()


def _rows_of(columns, dicts):
    """row_of() of each dict, given the one before it as like."""
    rows, like = [], None
    for values in dicts:
        row = row_of(columns, values, like)
        rows.append(row)
        like = values, row
    return rows


# The conj keys an invalidation by rows touches, derived by the client, so that its
# script is given every key it touches (docs/design.md, "Declared keys")

# {(prefix, table): schemes}: those this process knows in use, from its own reads'
# registrations and from what invalidate.lua reported. An assumption only: the script
# checks it holds every scheme in use, and reports them where it doesn't.
_known_schemes = {}
KNOWN_TABLES_BOUND = 10000  # (prefix, table) pairs: a prefix per tenant may make many


def known_schemes(prefix, table):
    return _known_schemes.get((prefix, table), ())


def learn_schemes(prefix, table, schemes):
    """Add schemes to those known in use on a table under prefix."""
    known = _known_schemes.get((prefix, table))
    if known is None:
        if len(_known_schemes) >= KNOWN_TABLES_BOUND:
            _known_schemes.clear()
        known = _known_schemes[(prefix, table)] = set()
    known.update(schemes)


def scheme_columns(scheme):
    """A scheme's columns; none for the empty scheme of a query without conditions."""
    return [column for column in scheme.split(',') if column]


def row_conj_keys(prefix, table, schemes, rows):
    """The conjunction keys these rows ({column: canonical string}) fall into under these
    schemes; a row lacking a column of a scheme has none there (row_conj_patterns)."""
    head = conj_prefix(prefix, table)
    keys = {}  # in order, once each
    for columns in _text_schemes_columns(schemes):
        for row in rows:
            if all(column in row for column in columns):
                keys[head + '&'.join('%s=%s' % (column, row[column]) for column in columns)] = None
    return list(keys)


def row_conj_patterns(prefix, table, schemes, rows):
    """A SCAN pattern for each row lacking a column of one of these schemes: it matches any
    value there."""
    head = glob_escape(conj_prefix(prefix, table))
    return [head + '&'.join(glob_escape('%s=%s' % (column, row[column])) if column in row
                            else glob_escape(column) + '=*' for column in columns)
            for columns in _text_schemes_columns(schemes) for row in rows
            if not all(column in row for column in columns)]


def _text_schemes_columns(schemes):
    # a scheme in bytes is not UTF-8: not one of cacheops' columns, so no key of its
    return [scheme_columns(scheme) for scheme in schemes if isinstance(scheme, str)]


def drain_keys(handover, count):
    """The drain sets of an invalidation's first count conj keys, in its handover set's slot."""
    return ['%s:%d' % (handover, n) for n in range(1, count + 1)]
