"""SemanticCache over the real in-memory store: hits, misses, verifier, encoder scoping, TTL, writes, faults."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from router.cache import CacheBackendError, CacheRequest, SemanticCache, answer_pii, build_cache_request
from router.cache.memory import MemoryStore
from router.cache.semantic_cache import ANSWER_UNSCREENED, CACHE_REASONS, Miss, completion_problem
from router.cache.store import CacheEntry, Candidate, StoreStats
from tests.unit.test_cache_keys import CFG, KEY_A, body

rng = np.random.default_rng(0)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


BASE = unit(rng.standard_normal(384))


def near(sim: float) -> np.ndarray:
    """A unit vector with cosine `sim` to BASE."""
    ortho = rng.standard_normal(384)
    ortho = unit(ortho - ortho @ BASE * BASE)
    return unit(sim * BASE + np.sqrt(1 - sim**2) * ortho)


def completion(text: str = "Click 'Forgot password'.", finish: str | None = "stop") -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "m1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}


def make_req(text: str, vec: np.ndarray | None, headers: dict[str, str] = KEY_A, category: str | None = None,
             encoder: str = "", **extra: Any) -> CacheRequest:
    out = build_cache_request(body(text, **extra), headers, "m1", category, vec, CFG, encoder=encoder)
    assert isinstance(out, CacheRequest)
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cache(clock: Clock) -> Any:
    c = SemanticCache(CFG.semantic_cache, MemoryStore(100), clock=clock)
    yield c
    await c.close()


async def put(cache: SemanticCache, req: CacheRequest, answer: dict[str, Any] | None = None) -> None:
    cache.store(req, answer or completion())
    await cache.flush()


async def test_exact_then_semantic_hit_and_threshold(cache: SemanticCache) -> None:
    await put(cache, make_req("How do I reset my password?", BASE))
    exact = await cache.lookup(make_req("How do I reset my password?", BASE))
    assert exact is not None and exact.exact and exact.completion["choices"][0]["message"]["content"]
    para = await cache.lookup(make_req("What are the steps to reset my password?", near(0.95)))
    assert para is not None and not para.exact and 0.94 < para.similarity < 0.96
    below_floor = cache.point.floor - 0.1  # the search returns no candidate at all
    assert await cache.lookup(make_req("What are the steps to reset my password?", near(below_floor))) is None
    assert cache.counters["hit:exact"] == 1 and cache.counters["hit:semantic"] == 1 and cache.counters["miss:no_candidate"] == 1


async def test_other_tenant_and_other_system_prompt_miss(cache: SemanticCache) -> None:
    await put(cache, make_req("How do I reset my password?", BASE))
    assert await cache.lookup(make_req("How do I reset my password?", BASE, {"authorization": "Bearer b"})) is None
    other_ctx = build_cache_request(
        {"messages": [{"role": "system", "content": "Talk like a pirate."},
                      {"role": "user", "content": "How do I reset my password?"}]}, KEY_A, "m1", None, BASE, CFG)
    assert isinstance(other_ctx, CacheRequest)
    assert await cache.lookup(other_ctx) is None


async def test_verifier_rejects_a_close_vector_with_another_number(cache: SemanticCache) -> None:
    await put(cache, make_req("What is 17 times 3?", BASE))
    assert await cache.lookup(make_req("What is 17 times 4?", near(0.99))) is None
    assert cache.counters["miss:vetoed"] == 1


async def test_a_miss_says_which_bar_the_nearest_candidate_missed(cache: SemanticCache) -> None:
    """Trial 18: an operator whose shop questions hit 1 time in 4 could not tell from the request line or /metrics
    whether no entry was near, a veto held or the verifier's score fell short, so not which setting to change."""
    await put(cache, make_req("What is 17 times 3?", BASE))
    assert await cache.verdict(make_req("What is 17 times 4?", near(0.99))) == Miss("vetoed", pytest.approx(0.99, abs=0.01), 0.0)
    far = await cache.verdict(make_req("Which planet is the largest?", near(cache.point.floor + 0.02)))
    assert isinstance(far, Miss) and far.reason == "pair_reject" and far.pair_score is not None and far.pair_score < 0.5
    assert far.similarity == pytest.approx(cache.point.floor + 0.02, abs=0.01) and far.verifier_score is not None
    assert await cache.verdict(make_req("What is 19 times 3?", near(cache.point.floor - 0.1))) == Miss("no_candidate")
    assert [cache.counters[f"miss:{r}"] for r in ("vetoed", "pair_reject", "no_candidate")] == [1, 1, 1]


