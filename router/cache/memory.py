"""In-process cache store: exact numpy search per scope, TTL, and a size bound with LRU/FIFO eviction.

Entries of one scope (tenant x model x context) sit in one contiguous float32 block, so a lookup
is a single matrix-vector product over that scope only. It is the real single-process backend
and also the test double for everything above the store.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import numpy as np

from router.cache.store import DIM, CacheEntry, Candidate, StoreStats


class _Block:
    """The vectors of one scope, rows packed at the front; removal swaps the last row in."""

    def __init__(self) -> None:
        self.vectors = np.empty((8, DIM), dtype=np.float32)
        self.expires = np.empty(8, dtype=np.float64)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}

    def add(self, key: str, vector: np.ndarray, expires_at: float) -> None:
        n = len(self.keys)
        if n == len(self.vectors):
            self.vectors = np.concatenate([self.vectors, np.empty_like(self.vectors)])
            self.expires = np.concatenate([self.expires, np.empty_like(self.expires)])
        self.vectors[n] = vector
        self.expires[n] = expires_at
        self.keys.append(key)
        self.rows[key] = n

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[last]
            self.vectors[row] = self.vectors[last]
            self.expires[row] = self.expires[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys.pop()

    def top(self, vector: np.ndarray, top_k: int, min_similarity: float, now: float) -> list[tuple[str, float]]:
        n = len(self.keys)
        # einsum, not `@`: multi-threaded BLAS gemv measured 8 ms p90 for 2k rows on a busy 2-core box.
        sims = np.einsum("ij,j->i", self.vectors[:n], vector)
        sims[self.expires[:n] <= now] = -np.inf
        k = min(top_k, n)
        best = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        best = best[np.argsort(-sims[best])]
        return [(self.keys[i], float(sims[i])) for i in best if sims[i] >= min_similarity]


class MemoryStore:
    """Implements CacheStore in process memory; nothing survives a restart."""

    def __init__(self, max_entries: int = 10_000, eviction: Literal["lru", "fifo"] = "lru"):
        self._max = max_entries
        self._lru = eviction == "lru"
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._blocks: dict[str, _Block] = {}
        self.evictions = 0

    def _touch(self, key: str) -> None:
        if self._lru:
            self._entries.move_to_end(key)

    async def get(self, key: str, now: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        self._touch(key)
        return entry

    async def search(
        self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float, now: float
    ) -> list[Candidate]:
        block = self._blocks.get(scope)
        if block is None or not block.keys:
            return []
        found = block.top(np.asarray(vector, dtype=np.float32), top_k, min_similarity, now)
        if found:
            self._touch(found[0][0])
        return [Candidate(self._entries[key], sim) for key, sim in found]

    async def upsert(self, entry: CacheEntry) -> None:
        if entry.key in self._entries:
            self._remove(entry.key)
        self._entries[entry.key] = entry
        if entry.vector is not None:
            self._blocks.setdefault(entry.scope, _Block()).add(entry.key, entry.vector, entry.expires_at)
        while len(self._entries) > self._max:
            self._remove(next(iter(self._entries)))
            self.evictions += 1

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry.vector is None:
            return
        block = self._blocks[entry.scope]
        block.remove(key)
        if not block.keys:
            del self._blocks[entry.scope]

    async def delete(self, namespace: str | None = None, model: str | None = None) -> int:
        if namespace is None and model is None:
            raise ValueError("delete needs a namespace or a model")
        doomed = [
            key for key, e in self._entries.items()
            if (namespace is None or e.namespace == namespace) and (model is None or e.model == model)
        ]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    async def purge_expired(self, now: float) -> int:
        doomed = [key for key, e in self._entries.items() if e.expires_at <= now]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    async def stats(self) -> StoreStats:
        return StoreStats(len(self._entries), {"backend": "memory", "scopes": len(self._blocks),
                                               "evictions": self.evictions})

    async def close(self) -> None:
        self._entries.clear()
        self._blocks.clear()
