"""Verification, for the test suite: one fingerprint must always give one SQL statement."""
from django.core.exceptions import EmptyResultSet

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