async def test_the_verifier_serves_the_paraphrase_not_the_nearest_vector(cache: SemanticCache) -> None:
    """Top-1 by cosine is a hard negative; the answer served is the one stored for the paraphrase."""
    await put(cache, make_req("How do I turn off dark mode?", near(0.99)), completion("Settings > Off"))
    await put(cache, make_req("How can I turn on dark mode?", near(0.95)), completion("Settings > On"))
    hit = await cache.lookup(make_req("How do I turn on dark mode?", BASE))
    assert hit is not None and hit.completion["choices"][0]["message"]["content"] == "Settings > On"


async def test_a_category_can_demand_a_higher_verifier_score(cache: SemanticCache) -> None:
    """`news` sets verifier_threshold 1.0: only exact repeats are served there."""
    await put(cache, make_req("How do I reset my password?", BASE, category="news"))
    assert await cache.lookup(make_req("How can I reset my password?", near(0.995), category="news")) is None
    assert await cache.lookup(make_req("How do I reset my password?", BASE, category="news")) is not None


async def test_entries_of_another_encoder_are_never_candidates(cache: SemanticCache) -> None:
    """Same tenant, text and vector, but embedded by another model: not even the exact repeat is served."""
    await put(cache, make_req("How do I reset my password?", BASE, encoder="enc-old"))
    assert await cache.lookup(make_req("How do I reset my password?", BASE, encoder="enc-new")) is None
    assert await cache.lookup(make_req("How can I reset my password?", near(0.97), encoder="enc-new")) is None
    assert await cache.lookup(make_req("How do I reset my password?", BASE, encoder="enc-old")) is not None


async def test_no_cache_reads_nothing_but_writes(cache: SemanticCache) -> None:
    no_cache = build_cache_request(body("Q?"), KEY_A, "m1", None, BASE, CFG, control={"no-cache"})
    assert isinstance(no_cache, CacheRequest)
    await put(cache, no_cache)
    assert await cache.lookup(no_cache) is None
    assert await cache.lookup(make_req("Q?", BASE)) is not None


async def test_ttl_expiry_and_purge(cache: SemanticCache, clock: Clock) -> None:
    await put(cache, make_req("Q?", BASE))
    clock.now += CFG.semantic_cache.ttl_seconds + 1
    assert await cache.lookup(make_req("Q?", BASE)) is None
    assert await cache.purge_expired() == 1
    assert (await cache.stats())["entries"] == 0


async def test_long_prompt_hits_only_exactly(cache: SemanticCache) -> None:
    long_a = "Review this contract clause. " * 30 + "Is clause A valid?"
    long_b = "Review this contract clause. " * 30 + "Is clause B valid?"
    await put(cache, make_req(long_a, BASE))
    assert await cache.lookup(make_req(long_b, BASE)) is None
    assert await cache.lookup(make_req(long_a, BASE)) is not None


async def test_a_prompt_the_encoder_does_not_read_hits_only_exactly(cache: SemanticCache) -> None:
    """trial15 finding 1: "main sights of Cairo?" was served the answer to "best way to learn English?" (two Arabic
    questions of one frame embed close: cosine 0.78, the pair model 0.94). Unread text gets no semantic candidate."""
    english, cairo = "ما هي أفضل طريقة لتعلم اللغة الإنجليزية بسرعة؟", "ما هي أهم المعالم السياحية في القاهرة؟"

    def unread(text: str, vec: np.ndarray) -> CacheRequest:
        out = build_cache_request(body(text), KEY_A, "m1", None, vec, CFG, encoder_reads=False)
        assert isinstance(out, CacheRequest) and out.unread and out.embedding is None
        return out

    await put(cache, unread(english, BASE))
    assert await cache.lookup(unread(cairo, near(0.99))) is None
    assert await cache.lookup(make_req(cairo, near(0.99))) is None  # nor is the stored entry a candidate to others
    repeat = await cache.lookup(unread(english, BASE))
    assert repeat is not None and repeat.exact
    assert cache.counters["miss:unread"] == 1 and cache.counters["hit:unread"] == 1
    assert "unread" in CACHE_REASONS


