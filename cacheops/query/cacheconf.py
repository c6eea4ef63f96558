"""A queryset's _cacheconf: what .cache(), .nocache() and .inplace() set on it."""
from typing import NamedTuple


class CacheConf(NamedTuple):
    """What .cache()/.nocache()/.inplace() set on a queryset; None means 'from the profile'."""
    ops: frozenset = None
    timeout: int = None
    lock: bool = None
    op: str = None          # 'get' when fetching for get()/first()/last()
    inplace: bool = False


NO_CONF = CacheConf()
NO_CACHE = CacheConf(ops=frozenset())
