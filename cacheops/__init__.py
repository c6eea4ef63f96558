"""Automatic or manual queryset caching in Redis with automatic granular invalidation."""
__version__ = '0.1.0'

from .invalidation import (  # noqa: F401
    invalidate_all, invalidate_dict, invalidate_model, invalidate_obj, no_invalidation,
)
