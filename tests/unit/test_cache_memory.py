"""MemoryStore past `exact_below`: the sketch shortlist must answer exactly like the full scan it replaces.

Each case runs a store that switches early (`exact_below` small, so test scopes cross it) beside one
that always scans, and compares answers while entries are added, evicted, expired, replaced and deleted.
"""

from __future__ import annotations

import numpy as np
import pytest

from router.cache.memory import SHORTLIST, MemoryStore
from router.cache.store import DIM, CacheEntry

SWITCH = 300  # rows above which the early store searches by shortlist; > SHORTLIST so both paths matter
NOW = 1_000_000.0
rng = np.random.default_rng(5)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def near(v: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at exactly `cos` to the unit vector `v`."""
    ortho = rng.standard_normal(DIM)
    ortho = unit(ortho - ortho @ v * v)
    return unit(cos * v + np.sqrt(1 - cos**2) * ortho)


def clustered(n: int, clusters: int = 25) -> np.ndarray:
    """Rows around a few centres (cos 0.85 to theirs, ~0.72 to siblings): a query has several good answers."""
    centres = unit(rng.standard_normal((clusters, DIM)))
    return np.stack([near(centres[c], 0.85) for c in rng.integers(clusters, size=n)])


def entry(i: int, vector: np.ndarray | None, ttl: float = 3600, namespace: str = "n",
          model: str = "m", scope: str = "s") -> CacheEntry:
    return CacheEntry(f"{i:064x}", scope, namespace, model, vector, "q", "{}", NOW, NOW + ttl)


class Pair:
    """The same writes to a store that switches at SWITCH rows and to one that always scans exactly."""

    def __init__(self, max_entries: int = 100_000, eviction: str = "lru"):
        self.early = MemoryStore(max_entries, eviction, exact_below=SWITCH)  # type: ignore[arg-type]
        self.exact = MemoryStore(max_entries, eviction, exact_below=10**9)  # type: ignore[arg-type]

    async def upsert(self, e: CacheEntry) -> None:
        await self.early.upsert(e)
        await self.exact.upsert(e)

    async def search(self, q: np.ndarray, top_k: int = 3, min_similarity: float = 0.6,
                     now: float = NOW) -> list[tuple[str, float]]:
        """The early store's answer, after checking the exact store gives the same."""
        got, want = [[(c.entry.key, c.similarity) for c in await s.search("s", q, top_k, min_similarity, now)]
                     for s in (self.early, self.exact)]
        assert [k for k, _ in got] == [k for k, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
        return got


async def test_a_scope_crossing_the_threshold_finds_the_same_best_first_answers() -> None:
    vectors = clustered(4 * SWITCH)
    pair = Pair()
    for i, v in enumerate(vectors):
        await pair.upsert(entry(i, v))
        if i + 1 in (SWITCH - 1, SWITCH, SWITCH + 1, 4 * SWITCH):
            for target in rng.integers(i + 1, size=20):
                found = await pair.search(near(vectors[target], 0.95))
                assert found[0][0] == f"{target:064x}" and len(found) == 3  # itself, then two siblings
                assert found[0][1] >= found[1][1] >= found[2][1] >= 0.6


async def test_expired_rows_are_never_returned_even_when_nearest() -> None:
    base = unit(rng.standard_normal(DIM))
    pair = Pair()
    for i in range(2 * SWITCH):  # nearer than the live answer, and more of them than the shortlist holds
        await pair.upsert(entry(i, near(base, 0.99), ttl=-1))
    for i, v in enumerate(unit(rng.standard_normal((2 * SWITCH, DIM))), start=10_000):
        await pair.upsert(entry(i, v))
    await pair.upsert(entry(99_999, near(base, 0.9)))
    assert 4 * SWITCH > SHORTLIST
    only_live = [(f"{99_999:064x}", pytest.approx(0.9, abs=1e-5))]
    assert await pair.search(base, top_k=3, min_similarity=0.5) == only_live
    assert await pair.search(base, now=NOW + 7200) == []  # everything expired by then


async def test_eviction_replacement_delete_and_purge_past_the_threshold() -> None:
    vectors = clustered(3 * SWITCH)
    pair = Pair(max_entries=2 * SWITCH)
    for i, v in enumerate(vectors):  # the first SWITCH entries are evicted (LRU, never read)
        await pair.upsert(entry(i, v, namespace=f"t{i % 2}", ttl=-1 if i % 5 == 0 else 3600))
    assert (await pair.early.stats()).entries == 2 * SWITCH and pair.early.evictions == SWITCH
    for target in range(0, 3 * SWITCH, 7):
        found = await pair.search(near(vectors[target], 0.95))
        present = target >= SWITCH and target % 5 != 0
        assert bool(found and found[0][0] == f"{target:064x}") is present

    moved = SWITCH + 1  # upsert of an existing key with a new vector: found only at the new place
    fresh = unit(rng.standard_normal(DIM))
    await pair.upsert(entry(moved, fresh))
    assert (await pair.search(near(vectors[moved], 0.95)))[0][0] != f"{moved:064x}"
    assert (await pair.search(near(fresh, 0.95)))[0][0] == f"{moved:064x}"

    for store in (pair.early, pair.exact):
        assert await store.delete(namespace="t0") == SWITCH
        assert await store.purge_expired(NOW) == SWITCH // 5
    assert (await pair.early.stats()).entries == SWITCH - SWITCH // 5  # back under the threshold: exact again
    for target in range(SWITCH, 3 * SWITCH, 3):
        found = await pair.search(near(fresh if target == moved else vectors[target], 0.95))
        alive = target % 2 == 1 and target % 5 != 0
        assert bool(found and found[0][0] == f"{target:064x}") is alive
    assert await pair.early.delete(model="m") == SWITCH - SWITCH // 5
    assert await pair.early.search("s", fresh, 3, 0.0, NOW) == []
    assert (await pair.early.stats()).details["scopes"] == 0


async def test_many_identical_vectors_still_give_top_k() -> None:
    base = unit(rng.standard_normal(DIM))
    pair = Pair()
    for i in range(2 * SWITCH):
        await pair.upsert(entry(i, base))
    await pair.upsert(entry(99_999, near(base, 0.95)))
    found = await pair.early.search("s", base, 5, 0.9, NOW)
    assert len(found) == 5 and all(c.similarity == pytest.approx(1.0, abs=1e-5) for c in found)
    assert len(await pair.early.search("s", near(base, 0.95), 32, 0.9, NOW)) == 32


@pytest.mark.parametrize("cos", [0.97, 0.9, 0.8])
async def test_top1_recall_on_near_duplicates(cos: float) -> None:
    """The shortlist is 128 of 5,000 random rows: its top-1 must still be the exact top-1."""
    vectors = unit(rng.standard_normal((5_000, DIM)))
    store = MemoryStore(10_000, exact_below=0)
    for i, v in enumerate(vectors):
        await store.upsert(entry(i, v))
    targets = rng.integers(len(vectors), size=300)
    queries = np.stack([near(vectors[t], cos) for t in targets])
    exact = np.argmax(queries @ vectors.T, axis=1)
    hits = [(await store.search("s", q, 1, -1.0, NOW))[0].entry.key == f"{e:064x}"
            for q, e in zip(queries, exact, strict=True)]
    assert np.mean(hits) >= 0.99
