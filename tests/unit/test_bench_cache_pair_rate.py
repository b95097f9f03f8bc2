"""bench/cache_pair_rate.py must search as the cache does, or its pair-run rate counts lookups the router never makes."""

from __future__ import annotations

import numpy as np

from bench.cache_pair_rate import candidates, searchable
from router.config import CacheConfig


def test_a_prompt_past_max_semantic_chars_neither_searches_nor_is_found() -> None:
    """The cache looks such a prompt up and stores it by exact key only (semantic_cache._usable_embedding): it has no
    candidates and is no one's. The bench searched all of them (13% of its ShareGPT turns are longer)."""
    cfg = CacheConfig()
    long = "how do i sort a list in python " * 20
    texts = ["how do i sort a list in python", long, "how can i sort a python list", long + "?"]
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
    vectors = searchable(texts, np.stack([vector] * len(texts)), cfg)  # all alike: only the length rule differs
    assert len(long) > cfg.max_semantic_chars
    assert [text for text, _ in candidates(texts, vectors, 2, cfg.top_k, 0.7)] == [texts[0]]
    assert candidates(texts, vectors, 3, cfg.top_k, 0.7) == []
