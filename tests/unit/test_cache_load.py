"""The cache under load and faults, without Milvus: the write queue, backend health, stores off the loop.

Each test here failed on the code before issue 12: single-row writes, numpy on the event loop, a lock
held across a Milvus connect and taken again on the loop, ValueError escaping the CacheStore protocol.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from router.cache import milvus as milvus_module
from router.cache import semantic_cache
from router.cache.keys import SkipReason
from router.cache.memory import MemoryStore, _Block
from router.cache.milvus import MilvusStore
from router.cache.semantic_cache import SemanticCache
from router.cache.store import CacheBackendError, CacheEntry, CacheTimeout, Candidate
from tests.unit.test_cache_facade import BASE, CFG, SlowStore, completion, make_req


class CountingStore(MemoryStore):
    """Counts backend write calls; optionally slow, like Milvus Lite's ~tens of ms per call."""

    def __init__(self, write_delay: float = 0.0):
        super().__init__(100_000)
        self.write_calls = 0
        self.write_delay = write_delay

    async def upsert_many(self, entries: list[CacheEntry]) -> None:
        self.write_calls += 1
        await asyncio.sleep(self.write_delay)
        await super().upsert_many(entries)


async def test_writes_are_batched_off_the_request_path() -> None:
    store = CountingStore(write_delay=0.05)
    cache = SemanticCache(CFG.semantic_cache, store)
    for i in range(300):
        cache.store(make_req(f"question {i}?", None), completion())
    await cache.flush()
    assert cache.counters["write"] == 300
    assert store.write_calls <= 300 // CFG.semantic_cache.write_batch_size + 2  # not one call per entry
    await cache.close()


async def test_partial_batches_wait_for_the_write_interval_so_writes_coalesce() -> None:
    cfg = CFG.semantic_cache.model_copy(update={"write_interval_ms": 200})
    store = CountingStore()
    cache = SemanticCache(cfg, store)
    started = time.monotonic()
    for i in range(20):  # a trickle of writes, one every 10 ms: one call per interval, not one per write
        cache.store(make_req(f"trickle {i}?", None), completion())
        await asyncio.sleep(0.01)
    await cache.flush()
    assert cache.counters["write"] == 20
    assert store.write_calls <= 2 + (time.monotonic() - started) / 0.2
    full = SemanticCache(cfg.model_copy(update={"write_batch_size": 4}), CountingStore())
    for i in range(8):  # full batches never wait
        full.store(make_req(f"burst {i}?", None), completion())
    t0 = time.monotonic()
    await full.flush()
    assert full.counters["write"] == 8 and time.monotonic() - t0 < 0.15
    await cache.close()
    await full.close()


async def test_a_full_write_queue_drops_and_counts_instead_of_piling_up() -> None:
    cfg = CFG.semantic_cache.model_copy(update={"write_queue_size": 10})
    cache = SemanticCache(cfg, CountingStore(write_delay=0.2))
    for i in range(50):
        cache.store(make_req(f"q {i}?", None), completion())
    await cache.flush()
    stored, dropped = cache.counters["write"], cache.counters["dropped:queue_full"]
    assert stored + dropped == 50 and dropped >= 30
    await cache.close()


async def test_lookups_do_not_wait_for_writes() -> None:
    cache = SemanticCache(CFG.semantic_cache, CountingStore(write_delay=1.0))
    for i in range(20):
        cache.store(make_req(f"q {i}?", BASE), completion())
    await asyncio.sleep(0.01)  # the writer is now inside its 1 s backend call
    start = time.perf_counter()
    assert await cache.lookup(make_req("other?", BASE)) is None
    assert time.perf_counter() - start < 0.5  # far from the write's 1 s: a loaded machine cannot fail it
    assert cache.counters["miss:no_candidate"] == 1  # answered, not timed out
    await cache.close()


async def test_backend_health_follows_traffic_and_recovers() -> None:
    cache = SemanticCache(CFG.semantic_cache, MemoryStore())
    streak = cache.health.streak
    await cache.lookup(make_req("Q?", BASE))  # it answered once: readiness reads traffic, no probe of its own
    for _ in range(streak):
        cache._error(CacheBackendError("connection refused"), "lookup")
    up, detail = await cache.check()
    assert not up and "connection refused" in detail
    for _ in range(streak - 1):  # successful round trips; one short of the streak: still down (no flapping)
        assert await cache.lookup(make_req("Q?", BASE)) is None
    assert not cache.health.up
    assert (await cache.check())[0]  # readiness confirms the recovery with its own lookup, not the next request's
    await cache.close()


class HangingStore(MemoryStore):
    """A Milvus that accepts calls and answers none (SIGSTOPped) until `hang` is cleared; counts the searches."""

    def __init__(self) -> None:
        super().__init__(100)
        self.hang = True
        self.searches = 0

    async def search(self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float,
                     now: float) -> list[Candidate]:
        self.searches += 1
        if self.hang:
            await asyncio.sleep(3600)
        return await super().search(scope, vector, top_k, min_similarity, now)


