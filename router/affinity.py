"""Session affinity: a conversation keeps the model chosen for it while it continues.

Only the latest user turn is classified, so without this a follow-up such as "now commit it" in the
middle of a coding task would be routed on its own words, often to the small model. Here a request
that continues a conversation is routed where the conversation started, unless the operator's rule
lets the new turn switch it:

- **Key**: a session header, the OpenAI `user` field, or the conversation itself (caller, system prompt, first
  *decisive* user turn: the first that names a category other than the default one, so "hi" never keys or pins a
  conversation; a later turn only at LATE_CONFIDENCE), whichever of `affinity.keys` is present first. Only a decisive
  turn creates a pin; until one does, the conversation is answered as the default category.
- **Anonymous clients** (no API key, tenant or user header) get no stored pins keyed by content: they would share
  them, and their routed model would reveal how others' conversations opened. Theirs are re-derived (below).
- **Remembered**: key -> (model, category) in a TTL- and size-bounded store (PinStore): in the process's memory
  (MemoryPins), or, when the router has a runtime directory (always with workers), in a SQLite file there that
  every worker of the Pod reads and writes (SharedPins), so a turn that lands on another worker finds its pin.
- **Re-derived without state**: when the store has no entry (another Pod, a restart, an expired
  entry) and the request carries its history, the conversation's category is the category of its
  first decisive user turn (keyword rules, else the classification the guards' screen gave it), so every Pod
  reaches the same model without shared state. Only a *switch* lives in the store alone: after a switch, a
  request that reaches another Pod goes back to the first decisive turn's model, unless the load
  balancer keeps sessions on one Pod (e.g. hash on the session header).
- **Responses state**: a Responses request that continues `previous_response_id` goes to the model
  that produced that response (its server holds the state), remembered when the answer passed; if that
  model may not see the new input's PII, the request is refused (400), never sent to a model without the state.
  Its pin also names who created it: while the pin lasts, a call on the response, or a continuation, by anyone else
  is refused with the 404 of an unknown id; an id without a pin goes on unchecked (stored_response).
- **Switch**: the pinned category is not `sticky`, the new turn's own category signal reaches
  `affinity.switch_confidence` (keyword rules count as 1.0), or the pinned model may not see the
  PII detected in this turn.
- **Stricter rules**: a turn answered as its conversation's category obeys the restrictive settings of both its
  own category and the conversation's: guards (Policy.pinned) and cache settings (semantic_cache.build_cache_request).
  Model, chain and reasoning are the conversation's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from router.config import AffinityConfig, RouterConfig
from router.errors import PIIViolation, ResponseNotFound
from router.observability import logs, metrics
from router.openai_wire import ChatRequest, bounded, message_text
from router.policy import Decision, Policy, pii_said
from router.signals import Classification

log = logs.get_logger("router.affinity")
PINS_FILE = "affinity-pins.sqlite3"

# What `x-vsr-affinity` reports.
# none: no pin applies (nothing in the conversation has decided a category yet, or no key).
NEW, STICKY, SWITCHED, REDERIVED, NONE = "new", "sticky", "switched", "rederived", "none"


@dataclass(frozen=True, slots=True)
class Pin:
    model: str
    category: str
    owner: str = ""  # a stored response's: who created it (response_owner); "" for a session's pin


class PinStore(Protocol):
    """Session key -> Pin, bounded in size (the oldest written go first) and in time (`ttl_s` after the last write).
    One per router process, kept across reloads. `now` (time.monotonic(): CLOCK_MONOTONIC, one clock for every
    process of the host) is for tests."""

    def configure(self, cfg: AffinityConfig) -> PinStore: ...

    async def get(self, key: str, now: float | None = None) -> Pin | None: ...

    async def put(self, key: str, pin: Pin, now: float | None = None) -> None: ...

    async def flush(self) -> None:
        """Wait for the pins put so far to be stored (shutdown, tests)."""


class MemoryPins:
    """The pins of one router process, in its memory: the store of a single router without a runtime directory."""

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, Pin]] = OrderedDict()

    def configure(self, cfg: AffinityConfig) -> MemoryPins:
        self.max_entries, self.ttl_s = cfg.max_entries, cfg.ttl_s
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return self

    async def get(self, key: str, now: float | None = None) -> Pin | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, pin = found
        if expires <= (time.monotonic() if now is None else now):
            del self._entries[key]
            return None
        return pin

    async def put(self, key: str, pin: Pin, now: float | None = None) -> None:
        self._entries[key] = ((time.monotonic() if now is None else now) + self.ttl_s, pin)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def flush(self) -> None:
        return None


class SharedPins:
    """The pins of every router process of a Pod, in a SQLite file (WAL: readers never wait for a writer) in the
    router's runtime directory. Every query runs on this store's own thread, never on the event loop; the table is
    pruned every `prune_every` writes of each process (expired rows, then all but the newest `max_entries`), so it
    holds at most `max_entries` plus that many per process. Policy on failure (a full disk, a damaged file, a lock
    held past BUSY_TIMEOUT_S): the request goes on as if no pin were stored (a continuation that carries its
    history is re-derived from its first turn), logged once per spell (`affinity_store_failed`) and counted in
    `vsr_dependency_errors_total{dependency="affinity_store"}`.

    Writes are behind the request: `put` queues the pin and returns (each first turn awaited its SQLite write), and one
    task stores the queue in a transaction. This process reads a queued pin from the queue; another worker finds it
    once written (a turn there before that is re-derived, as above). Loss policy: the queue holds MAX_PENDING keys;
    a pin for another key while it is full is dropped (`queue_full`, logged and counted as a failure), as are the
    queued pins of a process killed before `flush` (graceful shutdown flushes)."""

    BUSY_TIMEOUT_S = 0.05
    MAX_PENDING = 10_000
    SCHEMA = 1  # PRAGMA user_version: 1 added the owner of a stored response's pin (a named runtime dir outlives us)

    def __init__(self, path: Path, max_entries: int = 100_000, ttl_s: float = 3600.0):
        self.path = path
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="affinity-pins")
        self._db: sqlite3.Connection | None = None  # opened on that thread at first use
        self._writes = 0
        self._spell = logs.FailureSpell(log, "affinity_store_failed", "affinity_store_recovered")
        self._pending: dict[str, tuple[Pin, float]] = {}  # key -> (pin, when put), not yet written
        self._writer: asyncio.Task[None] | None = None

    @property
    def prune_every(self) -> int:
        return max(1, min(1000, self.max_entries // 10))

    def configure(self, cfg: AffinityConfig) -> SharedPins:
        self.max_entries, self.ttl_s = cfg.max_entries, cfg.ttl_s
        self._writes = self.prune_every - 1  # prune at the next write: the bound may have shrunk
        return self

    async def get(self, key: str, now: float | None = None) -> Pin | None:
        now = time.monotonic() if now is None else now
        queued = self._pending.get(key)
        if queued is not None and queued[1] + self.ttl_s > now:
            return queued[0]
        row = await self._run(self._select, key, now)
        return Pin(*row) if row else None

    async def put(self, key: str, pin: Pin, now: float | None = None) -> None:
        if key not in self._pending and len(self._pending) >= self.MAX_PENDING:
            self._spell.failure("queue_full", error=f"{self.MAX_PENDING} pins waiting to be written",
                                path=str(self.path), effect="this pin is dropped: its session may be re-derived")
            metrics.record_dependency_error("affinity_store")
            return
        self._pending[key] = (pin, time.monotonic() if now is None else now)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def flush(self) -> None:
        if self._writer is not None:
            await self._writer

    async def _write_pending(self) -> None:
        """Store what is queued, in batches, until the queue is empty; a failed batch is lost (logged, counted)."""
        while self._pending:
            batch = list(self._pending.items())
            before, self._writes = self._writes, self._writes + len(batch)
            prune = before // self.prune_every != self._writes // self.prune_every
            await self._run(self._upsert, batch, prune)
            for key, queued in batch:
                if self._pending.get(key) is queued:  # not put again meanwhile
                    del self._pending[key]

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            self._spell.failure(type(exc).__name__, error=str(exc), path=str(self.path),
                                effect="sessions are routed as if no pin were stored")
            metrics.record_dependency_error("affinity_store")
            return None
        self._spell.success()
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_S, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a pin lost in a power cut costs one re-derivation
            db.execute("BEGIN IMMEDIATE")  # one worker of the Pod creates (or replaces) the table
            if db.execute("PRAGMA user_version").fetchone()[0] < self.SCHEMA:
                db.execute("DROP TABLE IF EXISTS pins")  # pins without owners: dropped, as at a restart
                db.execute("CREATE TABLE pins (key TEXT PRIMARY KEY, model TEXT NOT NULL, category TEXT NOT NULL, "
                           "owner TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID")
                db.execute("CREATE INDEX pins_by_expiry ON pins (expires)")
                db.execute(f"PRAGMA user_version = {self.SCHEMA}")
            db.execute("COMMIT")
            self._db = db
        return self._db

    def _select(self, key: str, now: float) -> tuple[str, str, str] | None:
        row = self._connection().execute("SELECT model, category, owner FROM pins WHERE key = ? AND expires > ?",
                                         (key, now)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def _upsert(self, batch: list[tuple[str, tuple[Pin, float]]], prune: bool) -> None:
        db = self._connection()
        db.executemany("INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?, ?)",
                       [(key, pin.model, pin.category, pin.owner, now + self.ttl_s) for key, (pin, now) in batch])
        if prune:
            db.execute("DELETE FROM pins WHERE expires <= ?", (max(now for _, (_, now) in batch),))
            db.execute("DELETE FROM pins WHERE key IN (SELECT key FROM pins ORDER BY expires DESC LIMIT -1 OFFSET ?)",
                       (self.max_entries,))


def open_pins(cfg: AffinityConfig, runtime_dir: Path | None) -> PinStore:
    """Shared by the Pod's processes when the router has a runtime directory (workers always do), else in memory."""
    store: PinStore = SharedPins(runtime_dir / PINS_FILE) if runtime_dir is not None else MemoryPins()
    return store.configure(cfg)


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


