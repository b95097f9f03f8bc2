"""The cache as the request path sees it: build a key, look up within a budget, store in the background.

A hit needs the same tenant namespace, selected model, context fingerprint and encoder (`keys.py`),
then either the exact normalised prompt or a semantic candidate (top-k above the cosine floor) that
the guard's vetoes and the learned verifier accept (`guard.py`, `verifier.py`) and, unless switched off, the
pair model confirms reading both prompts together (`pair.py`):
lookup -> candidates -> guard/verifier -> pair check -> hit or miss.
Backend failures never reach the caller: they are counted and answered as a miss. A prompt the encoder does not read
(Classification.encoder_reads: Arabic, Hangul, CJK, ...) is cached by exact key only, counted under reason `unread`:
its embedding says little of what it asks (trial 15: different Arabic questions of one frame were served each other's
answers). Prompts longer than `max_semantic_chars` are cached by exact key only: up to
508 characters every character lies inside the encoder's head+tail windows (one character never
yields more than one WordPiece token), so two long prompts that share a prefix cannot collide.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import structlog

from router.cache import answer_pii, keys
from router.cache.health import BackendHealth
from router.cache.hot import HotAnswers
from router.cache.keys import SkipReason
from router.cache.memory import MemoryStore
from router.cache.milvus import MAX_TEXT_BYTES, MilvusStore
from router.cache.pair import OperatingPoint, PairModel, manifest_point
from router.cache.store import DIM, CacheBackendError, CacheEntry, CacheStore, CacheTimeout
from router.cache.verifier import ADDITION, VETOED, Verifier
from router.cache.verifier import FLOOR as VERIFIER_FLOOR
from router.cache.writer import WriteQueue
from router.config import LOOP_SLACK, CacheConfig, CategoryCache, RouterConfig
from router.errors import InvalidRequest
from router.observability import logs, metrics

log = structlog.get_logger(__name__)
CONTROL_HEADER = "x-vsr-cache-control"
CONTROL_VALUES = ("no-store", "no-cache")  # neither read nor write; do not read (the fresh answer may be stored)
LOOP_GRACE_S = 0.01
CONFIRM_S = 0.1  # readiness's pause between the probes that confirm a change (`check`)
WARM_UP_S = 5.0  # the longest a starting process waits for its backend's connection before it serves and is ready
ANSWER_PII = "answer_pii"  # the answer itself holds PII the validators find (answer_pii.py): not stored
ANSWER_UNSCREENED = "answer_unscreened"  # the answer's PII screen failed (a bug, logged): not stored
UNREAD = "unread"  # a lookup of a prompt the encoder does not read: exact key only
# Why a lookup served nothing (`Miss.reason`, the miss's metric reason and request line): no entry of the scope at or
# above the candidate floor; every candidate vetoed (a number, date, direction, ... differs); the verifier's score
# reached no step; the pair model scored the chosen candidate below what its step needs; the entry could not serve
# (unreadable, or without the logprobs the request asks for); `unread` (UNREAD): only the exact key was asked.
MISS_REASONS = ("no_candidate", "vetoed", "verifier_reject", "pair_reject", "unusable", UNREAD)
_FINISH_OK = frozenset({"stop", "length", "tool_calls", "function_call"})
# Every `reason` label value this module emits: declare them with metrics.set_label_values("cache_reason", ...).
CACHE_REASONS = (
    "exact", "semantic", *MISS_REASONS, "lookup", "write", "purge", "stats", "probe",
    "queue_full", "backend_error", "shutdown",
    "not_completion", "no_choices", "bad_message", "unfinished", "too_large", ANSWER_PII, ANSWER_UNSCREENED,
    *(r.value for r in SkipReason),
)


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """Everything lookup and store need about one request; holds no identity, only its HMAC."""

    namespace: str
    model: str
    scope: str
    key: str
    text: str
    embedding: np.ndarray | None  # None: exact match only
    category: str | None
    read: bool
    threshold: float | None  # cosine floor of the candidates; None = the operating point's
    ttl_seconds: int
    min_score: float | None = None  # a floor on every step's verifier score (verifier_threshold); None = the point's
    logprobs: bool = False  # the client asked for logprobs: an entry without them is a miss (`_hit`)
    unread: bool = False  # the encoder does not read the prompt: exact key only, counted as UNREAD


@dataclass(frozen=True, slots=True)
class CacheHit:
    completion: dict[str, Any]
    similarity: float
    exact: bool
    age_seconds: float
    key: str = ""  # the stored entry's key: a hash, so the request log can name the entry without its text
    verifier_score: float | None = None  # a semantic hit's verifier score (None: exact)
    pair_score: float | None = None  # and the pair model's (None: exact, or no pair model)

    @property
    def match(self) -> str:
        return "exact" if self.exact else "semantic"


class Miss(NamedTuple):
    """A lookup that served nothing, why (MISS_REASONS), and the figures of the candidate it judged last, so that an
    operator tuning `similarity_threshold` or `verifier_threshold` can tell which bar a rewording missed (trial 18)."""

    reason: str
    similarity: float | None = None
    verifier_score: float | None = None
    pair_score: float | None = None


def scores(found: CacheHit | Miss) -> dict[str, float | None]:
    """A hit's or a miss's candidate figures, rounded as the request line and `explain` show them (None: not judged)."""
    return {name: None if value is None else round(value, 4) for name, value in (
        ("similarity", found.similarity), ("verifier_score", found.verifier_score), ("pair_score", found.pair_score))}


def cache_control(headers: Mapping[str, str]) -> frozenset[str]:
    """The request's cache directives (`no-store`, `no-cache`): from `x-vsr-cache-control`, where a value the router
    does not know raises InvalidRequest (`nocache` was ignored: the client believed it had opted out), and from the
    standard `Cache-Control`, whose other directives (`max-age=0`, ...) are about HTTP caches and left to them.
    Read once, with the request's headers (refused there, cache on or off); build_cache_request takes the result."""
    ours = {t.strip().lower() for t in headers.get(CONTROL_HEADER, "").split(",") if t.strip()}
    if unknown := ours - set(CONTROL_VALUES):
        raise InvalidRequest(f"{CONTROL_HEADER}: unknown value {', '.join(sorted(unknown))!r}; accepted: "
                             f"{', '.join(CONTROL_VALUES)}", param=CONTROL_HEADER)
    standard = {t.split("=", 1)[0].strip().lower() for t in headers.get("cache-control", "").split(",")}
    return frozenset(ours | (standard & set(CONTROL_VALUES)))


