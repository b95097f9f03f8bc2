"""The eval's routed figures: what a request of each true domain would have been served by."""

from __future__ import annotations

from pathlib import Path

from offline.evaluate import domain_report
from router.config import load_config
from router.policy import Policy
from router.signals import Classification

CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


def test_a_wrong_category_that_gets_the_same_model_and_reasoning_is_a_right_decision() -> None:
    """In the shipped config biology and health both go to gpt-oss-120b without reasoning, history and other both to
    qwen3-4b; math goes to gpt-oss-120b with reasoning. The category is wrong in 3 of 4 rows, the decision in 1."""
    predicted = {"cells": "health", "war": "other", "sum": "math", "poem": "math"}

    def classify(texts: list[str]) -> list[Classification]:
        return [Classification(category=predicted[t], confidence=0.99) for t in texts]

    report = domain_report(classify, ["cells", "war", "sum", "poem"], ["biology", "history", "math", "other"],
                           Policy(load_config(CONFIG)))
    assert report["routed_accuracy"] == 0.25
    assert report["routed_decision_accuracy"] == 0.75