# How sure a later turn of a conversation no earlier turn decided must be to decide it. Such a conversation was
# answered by the default category's model so far; a vague follow-up the domain head scores just over
# classifier.confidence_threshold ("Can you choose a different class?": math 0.24 in a D&D chat) pinned it to the
# reasoning model for good: 19 of 43 model changes in 360 ShareGPT TRAIN conversations (new-user trial, 2026-12-02).
# Chosen on TRAIN replays (offline/affinity_replay.py; offline/README.md, "Late pins").
LATE_CONFIDENCE = 0.5


def is_decisive(cfg: RouterConfig, category: str, confidence: float, later: bool) -> bool:
    """A turn decides its conversation's category when it names one: a keyword rule, or the classifier confident
    enough (`classifier.confidence_threshold`) in a category other than the default one. Greetings and small talk are
    the default category's by training ("hi": other, 0.82), so a conversation opened with "hello" is pinned by its
    first real question, never by the greeting. A `later` turn (one after the conversation's first user turn) must
    also reach LATE_CONFIDENCE: below it the turn is answered as the default category, like the turns before it."""
    return category != cfg.default_category and (not later or confidence >= LATE_CONFIDENCE)


def first_decisive(policy: Policy, turns: Sequence[tuple[str, Classification]]) -> tuple[str, str] | None:
    """(text, category) of the conversation's first decisive earlier user turn; None when none is (the latest turn's
    own decision then opens the conversation, if it is decisive). `turns`: the earlier user turns with what the
    guards' screen made of each (NO_SIGNAL where it stopped first: past its bound, or failing open); keyword rules
    first, else that classification. No pass of its own: the screen's bound is the request's."""
    limit = policy.cfg.classifier.max_scan_chars
    for n, (text, signal) in enumerate(turns):
        category, confidence = policy.category_for(bounded(text, limit), signal)
        if is_decisive(policy.cfg, category, confidence, later=n > 0):
            return text, category
    return None


