"""The Redis key layout: prefixes, conjunction keys, scheme sets.

On one Redis (or Sentinel): <prefix>conj:<table>:<f>=<v>&... and <prefix>schemes:<table>.
On a cluster the table is a hash tag, <prefix>conj:{<table>}:..., so that one table's
invalidation runs on one shard.
"""
from django.core.exceptions import ImproperlyConfigured

from .conf import derived, prefix_func
from .redis import is_cluster
from .utils import conj_value


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


def scheme(conj):
    return ','.join(sorted(conj))


def signal_key(cache_key):
    """The list a dog-pile lock's waiters block on."""
    return cache_key + ':signal'


def lock_key(cache_key):
    """The dog-pile lock of a key in insideout mode (conj-set mode locks with its pending marker)."""
    return cache_key + ':lock'