def _usable_embedding(embedding: np.ndarray | None, text: str, cfg: CacheConfig) -> np.ndarray | None:
    if embedding is None or len(text) > cfg.max_semantic_chars or len(text.encode()) > MAX_TEXT_BYTES:
        return None
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if vector.shape != (DIM,) or not np.isfinite(norm) or norm == 0.0:
        return None
    return vector / norm


def build_cache_request(
    body: dict[str, Any], headers: Mapping[str, str], model: str, category: str | None,
    embedding: np.ndarray | None, cfg: RouterConfig, encoder: str = "", pii_types: Collection[str] | None = (),
    stateful: bool = False, turn_category: str | None = None, control: Collection[str] = frozenset(),
    reasoning: tuple[str, bool | str] | None = None, encoder_reads: bool = True,
) -> CacheRequest | SkipReason:
    """The cache key of a validated chat request, or why it must not touch the cache.

    `encoder` identifies the model that produced `embedding` (Classification.encoder); it is part of the
    scope, so entries embedded by another encoder are never candidates. `pii_types`: what the PII screen found
    anywhere in the conversation (Classification.pii_types); any at all keeps the request out of the cache, whose
    entries hold the prompt's text and the answer in a backend that may be shared; None when the screen should have
    run and did not read it all (the classifier failed and `on_failure: open` let the request through, or the text is
    longer than the screen reads: Classification.unscreened), which keeps it out too. `stateful`: the answer depends on
    state the server keeps (a Responses request with `previous_response_id`, `conversation` or `store`), so another
    request's answer is never this one's. `turn_category`: the latest turn's own category when affinity routed the
    request as its conversation's `category`; the stricter of the two categories' settings applies (`_strictest`).
    `control`: the request's cache directives (`cache_control`). `reasoning`: the reasoning switch the router sets in
    the body it sends (Policy.reasoning_switch: parameter and value), None when the body goes with the client's setting
    or the server's default; an answer generated with another setting is another answer. `encoder_reads`
    (Classification.encoder_reads) False: exact repeats only, no semantic candidates.
    """
    result = _build(body, headers, model, category, embedding if encoder_reads else None, cfg, encoder, pii_types,
                    stateful, turn_category, control, reasoning)
    if not encoder_reads and isinstance(result, CacheRequest):
        return replace(result, unread=True)
    if isinstance(result, SkipReason):
        metrics.record_cache("skipped_write", result.value)
    return result