@pytest.mark.parametrize(("answer", "problem"), [
    (completion(finish=None), "unfinished"),
    ({"error": {"message": "boom"}}, "not_completion"),
    ({**completion(), "choices": []}, "no_choices"),
    ({"object": "chat.completion.chunk", "choices": []}, "not_completion"),
])
async def test_only_finished_completions_are_written(cache: SemanticCache, answer: dict[str, Any],
                                                     problem: str) -> None:
    assert completion_problem(answer) == problem
    await put(cache, make_req("Q?", BASE), answer)
    assert await cache.lookup(make_req("Q?", BASE)) is None
    assert cache.counters[f"skipped_write:{problem}"] == 1


async def test_a_request_for_logprobs_is_never_served_an_entry_without_them(cache: SemanticCache) -> None:
    """An entry without logprobs (a stream stored before they were kept, an upstream that ignored the field) is a
    miss for a request that asks for them; the miss's answer, stored under the same key, serves the next repeat."""
    text = "How do I reset my password?"
    await put(cache, make_req(text, BASE, logprobs=True))  # choices without logprobs
    assert await cache.lookup(make_req(text, BASE, logprobs=True)) is None
    assert await cache.lookup(make_req("What are the steps to reset my password?", near(0.95), logprobs=True)) is None
    answer = completion()
    answer["choices"][0]["logprobs"] = {"content": [{"token": "Click", "logprob": -0.1}], "refusal": None}
    await put(cache, make_req(text, BASE, logprobs=True), answer)
    hit = await cache.lookup(make_req(text, BASE, logprobs=True))
    assert hit is not None and hit.completion["choices"][0]["logprobs"] == answer["choices"][0]["logprobs"]
    await put(cache, make_req(text, BASE))
    assert await cache.lookup(make_req(text, BASE)) is not None  # not asked: served as before


def _answer_saying(where: str, text: str) -> dict[str, Any]:
    """A finished answer with `text` in one of the message's fields a replay returns."""
    answer = completion("Here is what I found.")
    message = answer["choices"][0]["message"]
    if where == "tool arguments":
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": "lookup", "arguments": json.dumps({"note": text})}}]
        answer["choices"][0]["finish_reason"] = "tool_calls"
    else:
        message[where] = text
    return answer


@pytest.mark.parametrize("where", ["content", "reasoning_content", "refusal", "tool arguments"])
async def test_an_answer_holding_pii_is_neither_stored_nor_served(cache: SemanticCache, where: str) -> None:
    """Only the request was screened: an answer naming a customer's SSN, read from the model's documents, was stored
    and replayed to the tenant's other callers."""
    leak = "The customer was Jane Roe, SSN 536-22-1234, card 4111 1111 1111 1111."
    await put(cache, make_req("Which customer called about a refund?", BASE), _answer_saying(where, leak))
    assert await cache.lookup(make_req("Which customer called about a refund?", BASE)) is None
    assert cache.counters["skipped_write:answer_pii"] == 1 and cache.counters["write"] == 0
    clean = _answer_saying(where, "Three customers called about refunds this week; see ticket 42.")
    await put(cache, make_req("Which customer called about a refund?", BASE), clean)
    assert await cache.lookup(make_req("Which customer called about a refund?", BASE)) is not None


async def test_an_answer_holding_a_full_width_email_is_not_stored(cache: SemanticCache) -> None:
    """Trial 15: the request's screen folds full-width forms (NFKC) before the validators, the answer's did not, so a
    full-width e-mail a model wrote was stored and replayed to the tenant's other callers."""
    leak = "请联系 ｚｈａｎｇｗｅｉ＠ｑｑ．ｃｏｍ。"
    await put(cache, make_req("How do I reach the account owner?", BASE), completion(leak))
    assert await cache.lookup(make_req("How do I reach the account owner?", BASE)) is None
    assert cache.counters["skipped_write:answer_pii"] == 1 and cache.counters["write"] == 0


