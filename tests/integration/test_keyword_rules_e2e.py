"""An operator's keyword regex through the real Envoy and router, with the official openai SDK: whatever the pattern,
a client's prompt cannot hold the router (trial 13, 2026-12-02).

Under Python's backtracking `re`, `(a+)+$` held the worker 5.3 s on the prompt below: Envoy answered it 503 past
`envoy.message_timeout_ms`, and so were the worker's other requests meanwhile. RE2 matches in time linear in the prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from devstack.stack import Stack

API_KEY = "sk-keyword-rules"
ADVERSARIAL = "aaaaaaaaaaaaaaaaaaaaaaaaa!"  # the trial's 25 characters: each `a` more doubled the old match time
ORDINARY = "Who won the battle of Hastings?"


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    def overrides(cfg: dict[str, Any]) -> None:
        cfg["keyword_rules"].append({"category": "history", "regex": ["(a+)+$"]})

    return make_stack(overrides)


def _ask(oai: openai.OpenAI, text: str) -> tuple[int, str | None]:
    """The status and selected category of one request; a refusal is an answer here, not an exception."""
    try:
        raw = oai.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    except openai.APIStatusError as exc:
        return exc.status_code, None
    return raw.http_response.status_code, raw.headers.get("x-vsr-selected-category")


def test_a_backtracking_rule_lets_an_adversarial_prompt_and_an_ordinary_one_both_be_answered(oai: openai.OpenAI) -> None:
    with ThreadPoolExecutor(2) as pool:
        hostile, ordinary = pool.map(lambda text: _ask(oai, text), [ADVERSARIAL, ORDINARY])
    assert (hostile[0], ordinary[0]) == (200, 200)
    assert hostile[1] != "history"  # it ends in '!': the rule does not match
    assert _ask(oai, "aaaa") == (200, "history")  # the rule still routes what it matches


@pytest.mark.parametrize(("text", "category", "model"), [
    # Issue 10: coding asks the domain head sent to `other` (qwen3-4b, no reasoning); the shipped rule takes them.
    ("How do I convert a pandas dataframe column to datetime?", "computer science", "gpt-oss-120b"),
    ("Write a bash script that renames all .txt files in a folder", "computer science", "gpt-oss-120b"),
    # A language's everyday sense is no code word (this stack runs no classifier: unruled text is `other`).
    ("Is java from Indonesia a good coffee for espresso?", "other", "qwen3-4b"),
])
def test_the_shipped_rule_sends_coding_asks_to_the_reasoning_model(oai: openai.OpenAI, text: str, category: str,
                                                                   model: str) -> None:
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    demo = raw.parse().model_extra["x_demo"]
    assert raw.headers["x-vsr-selected-category"] == category
    assert demo["upstream"] == model == raw.headers["x-vsr-selected-model"]
    assert demo["received"].get("reasoning_effort") == ("high" if model == "gpt-oss-120b" else None)
