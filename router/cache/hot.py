"""Recent exact answers kept in the router process, so a repeated prompt skips the backend round trip.

A retry, a "regenerate" or a popular FAQ asks the same thing again within seconds; the backend search
(a gRPC call to Milvus and its own CPU) is then the whole cost of the hit. This bounded LRU holds the
last answers written or served by exact key. An entry is only ever returned for the same key, scope and
tenant namespace as the request (the key already hashes all three), and for at most `ttl_s` seconds: a
`semantic-router cache invalidate` run elsewhere reaches this process's copies within that time.
"""

from __future__ import annotations

from collections import OrderedDict

from router.cache.store import CacheEntry


class HotAnswers:
    """A size- and time-bounded LRU of exact entries; only the event loop touches it."""

    def __init__(self, size: int, ttl_s: float):
        self.size = size
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[CacheEntry, float]] = OrderedDict()

    def put(self, entry: CacheEntry, now: float) -> None:
        if self.size == 0:
            return
        self._entries[entry.key] = (entry, min(entry.expires_at, now + self.ttl_s))
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, key: str, scope: str, namespace: str, now: float) -> CacheEntry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        entry, until = found
        if now >= until or entry.scope != scope or entry.namespace != namespace:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def clear(self) -> None:
        self._entries.clear()