async def test_a_failing_answer_screen_stores_nothing_and_the_next_answers_still_are(
        cache: SemanticCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the answer's PII screen lost the batch and made `flush`/`close` raise it: the answer is now not
    stored (fail closed), the error counted and logged, and later answers are screened again."""
    real = answer_pii.pii_types
    monkeypatch.setattr(answer_pii, "pii_types", lambda c: 1 / 0)
    await put(cache, make_req("How do I boil an egg?", BASE), completion("Ten minutes."))
    assert cache.counters["skipped_write:answer_unscreened"] == 1
    assert ANSWER_UNSCREENED in CACHE_REASONS  # its own series on /metrics (undeclared, it was counted as `other`)
    assert await cache.lookup(make_req("How do I boil an egg?", BASE)) is None
    monkeypatch.setattr(answer_pii, "pii_types", real)
    await put(cache, make_req("How do I boil an egg?", BASE), completion("Ten minutes."))
    assert await cache.lookup(make_req("How do I boil an egg?", BASE)) is not None


async def test_oversized_answer_is_skipped(cache: SemanticCache) -> None:
    await put(cache, make_req("Q?", BASE), completion("x" * 70_000))
    assert cache.counters["skipped_write:too_large"] == 1


class SlowStore(MemoryStore):
    """The real memory store behind an artificial delay or failure: a Milvus that hangs or breaks."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        super().__init__(100)
        self.delay, self.fail = delay, fail

    async def _slow(self) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise CacheBackendError("down")

    async def get(self, key: str, now: float) -> CacheEntry | None:
        await self._slow()
        return await super().get(key, now)

    async def search(self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float,
                     now: float) -> list[Candidate]:
        await self._slow()
        return await super().search(scope, vector, top_k, min_similarity, now)

    async def upsert_many(self, entries: list[CacheEntry]) -> None:
        await self._slow()
        await super().upsert_many(entries)

    async def stats(self) -> StoreStats:
        await self._slow()
        return await super().stats()


async def test_slow_backend_is_a_miss_within_budget_and_writes_do_not_block() -> None:
    store = SlowStore(delay=1.0)
    cache = SemanticCache(CFG.semantic_cache, store)
    loop = asyncio.get_running_loop()
    start = loop.time()
    cache.store(make_req("Q?", BASE), completion())  # returns at once although the write takes 1 s
    assert loop.time() - start < 0.5  # bounds far from the backend's 1 s, so a loaded machine cannot fail them
    assert await cache.lookup(make_req("Another question?", BASE)) is None
    assert loop.time() - start < 0.5
    assert cache.counters["error:lookup"] == 1
    await cache.close()


async def test_slow_lookups_warn_once_per_spell_and_each_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lookup over its budget logged its own `cache_backend_error` warning: under load, a line per request. Now
    the spell's first is logged, and its end once with the count; the metric still counts every one."""
    from structlog.testing import capture_logs

    from router.observability import logs as router_logs

    store = SlowStore()
    cache = SemanticCache(CFG.semantic_cache, store)
    with capture_logs() as lines:
        assert await cache.lookup(make_req("A?", BASE)) is None  # the backend answers...
        store.delay = 0.2  # ...then runs past the lookup budget, now and then answering in time
        for i in range(8):
            assert await cache.lookup(make_req(f"Q{i}?", BASE)) is None
            if i == 3:
                store.delay = 0.0
                await cache.lookup(make_req("In time?", BASE))
                store.delay = 0.2
        store.delay = 0.0
        monkeypatch.setattr(router_logs, "SPELL_QUIET_S", 0.0)  # as if quiet for long enough
        await cache.lookup(make_req("Back?", BASE))
    events = [x for x in lines if x["event"].startswith("cache_backend_")]
    assert [x["event"] for x in events] == ["cache_backend_error", "cache_backend_recovered"]
    assert events[0]["log_level"] == "warning" and events[0]["reason"] == "lookup"
    assert events[1]["failures"] == 8 and cache.counters["error:lookup"] == 8
    await cache.close()


async def test_failing_backend_is_a_counted_miss() -> None:
    cache = SemanticCache(CFG.semantic_cache, SlowStore(fail=True))
    cache.writes.retry_pause_s = 0.001
    assert await cache.lookup(make_req("Q?", BASE)) is None
    cache.store(make_req("Q?", BASE), completion())
    await cache.flush()
    assert cache.counters["error:lookup"] == 1
    assert cache.counters["error:write"] == 1 + cache.writes.retries  # retried, then dropped and counted
    assert cache.counters["dropped:backend_error"] == 1
    assert (await cache.stats())["entries"] is None
    await cache.close()


async def test_a_slow_backend_never_opens_the_breaker_a_silent_or_failing_one_does() -> None:
    """Under CPU contention lookups ran over budget in bursts; each counted as a failure and five in a row opened the
    breaker on a backend that answered the calls around them. Now a timeout is a miss, and a failure only when the
    backend answered less than a quarter of the last `silent_s`'s calls; an error still counts at once."""
    store = SlowStore()
    cache = SemanticCache(CFG.semantic_cache, store)
    streak = cache.health.streak
    for i in range(streak * 2 + 1):  # a backend answering its traffic...
        assert await cache.lookup(make_req(f"A{i}?", BASE)) is None
    store.delay = 0.2  # ...then a burst past the lookup budget and the facade's backstop
    for i in range(streak * 2):
        assert await cache.lookup(make_req(f"Q{i}?", BASE)) is None
    assert cache.counters["error:lookup"] == streak * 2  # every one a counted miss
    assert cache.health.up and cache.counters["miss:backend_down"] == 0
    cache.health.silent_s = 0.0  # a hanging backend: nothing answered for longer than silent_s
    for i in range(streak):
        await cache.lookup(make_req(f"H{i}?", BASE))
    assert not cache.health.up
    await cache.lookup(make_req("Probe?", BASE))  # the breaker lets one probe a second through
    assert await cache.lookup(make_req("Skipped?", BASE)) == "backend_down"
    failing = SemanticCache(CFG.semantic_cache, SlowStore(fail=True))
    assert await failing.lookup(make_req("Q0?", BASE)) is None
    failing.health.answered = True  # an error counts even right after an answer
    failing.health.success()
    for i in range(streak):
        await failing.lookup(make_req(f"F{i}?", BASE))
    assert not failing.health.up
    await cache.close()
    await failing.close()


async def test_probes_before_the_first_answer_count_only_once_the_backend_is_marked_down() -> None:
    """Every clean start counted an error per worker: its readiness probe came while the Lite child was starting."""
    store = SlowStore(fail=True)
    starting = SemanticCache(CFG.semantic_cache, store)
    assert (await starting.check())[1].startswith("backend not answered since start: 1 failed call in a row")
    store.fail = False
    assert (await starting.check())[0] and starting.counters["error:probe"] == 0
    never = SemanticCache(CFG.semantic_cache, SlowStore(fail=True))
    for _ in range(never.health.streak + 1):
        await never.check()
    assert not never.health.up and never.counters["error:probe"] == 2  # the streak's last failure and the next one
    await starting.close()
    await never.close()


async def test_one_readiness_check_confirms_a_change_of_the_backend() -> None:
    """Each readiness turn (10 s) added one outcome to the streak of 5: with no traffic a stopped Milvus read 503 only
    47 s later, a restarted one 200 after 68 s. A check that finds the backend changing now asks until it decides."""
    store = SlowStore()
    cache = SemanticCache(CFG.semantic_cache, store)
    assert await cache.check() == (True, "backend answering")
    store.fail = True
    cache.health.last_activity -= cache.cfg.probe_idle_s  # no traffic since: the check sends its own lookup
    down = f"serving without cache: breaker open ({cache.health.streak} failed calls in a row), a probe lookup a second"
    assert await cache.check() == (False, f"{down}: probe: down")
    store.fail = False
    cache.health.last_activity -= cache.cfg.probe_idle_s
    assert await cache.check() == (True, "backend answering")
    await cache.close()


async def test_lru_and_fifo_eviction() -> None:
    def entry(key: str) -> CacheEntry:
        return CacheEntry(key, "s", "n", "m", BASE, "t", "{}", 0.0, 1e12)

    for policy, survivor in (("lru", "a"), ("fifo", "b")):
        store = MemoryStore(2, policy)  # type: ignore[arg-type]
        await store.upsert(entry("a"))
        await store.upsert(entry("b"))
        assert await store.get("a", 1.0) is not None  # LRU: a is now the most recent
        await store.upsert(entry("c"))
        assert await store.get(survivor, 1.0) is not None
        assert (await store.stats()).entries == 2 and store.evictions == 1


class BuggyStore(MemoryStore):
    """A backend bug (not a CacheBackendError) must still cost only a miss."""

    async def search(self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float,
                     now: float) -> list[Candidate]:
        raise RuntimeError("bug")


async def test_backend_bug_is_a_counted_miss() -> None:
    cache = SemanticCache(CFG.semantic_cache, BuggyStore(100))
    assert await cache.lookup(make_req("Q?", BASE)) is None
    assert cache.counters["error:lookup"] == 1
    await cache.close()


async def test_a_repeat_of_a_recent_answer_skips_the_backend(clock: Clock) -> None:
    """Retries and regenerates: the hot copy answers; another tenant, an expired entry and an
    invalidation never get it."""
    store = SlowStore(delay=1.0)  # any backend call would blow the lookup budget
    cache = SemanticCache(CFG.semantic_cache, store, clock=clock)
    cache.store(make_req("How do I reset my password?", BASE), completion())
    await cache.flush()  # the answer's PII screen, then the write
    hit = await cache.lookup(make_req("How do I reset my password?", BASE))
    assert hit is not None and hit.exact and cache.counters["error:lookup"] == 0
    other = {"authorization": "Bearer other"}
    assert await cache.lookup(make_req("How do I reset my password?", BASE, headers=other)) is None
    clock.now += CFG.semantic_cache.hot_answers_ttl_s
    assert await cache.lookup(make_req("How do I reset my password?", BASE)) is None  # hot copy expired
    cache.store(make_req("How do I reset my password?", BASE), completion())
    await cache.flush()
    await cache.invalidate(model="m1")
    assert await cache.lookup(make_req("How do I reset my password?", BASE)) is None
    await cache.close()


def test_a_backend_that_answers_one_call_in_forty_is_down() -> None:
    """Review of the rule above: "a timeout counts only after 2 s without any answer" kept a Milvus where 39 of 40
    calls time out marked up, so every lookup paid its whole budget; judged by the share of answered calls it opens."""
    from router.cache.health import BackendHealth

    health = BackendHealth()
    health.success()
    for _ in range(3):
        for _ in range(39):
            health.failure("timeout after 50 ms", timeout=True)
        health.success()
    assert not health.up


async def test_a_new_cache_facade_reports_the_backends_entries_on_its_first_use(clock: Clock) -> None:
    """A restarted router worker said `vsr_cache_entries 0` until its first purge, 300 s later, while the shared
    backend held entries other workers wrote: the gauge is read as soon as the facade serves."""
    from router.observability.metrics import REGISTRY, set_cache_entries

    store = MemoryStore(100)
    for i in range(3):  # written by another worker
        req = make_req(f"question number {i}", near(0.5))
        await store.upsert(CacheEntry(req.key, req.scope, req.namespace, req.model, req.embedding, req.text, b"{}",
                                      clock.now, clock.now + 60))
    set_cache_entries(0)
    restarted = SemanticCache(CFG.semantic_cache, store, clock=clock)
    await restarted.lookup(make_req("an unrelated question", near(0.1)))
    for _ in range(200):
        if REGISTRY.get_sample_value("vsr_cache_entries") == 3:
            break
        await asyncio.sleep(0.01)
    assert REGISTRY.get_sample_value("vsr_cache_entries") == 3
    await restarted.close()
