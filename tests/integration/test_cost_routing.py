"""Cost-aware choice through the real stack: the decision header says why, and the chain follows the order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from devstack.stack import Stack

MATH = "Prove the theorem that the sum of two even numbers is even."  # math: gpt-oss-120b 1.0, qwen3-4b 0.4


def test_the_cheaper_model_within_the_margin_answers_and_the_better_one_is_its_fallback(
        make_stack: Callable[..., Stack]) -> None:
    def margin(cfg: dict[str, Any]) -> None:
        next(c for c in cfg["categories"] if c["name"] == "math")["score_margin"] = 0.6

    stack = make_stack(margin)
    body = {"model": "auto", "messages": [{"role": "user", "content": MATH}]}
    r = httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=10)
    assert r.headers["x-vsr-selected-model"] == "qwen3-4b"
    assert r.headers["x-vsr-decision-reason"].startswith("cheapest within score_margin 0.60 of gpt-oss-120b")
    failed = httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=10,
                        headers={"x-demo-fault": "qwen3-4b=503"})
    assert failed.status_code == 200
    assert failed.headers["x-vsr-upstream-model"] == "gpt-oss-120b"
    assert failed.json()["x_demo"]["received"]["reasoning_effort"] == "high"
