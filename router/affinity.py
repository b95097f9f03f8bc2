"""Session affinity: a conversation keeps the model chosen for it while it continues.

Only the latest user turn is classified, so without this a follow-up such as "now commit it" in the
middle of a coding task would be routed on its own words, often to the small model. Here a request
that continues a conversation is routed where the conversation started, unless the operator's rule
lets the new turn switch it:

- **Key**: a session header, the OpenAI `user` field, or a fingerprint of the conversation (tenant,
  system prompt, first user turn), whichever of `affinity.keys` is present first.
- **Remembered**: key -> (model, category) in a TTL- and size-bounded LRU, per router process.
- **Re-derived without state**: when the LRU has no entry (another replica, a restart, an expired
  entry) and the request carries its history, the conversation's category is the category of its
  first user turn (keyword rules, else one more memoised classifier pass), so every replica reaches
  the same model without shared state. Only a *switch* lives in the LRU alone: after a switch, a
  request that reaches another replica goes back to the first turn's model, unless the load
  balancer keeps sessions on one replica (e.g. hash on the session header) or the LRU is shared.
- **Responses state**: a Responses request that continues `previous_response_id` goes to the model
  that produced that response (its server holds the state), remembered when the answer passed.
- **Switch**: the pinned category is not `sticky`, the new turn's own category signal reaches
  `affinity.switch_confidence` (keyword rules count as 1.0), or the pinned model may not see the
  PII detected in this turn.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from router.config import AffinityConfig, RouterConfig
from router.openai_wire import ChatRequest, message_text
from router.policy import Decision, Policy
from router.signals import Classification

# What `x-vsr-affinity` reports.
NEW, STICKY, SWITCHED, REDERIVED = "new", "sticky", "switched", "rederived"


@dataclass(frozen=True, slots=True)
class Pin:
    model: str
    category: str


class AffinityStore:
    """A TTL- and size-bounded LRU of session key -> Pin; one per router process, kept across reloads."""

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, Pin]] = OrderedDict()

    def configure(self, cfg: AffinityConfig) -> AffinityStore:
        self.max_entries, self.ttl_s = cfg.max_entries, cfg.ttl_s
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return self

    def get(self, key: str, now: float | None = None) -> Pin | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, pin = found
        if expires <= (time.monotonic() if now is None else now):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return pin

    def put(self, key: str, pin: Pin, now: float | None = None) -> None:
        self._entries[key] = ((time.monotonic() if now is None else now) + self.ttl_s, pin)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


def first_user_text(chat: ChatRequest) -> str | None:
    """The conversation's anchor: its first user turn."""
    return next((message_text(m) for m in chat.messages if m["role"] == "user"), None)


def is_continuation(chat: ChatRequest) -> bool:
    """A request that carries earlier turns: an assistant message before its last user turn."""
    return any(m["role"] == "assistant" for m in chat.messages)


def _tenant(headers: Mapping[str, str]) -> str:
    """Two API keys never share a session: OpenAI clients send theirs as `authorization`, Anthropic's as `x-api-key`."""
    return _digest(headers.get("authorization", ""), headers.get("x-api-key", ""))


def session_key(chat: ChatRequest, headers: Mapping[str, str], cfg: AffinityConfig) -> str | None:
    """The key of the conversation, from the first configured source the request carries."""
    tenant = _tenant(headers)
    for source in cfg.keys:
        if source == "header" and headers.get(cfg.header):
            return "h:" + _digest(tenant, headers[cfg.header])
        user = chat.body.get("user")
        if source == "user" and isinstance(user, str) and user:
            return "u:" + _digest(tenant, user)
        if source == "conversation":
            anchor = first_user_text(chat)
            if anchor is not None:
                system = "\n".join(message_text(m) for m in chat.messages if m["role"] in ("system", "developer"))
                return "c:" + _digest(tenant, system, anchor)
    return None


def response_key(headers: Mapping[str, str], response_id: str) -> str:
    """The key of a Responses answer, continued later with `previous_response_id`."""
    return "r:" + _digest(_tenant(headers), response_id)


def switches(cfg: RouterConfig, pin: Pin, decision: Decision) -> bool:
    """Whether this turn's own decision may move the conversation away from its pin."""
    pinned = cfg.category(pin.category)
    if pinned is not None and not pinned.sticky:
        return True
    if decision.category in (pin.category, cfg.default_category):
        return False  # the same category, or no signal strong enough to pick one
    return decision.confidence >= cfg.affinity.switch_confidence


async def resolve(policy: Policy, store: AffinityStore, chat: ChatRequest, headers: Mapping[str, str],
                  decision: Decision, pii: frozenset[str],
                  classify: Callable[[str], Awaitable[Classification]]) -> tuple[Decision, str]:
    """The decision for this turn of its conversation, and what affinity did (for x-vsr-affinity)."""
    cfg = policy.cfg
    previous = chat.body.get("previous_response_id")
    if isinstance(previous, str) and (held := store.get(response_key(headers, previous))) is not None:
        pinned = policy.pinned(decision, held.model, held.category, pii)  # only its server has the state
        if pinned is not None:
            return pinned, STICKY
    key = session_key(chat, headers, cfg.affinity)
    if key is None:
        return decision, NEW
    if key.startswith("c:") and not is_continuation(chat):  # a first turn starts its own conversation
        store.put(key, Pin(decision.model, decision.category))
        return decision, NEW
    pin, how = store.get(key), STICKY
    if pin is None and is_continuation(chat):
        pin, how = await _rederive(policy, chat, pii, classify), REDERIVED
    if pin is not None and not switches(cfg, pin, decision):
        pinned = policy.pinned(decision, pin.model, pin.category, pii)
        if pinned is not None:
            store.put(key, pin)
            return pinned, how
    store.put(key, Pin(decision.model, decision.category))
    return decision, (SWITCHED if pin is not None else NEW)


async def _rederive(policy: Policy, chat: ChatRequest, pii: frozenset[str],
                    classify: Callable[[str], Awaitable[Classification]]) -> Pin | None:
    """The conversation's pin from its first user turn alone: the same on every replica."""
    anchor = first_user_text(chat)
    if anchor is None:
        return None
    signal = await classify(anchor) if policy.keyword_category(anchor) is None else Classification(None, 0.0)
    category, _ = policy.category_for(anchor, signal)
    allowed = policy.allowed_ranking(policy.cfg.category(category), pii)
    return Pin(allowed[0], category) if allowed else None
