"""Session affinity: keys, the bounded store, the switch rule and stateless re-derivation."""

from __future__ import annotations

import json
from typing import Any

from devstack.stack import ROOT
from router.affinity import AffinityStore, Pin, resolve, response_key, session_key, switches
from router.config import AffinityConfig, load_config, parse_config
from router.openai_wire import parse_chat_request
from router.policy import Policy
from router.signals import NO_SIGNAL, Classification

CFG = load_config(ROOT / "config" / "config.yaml")
BIG, SMALL = "gpt-oss-120b", "qwen3-4b"


def _chat(*turns: str, user: str | None = None, system: str = "sys"):  # type: ignore[no-untyped-def]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    body: dict[str, Any] = {"model": "auto", "messages": messages}
    if user:
        body["user"] = user
    return parse_chat_request(json.dumps(body).encode())


def test_store_is_bounded_in_size_and_time() -> None:
    store = AffinityStore(max_entries=2, ttl_s=10)
    store.put("a", Pin(BIG, "math"), now=0)
    store.put("b", Pin(SMALL, "other"), now=0)
    assert store.get("a", now=1) == Pin(BIG, "math")  # refreshes a: b is now the oldest
    store.put("c", Pin(SMALL, "other"), now=1)
    assert store.get("b", now=1) is None and len(store) == 2
    assert store.get("a", now=11) is None  # expired


def test_keys_come_from_the_first_configured_source_and_never_cross_api_keys() -> None:
    cfg = AffinityConfig(keys=["header", "user", "conversation"])
    chat = _chat("hello", user="alice")
    assert session_key(chat, {"x-session-id": "s1"}, cfg).startswith("h:")  # type: ignore[union-attr]
    assert session_key(chat, {}, cfg).startswith("u:")  # type: ignore[union-attr]
    conv = session_key(_chat("hello", "hi", "more"), {}, AffinityConfig())
    assert conv == session_key(_chat("hello"), {}, AffinityConfig())  # same anchor, any later turn
    assert conv != session_key(_chat("hello"), {"authorization": "Bearer other"}, AffinityConfig())
    assert conv != session_key(_chat("hello", system="other"), {}, AffinityConfig())


def test_anthropic_api_keys_never_share_a_session_or_a_stored_response() -> None:
    """Messages clients send `x-api-key`, not `authorization`: every one of them had the empty key's sessions, so one
    could move another's conversation (same x-session-id, or same system prompt and first turn) to another model."""
    cfg = AffinityConfig(keys=["header", "conversation"])
    for headers in ({"x-session-id": "s1"}, {}):
        a = session_key(_chat("hello"), {**headers, "x-api-key": "sk-ant-a"}, cfg)
        assert a != session_key(_chat("hello"), {**headers, "x-api-key": "sk-ant-b"}, cfg)
    assert response_key({"x-api-key": "sk-ant-a"}, "resp_1") != response_key({"x-api-key": "sk-ant-b"}, "resp_1")


def test_only_a_strong_signal_for_another_category_switches() -> None:
    policy = Policy(CFG)
    pin = Pin(BIG, "math")
    weak = policy.decide(_chat("x"), Classification("history", 0.6))
    strong = policy.decide(_chat("x"), Classification("history", 0.95))
    default = policy.decide(_chat("x"), NO_SIGNAL)
    assert not switches(CFG, pin, weak)
    assert switches(CFG, pin, strong)
    assert not switches(CFG, pin, default)


async def test_a_continuation_without_a_stored_pin_is_rederived_from_its_first_turn() -> None:
    policy, store = Policy(CFG), AffinityStore()
    chat = _chat("prove that 2 is prime", "It is.", "ok")
    decision = policy.decide(chat, NO_SIGNAL)
    assert decision.model == SMALL  # "ok" alone
    calls: list[str] = []

    async def classify(text: str) -> Classification:
        calls.append(text)
        return NO_SIGNAL

    out, how = await resolve(policy, store, chat, {}, decision, frozenset(), classify)
    assert (out.model, out.category, out.reasoning, how) == (BIG, "math", True, "rederived")
    assert out.chain == (BIG, SMALL)
    assert calls == []  # the first turn matched a keyword rule: no classifier pass needed


async def test_a_pinned_model_the_pii_forbids_is_left_for_an_allowed_one() -> None:
    policy, store = Policy(CFG), AffinityStore()
    chat = _chat("prove that 2 is prime", "It is.", "my card is 4111 1111 1111 1111")
    store.put(session_key(chat, {}, CFG.affinity) or "", Pin(BIG, "math"))
    decision = policy.decide(chat, NO_SIGNAL)

    async def classify(text: str) -> Classification:
        return NO_SIGNAL

    out, how = await resolve(policy, store, chat, {}, decision, frozenset({"CREDIT_CARD"}), classify)
    assert out.model == SMALL and how == "switched"


def test_affinity_keys_are_validated() -> None:
    raw = CFG.model_dump(exclude_none=True)
    raw["affinity"] = {"keys": ["cookie"]}
    try:
        parse_config(raw)
    except Exception as exc:  # noqa: BLE001 - ConfigError names the path
        assert "affinity.keys.0" in str(exc)
    else:
        raise AssertionError("an unknown key source must be rejected")
