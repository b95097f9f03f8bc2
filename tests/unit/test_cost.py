"""Cost-aware choice: the cheapest model within the score margin of the best allowed one goes first."""

from __future__ import annotations

import json
from typing import Any

from devstack.stack import ROOT
from router.config import load_config, parse_config
from router.openai_wire import parse_chat_request
from router.policy import Policy
from router.resilience import all_chains
from router.signals import Classification, PIIFinding

CFG = load_config(ROOT / "config" / "config.yaml")
BIG, SMALL, MID = "gpt-oss-120b", "qwen3-4b", "mid-30b"


def _policy(margin: float = 0.0, **category: Any) -> Policy:
    raw = CFG.model_dump(exclude_none=True)
    raw["routing"] = {"score_margin": margin}
    raw["models"][MID] = {"endpoints": [{"port": 9000}], "pricing": {"prompt_per_1m": 0.2, "completion_per_1m": 0.8},
                          "pii_policy": {"allow_by_default": False}}
    raw["categories"][0] = {"name": "math", "model_scores": [
        {"model": BIG, "score": 1.0}, {"model": MID, "score": 0.9}, {"model": SMALL, "score": 0.7}], **category}
    return Policy(parse_config(raw))


def _decide(policy: Policy, pii: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    chat = parse_chat_request(json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x"}]}).encode())
    return policy.decide(chat, Classification("math", 0.9, pii=tuple(PIIFinding(t, 0, 1, 1.0) for t in pii)))


def test_no_margin_is_pure_score_order() -> None:
    d = _decide(_policy(0.0))
    assert d.model == BIG and d.reason == "best score 1.00"


def test_the_cheapest_good_enough_model_wins_and_the_chain_keeps_score_order() -> None:
    d = _decide(_policy(0.15))  # MID (0.9) is within 0.15 of BIG (1.0) and cheaper; SMALL (0.7) is not
    assert d.model == MID
    assert d.chain == (MID, BIG)
    assert d.reason.startswith(f"cheapest within score_margin 0.15 of {BIG} (1.00): score 0.90")
    assert _decide(_policy(0.35)).model == SMALL  # now SMALL is good enough too, and cheapest


def test_a_category_margin_overrides_the_global_one() -> None:
    assert _decide(_policy(0.0, score_margin=0.35)).model == SMALL
    assert _decide(_policy(0.35, score_margin=0.0)).model == BIG


def test_the_margin_is_measured_from_the_best_model_the_request_may_reach() -> None:
    d = _decide(_policy(0.15), pii=("CREDIT_CARD",))  # BIG and MID may not see it: SMALL is the best allowed
    assert d.model == SMALL and d.chain == (SMALL,)


def test_envoy_gets_every_cost_ordered_chain() -> None:
    policy = _policy(0.15)
    assert (MID, BIG) in all_chains(policy)