async def test_a_backend_marked_down_is_skipped_but_probed_until_it_answers() -> None:
    """Every lookup paid the whole budget to a hanging backend although health knew it was down."""
    store = HangingStore()
    cache = SemanticCache(CFG.semantic_cache, store)
    for _ in range(cache.health.streak):  # each waits out its budget: that is how the hang is found
        assert await cache.lookup(make_req("Q?", BASE)) is None
    assert not cache.health.up and store.searches == cache.health.streak
    results = [await cache.lookup(make_req("Q?", BASE)) for _ in range(20)]
    assert store.searches <= cache.health.streak + 1  # at most one probe went out
    assert results.count(SkipReason.BACKEND_DOWN) >= 19
    assert cache.counters["miss:backend_down"] == results.count(SkipReason.BACKEND_DOWN)
    cache.store(make_req("Q?", BASE), completion())  # dropped and counted, never queued behind the hang
    await cache.flush()
    assert cache.counters["dropped:backend_down"] == 1 and len(cache.writes) == 0
    assert (await cache.lookup(make_req("Q?", BASE))).exact  # type: ignore[union-attr]  # this process's memory
    store.hang = False  # the backend answers again: a probe sees it, then traffic flows until the streak is met
    while await cache.lookup(make_req("Probe?", BASE)) is SkipReason.BACKEND_DOWN:
        await asyncio.sleep(0.05)
    for _ in range(cache.health.streak - 1):
        assert await cache.lookup(make_req("Other?", BASE)) is None
    assert cache.health.up
    cache.store(make_req("Stored again?", BASE), completion())
    await cache.flush()
    assert cache.counters["write"] == 1
    await cache.close()


async def test_readiness_asks_a_backend_that_never_answered_instead_of_reporting_it_up() -> None:
    """A Milvus unreachable from the start was "up" ("not asked yet", then "failing (1 in a row)") for the ~50 s
    its readiness probes took to reach the streak: `ready_without_cache: false` let traffic in meanwhile."""
    dead = SemanticCache(CFG.semantic_cache, SlowStore(fail=True))
    up, detail = await dead.check()
    assert not up and "down" in detail
    for _ in range(dead.health.streak - 1):
        await dead.check()
    assert not dead.health.up  # asked at every check while it never answered, not once per idle spell
    healthy = SemanticCache(CFG.semantic_cache, MemoryStore())
    assert await healthy.check() == (True, "backend answering")
    await dead.close()
    await healthy.close()


class ConnectingStore(MemoryStore):
    """A Milvus still connecting: calls wait for the connection within their budget and time out, until `link`."""

    def __init__(self) -> None:
        super().__init__(100)
        self.link = asyncio.Event()

    async def connected(self) -> None:
        await self.link.wait()

    async def get(self, key: str, now: float) -> CacheEntry | None:
        if not self.link.is_set():
            raise CacheTimeout("timeout after 50 ms")
        return await super().get(key, now)


async def test_a_starting_cache_is_reported_once_connected_not_degraded_by_its_first_probe() -> None:
    """Trial 14: a restarted worker's first probe waited for the connection within its budget, and /readyz said
    "degraded: serving without cache: failing (1 in a row): probe: timeout after 50 ms" though the Lite child was
    fine. The first check waits for the connection (the port opens after the same wait)."""
    store = ConnectingStore()
    cache = SemanticCache(CFG.semantic_cache, store)
    check = asyncio.create_task(cache.check())
    await asyncio.sleep(0.05)
    assert not check.done()  # nothing reported while connecting: readiness says "not reported yet"
    store.link.set()
    assert await check == (True, "backend answering")
    await cache.close()


async def test_a_backend_that_does_not_connect_in_time_is_left_to_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic_cache, "WARM_UP_S", 0.01)
    cache = SemanticCache(CFG.semantic_cache, ConnectingStore())
    up, detail = await cache.check()
    assert not up and detail == ("backend not answered since start: 1 failed call in a row, breaker closed (opens at 5), "
                                  "lookups still try it: probe: timeout after 50 ms")
    await cache.close()


# A gap a blocking call causes (0.5 s or more here) and a loaded 2-core machine alone does not (it can delay a
# tick past 0.1 s: unit runs at load 11-13 failed on 0.12 s).
BLOCKED_S = 0.3