def _build(
    body: dict[str, Any], headers: Mapping[str, str], model: str, category: str | None,
    embedding: np.ndarray | None, cfg: RouterConfig, encoder: str, pii_types: Collection[str] | None, stateful: bool,
    turn_category: str | None, control: Collection[str], reasoning: tuple[str, bool | str] | None,
) -> CacheRequest | SkipReason:
    c = cfg.semantic_cache
    overrides = [found.cache for name in (category, turn_category) if name and (found := cfg.category(name))]
    if not c.enabled:
        return SkipReason.DISABLED
    if any(o.enabled is False for o in overrides):
        return SkipReason.CATEGORY_DISABLED
    if "no-store" in control:
        return SkipReason.NO_STORE
    if stateful:
        return SkipReason.STATEFUL
    if pii_types is None:
        return SkipReason.UNSCREENED
    if pii_types:
        return SkipReason.PII
    who = keys.identity(headers, c.scope, c.tenant_headers, c.user_headers, c.use_api_key)
    if who is None:
        return SkipReason.NO_IDENTITY
    text = keys.latest_user_text(body["messages"])
    if isinstance(text, SkipReason):
        return text
    namespace = keys.namespace_of(keys.hmac_secret(c.hmac_secret_env)[0], who)
    scope = keys.scope_key(namespace, model, keys.context_fingerprint(body, reasoning), encoder,
                           keys.end_user(body) if c.scope == "user" else None)
    threshold, min_score, ttl = _strictest(c, overrides or [CategoryCache()])
    return CacheRequest(namespace, model, scope, keys.exact_key(scope, text), text,
                        _usable_embedding(embedding, text, c), category, "no-cache" not in control,
                        threshold, ttl, min_score, body.get("logprobs") is True)


def _strictest(c: CacheConfig, overrides: list[CategoryCache]) -> tuple[float | None, float | None, int]:
    """(similarity floor, verifier floor, TTL) of the categories' settings, each category's own value else the
    cache's: the highest floors and the shortest TTL, so a turn pinned to another category's model is cached no more
    loosely than either category allows. None: the operating point's (its floor is `candidate_floor`; its verifier
    steps are floored by a verifier_threshold, never loosened)."""
    similarity = [o.similarity_threshold or c.similarity_threshold for o in overrides]
    verifier = [o.verifier_threshold if o.verifier_threshold is not None else c.verifier_threshold for o in overrides]
    ttl = min(o.ttl_seconds if o.ttl_seconds is not None else c.ttl_seconds for o in overrides)
    floors = [s for s in similarity if s is not None]
    threshold = max(floors, default=None)
    if threshold is not None and len(floors) < len(similarity) and threshold <= candidate_floor(c):
        threshold = None  # the operating point's own floor is the higher one
    return threshold, max((v for v in verifier if v is not None), default=None), ttl


def candidate_floor(c: CacheConfig) -> float:
    """The cosine floor a lookup searches with when no category overrides it (what SemanticCache uses)."""
    if c.similarity_threshold is not None:
        return c.similarity_threshold
    return VERIFIER_FLOOR if c.pair_model_dir is None else manifest_point(c.pair_model_dir).floor


def completion_problem(completion: Any) -> str | None:
    """Why a response must not be cached: only a finished chat.completion object is replayable."""
    if not isinstance(completion, dict) or completion.get("object") != "chat.completion":
        return "not_completion"
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no_choices"
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or message.get("role") != "assistant":
            return "bad_message"
        if choice.get("finish_reason") not in _FINISH_OK:
            return "unfinished"
    return None