CONVERSATION = "conversation"


def session_key(chat: ChatRequest, headers: Mapping[str, str], caller: str | None,
                cfg: AffinityConfig) -> str | None:
    """The key of a session the client names (a session header, the `user` field), from the first configured source
    the request carries; CONVERSATION when the conversation source comes first; None without any. `caller`: its
    identity (keys.Caller.identity): two callers never share a session, anonymous ones share theirs."""
    tenant = caller or ""
    for source in cfg.keys:
        if source == "header" and headers.get(cfg.header):
            return "h:" + _digest(tenant, headers[cfg.header])
        user = chat.body.get("user")
        if source == "user" and isinstance(user, str) and user:
            return "u:" + _digest(tenant, user)
        if source == CONVERSATION:
            return CONVERSATION
    return None


def conversation_key(chat: ChatRequest, caller: str, anchor: str) -> str:
    """The key of a conversation keyed by its content: the caller, the end user the app names in `user` (one API key
    serves all of an app's users: two whose chats opened alike shared a pin, so one's switch moved the other's
    model), the system prompt and its first decisive turn."""
    system = "\n".join(message_text(m) for m in chat.messages if m["role"] in ("system", "developer"))
    user = chat.body.get("user")
    return "c:" + _digest(caller, user if isinstance(user, str) else "", system, anchor)