class Heartbeat:
    """Measures the longest gap between ticks of a task on the loop: a blocked loop shows here."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    async def during(self, work: Callable[[], Awaitable[Any]]) -> Any:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.01)
        try:
            return await work()
        finally:
            self._task.cancel()


async def test_memory_store_search_runs_off_the_loop_so_its_timeout_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    original = _Block.top

    def slow_top(self: _Block, *args: Any) -> list[tuple[str, float]]:
        time.sleep(0.5)  # a huge scope on a busy machine
        return original(self, *args)

    monkeypatch.setattr(_Block, "top", slow_top)
    store = MemoryStore()
    req = make_req("Q?", BASE)
    await store.upsert(CacheEntry("k" * 64, req.scope, req.namespace, req.model, BASE, "t", "{}", 0.0, 1e12))
    cache = SemanticCache(CFG.semantic_cache, store)
    beat = Heartbeat()
    start = time.perf_counter()
    assert await beat.during(lambda: cache.lookup(req)) is None
    assert time.perf_counter() - start < 0.4  # the 50 ms budget held: not the 0.5 s search
    assert beat.max_gap < BLOCKED_S and cache.counters["error:lookup"] == 1
    await cache.close()


class QuickClient:
    """A connected MilvusClient that answers every get at once (with nothing found)."""

    def get(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


async def test_an_answer_in_time_is_used_when_a_busy_loop_notices_it_late() -> None:
    """The lookup budget is the backend's: a loop stalled past the backstop does not turn an answer that
    arrived in time into a timeout (that would be a miss served upstream for no cache reason)."""
    store = MilvusStore("http://127.0.0.1:1", "c", timeout_s=0.05)
    store._client = QuickClient()  # type: ignore[assignment]
    lookup = asyncio.create_task(store.get("a" * 64, time.time()))
    await asyncio.sleep(0)  # the call is on its read thread now
    time.sleep(0.15)  # noqa: ASYNC251 - the loop busy past the 100 ms backstop; the answer came at once
    assert await lookup is None and store.errors == 0

    class SlowClient(QuickClient):
        def get(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
            time.sleep(0.2)  # ignores its deadline: the backstop still ends the wait
            return []

    store._client = SlowClient()  # type: ignore[assignment]
    with pytest.raises(CacheBackendError):
        await store.get("a" * 64, time.time())
    await store.close()


class HangingClient:
    """A MilvusClient whose connect hangs, like a server that accepts and never answers."""

    release = threading.Event()

    def __init__(self, **_: Any) -> None:
        HangingClient.release.wait(5)
        raise OSError("connect timed out")


async def test_a_hanging_milvus_connect_never_blocks_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    HangingClient.release.clear()
    monkeypatch.setattr(milvus_module, "MilvusClient", HangingClient)
    store = MilvusStore("http://127.0.0.1:1", "c", timeout_s=0.05)
    beat = Heartbeat()

    async def calls() -> None:
        for _ in range(3):
            with pytest.raises(CacheBackendError):
                await store.search("a" * 32, BASE, 3, 0.5, time.time())
        await store.close()  # the old store took the connect's lock here, on the loop

    start = time.perf_counter()
    await beat.during(calls)
    HangingClient.release.set()
    assert time.perf_counter() - start < 0.5
    assert beat.max_gap < BLOCKED_S, f"event loop blocked for {beat.max_gap:.2f} s"


async def test_a_connect_that_fails_after_its_callers_gave_up_logs_no_traceback(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Lookups wait for a connect within their own budget and give up; when the connect then failed, each one's
    wait was logged by asyncio at ERROR with a traceback ("Future exception was never retrieved"). The failure is
    already counted, once per lookup."""
    HangingClient.release.clear()
    monkeypatch.setattr(milvus_module, "MilvusClient", HangingClient)
    store = MilvusStore("http://127.0.0.1:1", "c", timeout_s=0.05)
    for _ in range(3):
        with pytest.raises(CacheBackendError):
            await store.get("a" * 64, time.time())
    connect = store._connecting
    assert connect is not None
    HangingClient.release.set()
    with pytest.raises(OSError):
        await asyncio.wrap_future(connect)  # the lookups' waits were told first: they waited on it before
    del connect  # its callbacks hold the waits
    gc.collect()  # a future nobody read reports itself when it is collected
    await store.close()
    assert store.errors == 3
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


@pytest.mark.parametrize("call", [
    lambda s: s.delete(),
    lambda s: s.connected(),  # a starting worker's wait for the connection
    lambda s: s.get("not hex!", 0.0),
    lambda s: s.upsert(CacheEntry("k", "s", "n", "m", None, "t" * 9000, "{}", 0.0, 1.0)),
])
async def test_milvus_store_raises_only_cache_backend_errors(call: Callable[[MilvusStore], Awaitable[Any]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_module, "MilvusClient", HangingClient)
    HangingClient.release.set()
    store = MilvusStore("http://127.0.0.1:1", "c", timeout_s=0.05)
    with pytest.raises(CacheBackendError):
        await call(store)
    await store.close()


async def test_memory_store_raises_only_cache_backend_errors() -> None:
    store = MemoryStore()
    with pytest.raises(CacheBackendError):
        await store.delete()
    await store.close()


def test_unit_vector_fixture_is_normalised() -> None:
    assert abs(float(np.linalg.norm(BASE)) - 1.0) < 1e-5
