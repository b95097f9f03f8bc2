"""Session affinity: keys, the bounded store, the switch rule and stateless re-derivation."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import ROOT
from router.affinity import (
    MemoryPins,
    Pin,
    PinStore,
    SharedPins,
    open_pins,
    resolve,
    response_key,
    session_key,
    switches,
)
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


STORES: dict[str, Callable[[Path], PinStore]] = {
    "memory": lambda _: MemoryPins(),
    "shared": lambda tmp: SharedPins(tmp / "pins.sqlite3"),
}


@pytest.mark.parametrize("kind", STORES)
async def test_every_pin_store_is_bounded_in_size_and_time(tmp_path: Path, kind: str) -> None:
    """The conformance cases every PinStore passes: overwrite, expiry `ttl_s` after the last write, and the
    oldest written going first past `max_entries`."""
    store = STORES[kind](tmp_path).configure(AffinityConfig(max_entries=3, ttl_s=10))
    assert await store.get("a", now=0) is None
    await store.put("a", Pin(BIG, "math"), now=0)
    await store.put("a", Pin(SMALL, "other"), now=1)
    assert await store.get("a", now=2) == Pin(SMALL, "other")
    assert await store.get("a", now=11) is None  # expired 10 s after its last write
    for i in range(10):
        await store.put(f"k{i}", Pin(BIG, str(i)), now=20 + i)
    await store.flush()  # bounds apply to what is stored
    assert [await store.get(f"k{i}", now=30) for i in range(10)] == [None] * 7 + [Pin(BIG, str(i)) for i in (7, 8, 9)]


def _pin_in_another_process(directory: str) -> None:
    import asyncio

    async def pin() -> None:
        store = open_pins(AffinityConfig(), Path(directory))
        await store.put("h:session", Pin(BIG, "math"))
        await store.flush()  # written behind the request; a graceful exit flushes (Runtime.close)

    asyncio.run(pin())


async def test_shared_pins_are_seen_by_every_process_of_the_pod(tmp_path: Path) -> None:
    """Trial 4: with two workers, pins lived in each worker's memory and 10 of 40 sessions moved model."""
    process = multiprocessing.get_context("spawn").Process(target=_pin_in_another_process, args=(str(tmp_path),))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert await open_pins(AffinityConfig(), tmp_path).get("h:session") == Pin(BIG, "math")
    assert await open_pins(AffinityConfig(), None).get("h:session") is None  # no runtime directory: this process's


async def test_a_failing_pin_store_routes_as_if_no_pin_were_stored(tmp_path: Path) -> None:
    from router.observability.metrics import REGISTRY

    def errors() -> float:
        return REGISTRY.get_sample_value("vsr_dependency_errors_total", {"dependency": "affinity_store"}) or 0.0

    (tmp_path / "not-a-dir").write_text("")
    store, before = SharedPins(tmp_path / "not-a-dir" / "pins.sqlite3"), errors()
    await store.put("a", Pin(BIG, "math"))
    await store.flush()
    assert await store.get("a") is None
    assert errors() == before + 2


async def test_a_pin_is_written_behind_the_request_through_a_bounded_queue(tmp_path: Path) -> None:
    """Each first turn awaited its pin's SQLite write (up to the 50 ms busy timeout while another worker held the
    lock). Now `put` returns at once, even while the store's thread is stuck, this process reads the queued pin, and
    another worker finds it once written; past MAX_PENDING queued keys a new pin is dropped and counted."""
    import asyncio
    import threading

    from router.observability.metrics import REGISTRY

    def errors() -> float:
        return REGISTRY.get_sample_value("vsr_dependency_errors_total", {"dependency": "affinity_store"}) or 0.0

    store, stuck = SharedPins(tmp_path / "pins.sqlite3"), threading.Event()
    store.MAX_PENDING = 3
    blocked = asyncio.get_running_loop().run_in_executor(store._thread, stuck.wait)  # a lock held by another worker
    before = errors()
    try:
        for i in range(4):
            put = asyncio.ensure_future(store.put(f"h:{i}", Pin(BIG, "math")))
            for _ in range(10):  # loop turns, no clock: a put that waits for the thread never completes here
                await asyncio.sleep(0)
            assert put.done()
        assert await store.get("h:0") == Pin(BIG, "math")  # read from the queue
        assert errors() == before + 1  # the fourth key found the queue full
    finally:
        stuck.set()
    await blocked
    await store.flush()
    other = SharedPins(tmp_path / "pins.sqlite3")  # another worker of the Pod
    assert [await other.get(f"h:{i}") for i in range(4)] == [Pin(BIG, "math")] * 3 + [None]


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
    policy, store = Policy(CFG), MemoryPins()
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
    policy, store = Policy(CFG), MemoryPins()
    chat = _chat("prove that 2 is prime", "It is.", "my card is 4111 1111 1111 1111")
    await store.put(session_key(chat, {}, CFG.affinity) or "", Pin(BIG, "math"))
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