def response_key(response_id: str) -> str:
    """The key of a Responses answer a model server may have stored: by its id alone, so that a call naming it finds
    its pin whoever calls, and one by another caller is refused (stored_response) rather than passed through."""
    return "r:" + _digest(response_id)


def response_owner(caller: str | None, response_id: str) -> str:
    """Who created a stored response, as its pin keeps it: a digest of the caller's identity (keys.Caller.identity;
    anonymous callers share ""), salted with the id, so that the store never holds an API key or a tenant's name."""
    return _digest(caller or "", response_id)


async def stored_response(store: PinStore | None, caller: str | None, response_id: str) -> Pin | None:
    """The pin of a stored response `caller` may read, delete, cancel or continue; None for an id this router holds no
    record of (created before it, through another Pod, its pin expired or dropped), which goes where it would without
    the id, whoever asks: refusing it locked owners out of their own conversations after an hour idle, a restart, or
    on any other Pod.

    An id recorded as created by another caller (or by an anonymous one, or by a caller with an identity for an
    anonymous one) is refused with OpenAI's 404 for an unknown id."""
    pin = await store.get(response_key(response_id)) if store is not None else None
    if pin is None or pin.owner == response_owner(caller, response_id):
        return pin
    metrics.record_stored_response_refused()
    raise ResponseNotFound(response_id)


def switches(cfg: RouterConfig, pin: Pin, decision: Decision) -> bool:
    """Whether this turn's own decision may move the conversation away from its pin."""
    pinned = cfg.category(pin.category)
    if pinned is not None and not pinned.sticky:
        return True
    if decision.category == pin.category or not is_decisive(cfg, decision.category, decision.confidence, later=False):
        return False  # the same category, or the default one (no signal to pick another)
    return decision.confidence >= cfg.affinity.switch_confidence  # the operator's bar, not LATE_CONFIDENCE


async def resolve(policy: Policy, store: PinStore, chat: ChatRequest, headers: Mapping[str, str],
                  decision: Decision, signal: Classification, caller: str | None,
                  turns: Sequence[tuple[str, Classification]], held: Pin | None = None) -> tuple[Decision, str]:
    """The decision for this turn of its conversation, and what affinity did (for x-vsr-affinity).

    `caller`: the client's identity (keys.Caller.identity: API key, tenant or user header), None for an anonymous
    client. Without one, a conversation keyed by its content is never read from nor written to the store: every
    anonymous client would share the pins, and the model one is routed to would tell it how others' conversations
    opened and moved. It is re-derived from its own history instead (the same answer on every replica, and nothing
    learnt from others).
    `turns`: the earlier user turns as the guards' screen read them (`first_decisive`).
    `held`: the pin of the stored response the request continues (`previous_response_id`, stored_response)."""
    if held is not None and held.model in policy.cfg.models:  # else a removed model: the turn's own decision
        return _continued(policy, decision, held, signal), STICKY
    key = session_key(chat, headers, caller, policy.cfg.affinity)
    if key is None:
        return decision, NONE
    if key != CONVERSATION:
        pin, how = await store.get(key), STICKY
        if pin is None:
            if (anchor := first_decisive(policy, turns)) is None:
                return await _open(policy, store, key, decision, signal, later=bool(turns))
            pin, how = _derived(policy, anchor[1], signal), REDERIVED
        return await _follow(policy, store, key, pin, how, decision, signal)
    anchor = first_decisive(policy, turns)
    if anchor is None:  # this turn opens the conversation (a first turn is its own conversation), or nothing does yet
        if not chat.has_user_turn:  # tool outputs alone (a Responses continuation of a response unknown here)
            return decision, NONE
        opening = conversation_key(chat, caller, chat.latest_user_text()) if caller is not None else None
        step = _after_tools(chat)
        if step and opening is not None and (pin := await store.get(opening)) is not None:
            # An agent's later step: the turn that opened the conversation, then tool calls and results. Each was
            # `new` (and counted so in vsr_affinity_total) though the pin it opened was there. A first turn alone
            # is routed on its own words, as ever, though another chat of the caller opened alike.
            return await _follow(policy, store, opening, pin, STICKY, decision, signal)
        opened, how = await _open(policy, store, opening, decision, signal, later=bool(turns))
        return opened, REDERIVED if how == NEW and step else how
    derived = _derived(policy, anchor[1], signal)
    if caller is None:
        return await _follow(policy, store, None, derived, REDERIVED, decision, signal)
    key = conversation_key(chat, caller, anchor[0])
    pin = await store.get(key)
    return await _follow(policy, store, key, pin or derived, STICKY if pin else REDERIVED, decision, signal)


