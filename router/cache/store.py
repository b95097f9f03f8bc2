"""The one interface every cache backend implements, and the values that cross it.

Backends only store and search: scoping, the precision guard, TTL policy and metrics live in the
facade (`semantic_cache.py`), so a new backend is a few methods and the conformance test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DIM = 384  # MiniLM sentence-embedding width


# Keys, scopes, namespaces and entry ids are hex digests (router/cache/keys.py); a backend checks them before they
# go into a filter expression.
HEX = re.compile(r"^[0-9a-f]{1,64}$")
# An entry's id: its whole key (a SHA-256), the `cache_entry` a request log line names. Deletion by id is exact: a
# prefix ("0") matched every tenant's entries beginning with it.
ENTRY_ID = re.compile(r"^[0-9a-f]{64}$")


class CacheBackendError(Exception):
    """A backend failed or ran out of time; the facade counts it and treats it as a miss."""


class CacheTimeout(CacheBackendError):
    """A call ran out of its budget: a miss for the caller; whether the backend is hanging or only slow (a saturated
    machine) is the health's to judge (router/cache/health.py)."""


class InvalidCacheArgument(CacheBackendError):
    """A value a backend refuses (a key that cannot go into a filter, an entry over the schema's size)."""


def entry_id(entry: str | None) -> str | None:
    """`entry` checked as a whole entry id (both backends delete by it exactly), or None."""
    if entry is not None and not ENTRY_ID.match(entry):
        raise InvalidCacheArgument(f"an entry id is the 64 hex characters of a log line's cache_entry, not {entry[:80]!r}")
    return entry


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored answer.

    `scope` is a hash of (tenant namespace, selected model, context fingerprint): a search only
    ever sees entries of its own scope. `vector` is None for prompts cached by exact key only.
    `text` is the normalised latest user turn, kept for the precision guard and never logged.
    """

    key: str
    scope: str
    namespace: str
    model: str
    vector: np.ndarray | None
    text: str
    payload: str
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A search result: the entry and its inner-product similarity to the query (1.0 = same)."""

    entry: CacheEntry
    similarity: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    entries: int
    details: dict[str, int | str] = field(default_factory=dict)


class CacheStore(Protocol):
    """Async storage of cache entries. Implementations raise only CacheBackendError."""

    async def get(self, key: str, now: float) -> CacheEntry | None:
        """The unexpired entry stored under an exact key."""
        ...

    async def search(
        self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float, now: float
    ) -> list[Candidate]:
        """Unexpired entries of `scope` with similarity >= min_similarity, best first."""
        ...

    async def upsert(self, entry: CacheEntry) -> None: ...

    async def upsert_many(self, entries: list[CacheEntry]) -> None:
        """Store a batch in one backend call (the write queue's path); later entries win on equal keys."""
        ...

    async def delete(self, namespace: str | None = None, model: str | None = None, entry: str | None = None) -> int:
        """Remove entries matching every given field (at least one); returns how many were matched. `entry` is one
        entry's whole key (ENTRY_ID): the `cache_entry` a request log line names."""
        ...

    async def purge_expired(self, now: float) -> int: ...

    async def stats(self) -> StoreStats: ...

    async def connected(self) -> None:
        """Wait until the backend's connection is made (Milvus: connect, check and load the collection); raises
        CacheBackendError when it failed."""
        ...

    async def close(self) -> None: ...
