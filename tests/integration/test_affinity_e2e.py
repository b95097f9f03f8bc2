"""Session affinity through the real stack: a conversation stays on its first model while it continues.

The classifier is off here, so short follow-ups have no category of their own (the default one,
which the small model serves); keyword rules are the strong signals that may switch a conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.stack import Stack

BIG, SMALL = "gpt-oss-120b", "qwen3-4b"
OPENING = "Prove the theorem that the sum of two even numbers is even."  # keyword rule -> math -> BIG
FOLLOW_UPS = ["ok", "and then?", "shorter please", "why?", "go on", "thanks, continue", "again", "one more"]
SWITCH = "Now tell me about Napoleon."  # keyword rule -> history -> SMALL, confidence 1.0


def _rules(cfg: dict[str, Any]) -> None:
    cfg["keyword_rules"].append({"category": "history", "keywords": ["napoleon"]})


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(_rules)


class Conversation:
    def __init__(self, stack: Stack, system: str = "You are terse.", headers: dict[str, str] | None = None):
        self.stack = stack
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}]
        self.headers = headers or {}

    def say(self, text: str, history: bool = True) -> httpx.Response:
        self.messages.append({"role": "user", "content": text})
        body = {"model": "auto", "messages": self.messages if history else self.messages[-1:]}
        r = httpx.post(f"{self.stack.base_url}/chat/completions", json=body, headers=self.headers, timeout=10)
        assert r.status_code == 200, r.text
        self.messages.append({"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]})
        return r


def test_a_ten_turn_conversation_of_short_follow_ups_stays_on_its_first_model(stack: Stack) -> None:
    talk = Conversation(stack, system="You are a math tutor.")
    first = talk.say(OPENING)
    assert first.headers["x-vsr-selected-model"] == BIG
    assert first.headers["x-vsr-affinity"] == "new"
    for text in FOLLOW_UPS[:8]:
        r = talk.say(text)
        assert r.headers["x-vsr-selected-model"] == BIG, text
        assert r.headers["x-vsr-affinity"] == "sticky"
        assert r.headers["x-vsr-selected-category"] == "math"  # reasoning stays on for the conversation
        assert r.json()["x_demo"]["received"]["reasoning_effort"] == "high"
    tenth = talk.say(SWITCH)  # the operator's rule: a keyword-strength signal moves the conversation
    assert tenth.headers["x-vsr-selected-model"] == SMALL
    assert tenth.headers["x-vsr-affinity"] == "switched"
    after = talk.say("go on")
    assert (after.headers["x-vsr-selected-model"], after.headers["x-vsr-affinity"]) == (SMALL, "sticky")


def test_the_same_follow_up_without_history_goes_by_its_own_words(stack: Stack) -> None:
    r = Conversation(stack).say("go on")
    assert r.headers["x-vsr-selected-model"] == SMALL
    assert r.headers["x-vsr-affinity"] == "new"


def test_a_session_header_keeps_the_model_when_only_the_latest_turn_is_sent(stack: Stack) -> None:
    talk = Conversation(stack, headers={"x-session-id": "ticket-7"})
    assert talk.say(OPENING, history=False).headers["x-vsr-selected-model"] == BIG
    r = talk.say("and then?", history=False)
    assert (r.headers["x-vsr-selected-model"], r.headers["x-vsr-affinity"]) == (BIG, "sticky")


def test_a_restarted_router_rederives_the_conversation_from_its_first_turn(stack: Stack) -> None:
    talk = Conversation(stack, system="Another tutor.")
    talk.say(OPENING)
    talk.say("ok")
    stack.stop_router()
    stack.start_router()  # its LRU is empty: the conversation itself says where it belongs
    r = talk.say("and then?")
    assert (r.headers["x-vsr-selected-model"], r.headers["x-vsr-affinity"]) == (BIG, "rederived")
    assert talk.say("go on").headers["x-vsr-affinity"] == "sticky"


def test_a_category_that_is_not_sticky_routes_every_turn_on_its_own(make_stack: Callable[..., Stack]) -> None:
    def not_sticky(cfg: dict[str, Any]) -> None:
        next(c for c in cfg["categories"] if c["name"] == "math")["sticky"] = False

    talk = Conversation(make_stack(not_sticky))
    assert talk.say(OPENING).headers["x-vsr-selected-model"] == BIG
    assert talk.say("ok").headers["x-vsr-selected-model"] == SMALL