def _after_tools(chat: ChatRequest) -> bool:
    """Tool results follow the latest user turn: a step of the conversation that turn opened (its pin followed; where
    this router holds none, an anonymous caller's or another replica's, re-derived from it, not new)."""
    return any(m["role"] in ("tool", "function") for m in chat.messages[chat.classified_index() + 1:])


def _continued(policy: Policy, decision: Decision, held: Pin, signal: Classification) -> Decision:
    """A `previous_response_id` continuation goes to the model that holds the response: only its server has the
    state. One that may not see this turn's PII refuses it (400): routing elsewhere would only earn a "response not
    found" from a model without the state, or an answer without the conversation."""
    pinned = policy.pinned(decision, held.model, held.category, signal)
    if pinned is not None:
        return pinned
    raise PIIViolation(f"This conversation's model '{held.model}', which holds the previous response, may not "
                       f"receive {pii_said(signal, policy.pii_refused([held.model], signal))}: remove it, or start a "
                       "new conversation without previous_response_id", param="previous_response_id", status=400,
                       category=held.category)


async def _follow(policy: Policy, store: PinStore, key: str | None, pin: Pin | None, how: str, decision: Decision,
                  signal: Classification) -> tuple[Decision, str]:
    """This turn on its conversation's pin unless it switches; only a decisive turn pins (or re-pins) a conversation.
    `key` None: nothing is stored (an anonymous conversation)."""
    if pin is not None and not switches(policy.cfg, pin, decision):
        pinned = policy.pinned(decision, pin.model, pin.category, signal)
        if pinned is not None:
            if key is not None:
                await store.put(key, pin)
            return pinned, how
        # only the PII rule moved it: the reason says so, else it reads like a switch on this turn's words
        decision = dataclasses.replace(decision, reason=f"{decision.reason}; left the conversation's model {pin.model}, "
                                                        f"which may not receive "
                                                        f"{pii_said(signal, policy.pii_refused([pin.model], signal))}")
    decisive = is_decisive(policy.cfg, decision.category, decision.confidence, later=True)
    if decisive and key is not None:
        await store.put(key, Pin(decision.model, decision.category))
    return decision, SWITCHED if pin is not None else NEW if decisive else NONE


async def _open(policy: Policy, store: PinStore, key: str | None, decision: Decision, signal: Classification,
                later: bool) -> tuple[Decision, str]:
    """A turn of a conversation no earlier turn decided: a decisive one opens it (pinned under `key`; None: not
    stored). A `later` turn that names another category too weakly to decide is answered as the default category, as
    the turns before it were: routed on its own, it moved the chat to another model for that turn alone."""
    if is_decisive(policy.cfg, decision.category, decision.confidence, later):
        if key is not None:
            await store.put(key, Pin(decision.model, decision.category))
        return decision, NEW
    default = policy.cfg.default_category
    if later and decision.category != default and (pin := _derived(policy, default, signal)) is not None \
            and (kept := policy.pinned(decision, pin.model, pin.category, signal)) is not None:
        return kept, STICKY
    return decision, NONE


def _derived(policy: Policy, category: str, signal: Classification) -> Pin | None:
    """The pin of a conversation whose first decisive turn is in `category`: the same on every replica."""
    allowed = policy.allowed_ranking(policy.cfg.category(category), signal.pii_possible)
    return Pin(allowed[0], category) if allowed else None
