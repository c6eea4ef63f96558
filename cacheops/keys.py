"""The Redis key layout: prefixes, conjunction keys, scheme sets, epochs.

On one Redis (or Sentinel): <prefix>conj:<table>:<f>=<v>&..., <prefix>schemes:<table>
and, in insideout mode, <prefix>epoch:<table>. On a cluster the table is a hash tag,
<prefix>conj:{<table>}:..., so that one table's invalidation runs on one shard.
"""
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
