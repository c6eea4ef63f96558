"""Automatic or manual queryset caching in Redis with automatic granular invalidation."""
__version__ = '0.1.0'

from .invalidation import (  # noqa: F401
    invalidate_all, invalidate_dict, invalidate_model, invalidate_obj, no_invalidation,
)
from .reaper import reap_conjs  # noqa: F401
from .stats import stats  # noqa: F401 - hides the module cacheops.stats on the package
from .decorators import cached_as, cached_view_as  # noqa: F401
from .simple import (  # noqa: F401
    CacheMiss, FileCache, RedisCache, cache, cached, cached_view, file_cache, invalidate_fragment,
)
from .templatetags.cacheops import CacheopsLibrary  # noqa: F401
from . import compat  # noqa: F401 - old import paths' names, before any other import of them

__all__ = [
    'invalidate_all', 'invalidate_dict', 'invalidate_model', 'invalidate_obj', 'no_invalidation',
    'reap_conjs', 'stats', 'cached_as', 'cached_view_as',
    'CacheMiss', 'FileCache', 'RedisCache', 'cache', 'cached', 'cached_view', 'file_cache',
    'invalidate_fragment', 'CacheopsLibrary',
]