class SemanticCache:
    """Facade over one CacheStore; create it anywhere, use it from one event loop."""

    def __init__(self, cfg: CacheConfig, store: CacheStore, clock: Callable[[], float] = time.time,
                 verifier: Verifier | None = None):
        self.cfg = cfg
        self.backend = store
        self.verifier = verifier or default_verifier()
        self.pair = None if cfg.pair_model_dir is None else shared_pair_model(cfg.pair_model_dir)
        self.point = (OperatingPoint(VERIFIER_FLOOR, ((self.verifier.threshold, 0.0),)) if self.pair is None
                      else self.pair.operating_point)
        self._clock = clock
        self._purger: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter()
        self.health = BackendHealth()
        # One warning per spell of failures, then a summary with their count: a Milvus slower than the lookup budget
        # under load wrote a line per request (each still counted, `vsr_cache_events_total{event="error"}`).
        self._errors = logs.FailureSpell(log, "cache_backend_error", "cache_backend_recovered", level="warning")
        self.hot = HotAnswers(cfg.hot_answers, cfg.hot_answers_ttl_s)
        self.writes = WriteQueue(self._write_batch, self._count_n, size=cfg.write_queue_size,
                                 batch=cfg.write_batch_size, interval_s=cfg.write_interval_ms / 1000)
        self._answer_screen = ThreadPoolExecutor(1, thread_name_prefix="cache-answer-pii")
        self._unscreened: list[tuple[CacheEntry, dict[str, Any]]] = []
        self._screener: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, cfg: RouterConfig) -> SemanticCache:
        """The pair model loads first: a missing one fails before a backend connects (a Lite child started, a server
        connection opened), which nothing would have closed."""
        if cfg.semantic_cache.pair_model_dir is not None:
            shared_pair_model(cfg.semantic_cache.pair_model_dir)
        return cls(cfg.semantic_cache, make_store(cfg.semantic_cache))

    def _count(self, event: str, reason: str | None = None, n: int = 1) -> None:
        """Local counters (stats, CLI) and the Prometheus series."""
        self.counters[f"{event}:{reason}" if reason else event] += n
        metrics.record_cache(event, reason, n)  # type: ignore[arg-type]

    def _count_n(self, event: str, reason: str | None, n: int) -> None:
        """The write queue's counter: n entries at once (a stored batch, a dropped batch)."""
        self._count(event, reason, n)
        metrics.set_cache_write_queue(len(self.writes))

    def _error(self, exc: Exception, op: str) -> None:
        """Count every failure; log it while the backend is up and has answered. Once it is down the
        `cache_backend_down` line holds the error and `/readyz` the latest: a line per failed probe or purge would only
        repeat them. Before its first answer (connecting at start) a failure is logged only as the streak's end, and a
        readiness probe's is counted only from there: each clean start counted one per worker (probed while the Lite
        child was still starting), logged nowhere."""
        self.health.failure(f"{op}: {str(exc)[:200] or type(exc).__name__}", _timed_out(exc))
        if op == "probe" and not self.health.answered and self.health.up:
            return
        self._count("error", op)
        metrics.record_dependency_error("cache")
        if self.health.up and self.health.answered:
            self._errors.failure(op, error=str(exc)[:200] or type(exc).__name__)

    def _answered(self) -> None:
        self.health.success()
        self._errors.success()

    def _ensure_purger(self) -> None:
        """On first use from the event loop: start the periodic purge, warn about a missing secret."""
        if self._purger is None:
            self._purger = asyncio.get_running_loop().create_task(self._purge_loop())
            if not keys.hmac_secret(self.cfg.hmac_secret_env)[1]:
                log.warning("cache_hmac_secret_missing", env=self.cfg.hmac_secret_env,
                            effect="random per-process secret: entries survive neither a restart nor span sidecars")

    async def lookup(self, req: CacheRequest) -> CacheHit | SkipReason | None:
        """A hit or None within `lookup_timeout_ms`; never raises. SkipReason.BACKEND_DOWN, at once, while the
        breaker (`health.admit`) keeps the backend out: a hit from memory is still served."""
        found = await self.verdict(req)
        return None if isinstance(found, Miss) else found

    async def verdict(self, req: CacheRequest) -> CacheHit | SkipReason | Miss | None:
        """`lookup`, with a miss's reason and figures (the request line's); None: not asked, or no verdict within
        the budget (the backend failed or timed out: counted and logged as such)."""
        if not req.read:
            return None
        self._ensure_purger()
        now = self._clock()
        hot = self.hot.get(req.key, req.scope, req.namespace, now)
        if hot is not None and (hit := self._hit(req, hot, 1.0, True, now)) is not None:
            self._count("hit", UNREAD if req.unread else "exact")  # a repeat of a recent answer: no round trip
            return hit
        if not self.health.admit():
            self._count("miss", SkipReason.BACKEND_DOWN)
            return SkipReason.BACKEND_DOWN
        try:
            async with asyncio.timeout(_backstop(self.cfg.lookup_timeout_ms)):
                found = await self._find(req, now)
        except (CacheBackendError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):  # the event loop's backstop: the backend's budget did not end it
                metrics.record_lookup_timeout("loop")
            self._error(exc, "lookup")
            return None
        except Exception as exc:  # a cache bug must cost a miss, never the request
            log.exception("cache_lookup_bug", error=type(exc).__name__)
            self._error(exc, "lookup")
            return None
        self._answered()
        if isinstance(found, Miss):
            self._count("miss", found.reason)
        else:
            self._count("hit", UNREAD if req.unread else found.match)
        return found

    async def _find(self, req: CacheRequest, now: float) -> CacheHit | Miss:
        """One backend round trip: the exact key when there is no embedding, else the semantic search.

        An exact repeat embeds to the same vector, so the search returns its entry first at similarity
        1.0 (recognised as exact by its key); a second, exact-key lookup would only add a round trip.
        Otherwise the verifier judges every candidate and the operating point says what pair score each one needs
        (`OperatingPoint.required`); the one that needs least (then the best verifier score) is served if, with the
        pair model on, the pair model (in its own thread) scores that one pair at least that much.
        """
        if req.embedding is None:
            entry = await self.backend.get(req.key, now)
            if entry is None or entry.scope != req.scope:  # only the exact key was asked: `unread` says why
                return Miss(UNREAD if req.unread else "no_candidate")
            return self._hit(req, entry, 1.0, True, now) or Miss("unusable", 1.0)
        floor = self.point.floor if req.threshold is None else req.threshold
        found = await self.backend.search(req.scope, req.embedding, self.cfg.top_k, floor, now)
        # Defence in depth: a backend must never return another scope.
        own = [c for c in found if c.entry.scope == req.scope and c.entry.namespace == req.namespace]
        exact = next((c for c in own if c.entry.key == req.key), None)
        if exact is not None:
            self.hot.put(exact.entry, now)
            return self._hit(req, exact.entry, 1.0, True, now) or Miss("unusable", 1.0)
        if not own:
            return Miss("no_candidate")
        scores, states = self.verifier.judge(req.text, [(c.entry.text, c.similarity) for c in own])
        chosen = self.point.pick(scores, states, req.min_score)
        if chosen is None:
            best = int(np.argmax(scores))  # the nearest when all are vetoed (scores 0, candidates nearest first)
            return Miss("vetoed" if (states == VETOED).all() else "verifier_reject", own[best].similarity,
                        float(scores[best]))
        pick, need = chosen
        pair = None  # not asked: no pair model, or the chosen candidate's step needs no pair score
        if self.pair is not None and need > 0:
            pair = await self.pair.check(own[pick].entry.text, req.text, whole=bool(states[pick] == ADDITION))
            if not pair >= need:  # NaN included: a score nothing vouches for never serves
                return Miss("pair_reject", own[pick].similarity, float(scores[pick]), pair)
        hit = self._hit(req, own[pick].entry, own[pick].similarity, False, now)
        if hit is None:
            return Miss("unusable", own[pick].similarity, float(scores[pick]), pair)
        return replace(hit, verifier_score=float(scores[pick]), pair_score=pair)

    def _hit(self, req: CacheRequest, entry: CacheEntry, similarity: float, exact: bool, now: float,
             ) -> CacheHit | None:
        """The entry as a hit, or None: unreadable, or without the logprobs the request asked for (stored by a router
        that dropped a stream's logprobs, or an upstream that ignored the field). A miss, not a skip: its answer is
        stored under the same key and serves the next repeat."""
        try:
            completion = json.loads(entry.payload)
        except ValueError:
            return None
        if req.logprobs and any(c.get("logprobs") is None for c in completion.get("choices") or [{}]):
            return None
        return CacheHit(completion, min(similarity, 1.0), exact, max(now - entry.created_at, 0.0), entry.key)

    def store(self, req: CacheRequest, completion: dict[str, Any]) -> None:
        """Queue the answer for its PII screen (`_screen`) and return at once; call from the event loop. Too many
        waiting drops it, counted like a full write queue."""
        problem = completion_problem(completion)
        payload = "" if problem else json.dumps(completion, ensure_ascii=False, separators=(",", ":"))
        if not problem and len(payload.encode()) > self.cfg.max_entry_bytes:
            problem = "too_large"
        if problem:
            self._count("skipped_write", problem)
            return
        if len(self._unscreened) >= self.cfg.write_queue_size:
            self._count("dropped", "queue_full")
            return
        now = self._clock()
        self._unscreened.append((CacheEntry(req.key, req.scope, req.namespace, req.model, req.embedding,
                                            req.text if req.embedding is not None else "", payload, now,
                                            now + req.ttl_seconds), completion))
        self._ensure_purger()
        if self._screener is None or self._screener.done():
            self._screener = asyncio.get_running_loop().create_task(self._screen(), name="cache-answer-pii")

    async def _screen(self) -> None:
        """The answers waiting, screened together in the screen's thread (one hand-over per burst, which the write
        queue then gets whole); those without PII are kept (`_keep`). Only the request was screened until 2026-12-02:
        an answer naming a customer's SSN was replayed to the tenant's other callers."""
        loop = asyncio.get_running_loop()
        while self._unscreened:
            batch, self._unscreened = self._unscreened, []
            try:
                found = await loop.run_in_executor(self._answer_screen, _holding_pii, [c for _, c in batch])
            except Exception:  # a bug in the screen: the batch is not stored (fail closed), later ones still are
                log.exception("cache_answer_screen_bug", answers=len(batch))
                for _ in batch:
                    self._count("skipped_write", ANSWER_UNSCREENED)
                continue
            for (entry, _), pii in zip(batch, found, strict=True):
                if pii:
                    self._count("skipped_write", ANSWER_PII)
                else:
                    self._keep(entry)

    def _keep(self, entry: CacheEntry) -> None:
        self.hot.put(entry, self._clock())  # memory only: repeats are answered from it even while the backend is down
        if self.health.blocked:  # the breaker is open: the write would only wait out its budget and retries
            self._count("dropped", SkipReason.BACKEND_DOWN)
            return
        self.writes.put(entry)
        metrics.set_cache_write_queue(len(self.writes))

    async def _write_batch(self, entries: list[CacheEntry]) -> None:
        """One backend call for a batch, under the write budget; failures feed health and the retry."""
        try:
            async with asyncio.timeout(_backstop(self.cfg.write_timeout_ms)):
                await self.backend.upsert_many(entries)
        except (CacheBackendError, TimeoutError) as exc:
            self.health.failure(f"write: {str(exc)[:200] or type(exc).__name__}", _timed_out(exc))
            metrics.record_dependency_error("cache")
            raise
        except Exception:
            log.exception("cache_write_bug")
            raise
        self._answered()

    async def flush(self) -> None:
        """Wait for answers being screened and queued writes (tests, shutdown)."""
        if self._screener is not None:
            await self._screener
        await self.writes.flush()

    async def warm_up(self) -> None:
        """Wait, at most WARM_UP_S, for the backend's connection, once: a starting worker opens its port and is ready
        only then. It was ready as soon as its models loaded, its first probe and lookups waited for the connect within
        their 50 ms budget, and /readyz said "degraded: serving without cache: failing (1 in a row): probe: timeout
        after 50 ms" for a restarted worker whose sibling served from the same, untouched Lite child (trial 14). A
        backend that does not connect in time is left to the probes and the breaker, as before."""
        if self._warming is None:
            self._warming = asyncio.get_running_loop().create_task(self._connected())
        await asyncio.shield(self._warming)

    async def _connected(self) -> None:
        try:
            async with asyncio.timeout(WARM_UP_S):
                await self.backend.connected()
        except (CacheBackendError, TimeoutError):
            pass  # the probes that follow report it

    async def check(self) -> tuple[bool, str]:
        """Backend health for readiness: from traffic, or one cheap key lookup after `probe_idle_s` without any or
        while the backend has never answered. Up only once it has answered: a Milvus unreachable from the start was
        reported up ("not asked yet", then "failing (1 in a row)") for the ~50 s its failures took to reach the streak.
        A backend found changing (failing while marked up, answering while marked down) is asked again, CONFIRM_S
        apart, until its streak decides: a change reaches /readyz within one probe turn, where each turn added one
        outcome to the streak (Milvus stopped with no traffic: 503 after 47 s; back: 200 after 68 s)."""
        await self.warm_up()
        for _ in range(self.health.streak):
            if self.health.idle_for() >= self.cfg.probe_idle_s or not self.health.answered or self.health.changing:
                await self._probe()
            if not (self.health.answered and self.health.changing):  # a backend still starting: one probe a turn
                break
            await asyncio.sleep(CONFIRM_S)
        return self.health.up and self.health.answered, self.health.detail()

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.lookup_timeout_ms / 1000 * 4):
                await self.backend.get("0" * 64, self._clock())
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            self._error(exc, "probe")
        else:
            self._answered()

    async def _purge_loop(self) -> None:
        """Refresh the entries gauge at once (a restarted worker said 0 entries until its first purge, 300 s), then
        purge expired entries and refresh it every `purge_interval_s`."""
        while True:
            await self.stats()
            await asyncio.sleep(self.cfg.purge_interval_s)
            await self.purge_expired()

    async def purge_expired(self) -> int:
        try:
            return await self.backend.purge_expired(self._clock())
        except CacheBackendError as exc:
            self._error(exc, "purge")
            return 0

    async def invalidate(self, namespace: str | None = None, model: str | None = None, entry: str | None = None) -> int:
        """Delete entries of a namespace, model and/or entry id; raises CacheBackendError for the CLI to report."""
        self.hot.clear()
        return await self.backend.delete(namespace=namespace, model=model, entry=entry)

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"counters": dict(sorted(self.counters.items()))}
        try:
            s = await self.backend.stats()
        except CacheBackendError as exc:
            self._error(exc, "stats")
            return {**out, "entries": None, "error": str(exc)}
        metrics.set_cache_entries(s.entries)
        return {**out, "entries": s.entries, **s.details}

    async def close(self) -> None:
        for task in (self._purger, self._warming):
            if task is not None:
                task.cancel()
        if self._screener is not None:
            await self._screener  # milliseconds per answer, in its own thread
        self._answer_screen.shutdown(wait=False)
        await self.writes.close(self.cfg.write_timeout_ms / 1000)
        await self.backend.close()


