"""Repeated prompts are classified once: a bounded LRU of results in front of the request path's classifier.

Classification is a pure function of the text for one loaded classifier (a reload builds a new runtime and
with it a new, empty memo), so a retry, a "regenerate" or a popular FAQ question skips the encoder pass
(~2-30 ms) and, when the answer is cached, is served in about a millisecond of sidecar time. Keys are
BLAKE2b digests, so the memo holds no prompt text; entries hold what the classification holds (scores, PII
spans as offsets, the embedding), ~2 KB each. Benchmarks and `semantic-router eval` call the classifier
itself, never this memo.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from router.signals import Classification, Classifier

MEMO_ENTRIES = 16384  # ~34 MB: a replica with thousands of active conversations keeps their earlier turns


class MemoizedClassifier:
    """Implements router.signals.Classifier; safe to call from several executor threads."""

    def __init__(self, inner: Classifier, entries: int = MEMO_ENTRIES):
        self.inner = inner
        self._entries = entries
        self._results: OrderedDict[bytes, Classification] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, text: str, scope: str | None = "") -> Classification | None:
        """The remembered result for `text`, or None; cheap enough for the event loop (a hash and a dict).

        `scope` names the caller, so one caller's texts never make another's request faster: a memo shared by every
        tenant told, by latency alone, whether anyone had just sent a given text. A caller without identity is scoped by
        its address (router/cache/keys.py `caller`); None (not even an address: Envoy was not asked for it): nothing
        is remembered.
        """
        return None if scope is None else self._lookup(_key(scope, text))

    def classify(self, text: str, scope: str | None = "") -> Classification:
        if scope is None:
            return self.inner.classify(text)
        key = _key(scope, text)
        found = self._lookup(key)
        if found is not None:
            return found
        result = self.inner.classify(text)  # outside the lock: two threads may both classify a new text
        with self._lock:
            self._results[key] = result
            if len(self._results) > self._entries:
                self._results.popitem(last=False)
        return result

    def _lookup(self, key: bytes) -> Classification | None:
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self._results.move_to_end(key)
            return found


def _key(scope: str, text: str) -> bytes:
    h = hashlib.blake2b(scope.encode("utf-8", "surrogatepass"), digest_size=16)
    h.update(b"\0" + text.encode("utf-8", "surrogatepass"))
    return h.digest()
