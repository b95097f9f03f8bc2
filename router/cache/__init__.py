"""Semantic cache: one facade (`SemanticCache`, `build_cache_request`) over pluggable stores."""

from router.cache.keys import SkipReason
from router.cache.semantic_cache import (
    CACHE_REASONS,
    CacheHit,
    CacheRequest,
    Miss,
    SemanticCache,
    build_cache_request,
    cache_control,
    make_store,
    scores,
)
from router.cache.store import CacheBackendError, CacheStore, InvalidCacheArgument

__all__ = ["CACHE_REASONS", "CacheBackendError", "CacheHit", "CacheRequest", "CacheStore", "InvalidCacheArgument", "Miss", "SemanticCache",
           "SkipReason", "build_cache_request", "cache_control", "make_store", "scores"]