def _holding_pii(completions: list[dict[str, Any]]) -> list[bool]:
    return [bool(answer_pii.pii_types(c)) for c in completions]


def _timed_out(exc: Exception) -> bool:
    """Out of its budget, in the store (CacheTimeout) or at the facade's backstop (TimeoutError): slow or hanging."""
    return isinstance(exc, (CacheTimeout, TimeoutError))


def _backstop(budget_ms: int) -> float:
    """The facade's timeout on a backend call. Backends enforce the budget; this one ends after theirs (LOOP_GRACE_S
    after milvus.MilvusStore._call's), so a timeout is the backend's to count and report, and an answer that arrived
    in time but reached a busy loop late is still theirs to use. Ending with the budget, the write's cancelled the
    store's call before its own deadline could report it (and left its future's failure to be logged as a traceback)."""
    return budget_ms / 1000 * LOOP_SLACK + LOOP_GRACE_S


@functools.cache
def default_verifier() -> Verifier:
    """The committed verifier, loaded once per process (config reloads share it)."""
    return Verifier.load()


@functools.cache
def shared_pair_model(model_dir: str) -> PairModel:
    """The pair model of `model_dir`, loaded once per process (config reloads and workers' caches share it);
    a missing file raises ModelMissingError, which fails startup."""
    return PairModel(model_dir)


def make_store(cfg: CacheConfig) -> CacheStore:
    """The backend named in the config; Milvus connects lazily, on first use, in its own threads."""
    if cfg.backend == "memory":
        return MemoryStore(cfg.max_entries, cfg.eviction)
    store = MilvusStore(
        cfg.uri, cfg.collection, token=os.environ.get(cfg.token_env, "") if cfg.token_env else "",
        index_type=cfg.index_type, index_params=cfg.index_params, search_params=cfg.search_params,
        consistency_level=cfg.consistency_level, timeout_s=cfg.lookup_timeout_ms / 1000,
        write_timeout_s=cfg.write_timeout_ms / 1000, reconnect_backoff_s=cfg.reconnect_backoff_s,
    )
    store.warm_up()
    return store
