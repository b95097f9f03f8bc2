"""Cost-aware choice: among models that score about the same for a category, the cheapest answers.

A category's `model_scores` say how well each model serves it. With `routing.score_margin` (or the
category's own `score_margin`) above zero, every allowed model whose score is within the margin of
the best allowed score is "good enough", and the cheapest of them by `pricing` (prompt + completion
price per 1M tokens) goes first; the others follow in score order, so the fallback chain still
tries the better models next. Ties in price keep the score order. A margin of 0 keeps pure score order,
with price breaking exact score ties.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config import Category, RouterConfig


@dataclass(frozen=True, slots=True)
class Ranked:
    """Models in the order to try them, and why the first one leads (the x-vsr-decision-reason header)."""

    models: list[str]
    reason: str


def price(cfg: RouterConfig, model: str) -> float:
    p = cfg.models[model].pricing
    return p.prompt_per_1m + p.completion_per_1m


def margin(cfg: RouterConfig, cat: Category | None) -> float:
    if cat is not None and cat.score_margin is not None:
        return cat.score_margin
    return cfg.routing.score_margin


def order(cfg: RouterConfig, cat: Category | None, allowed: list[str]) -> Ranked:
    """`allowed` (score order, best first) reordered so the cheapest good-enough model leads."""
    if not allowed:
        return Ranked([], "no allowed model")
    scores = {s.model: s.score for s in cat.model_scores} if cat else {}
    if not scores:
        return Ranked(allowed, "default model")
    best = allowed[0]
    within = margin(cfg, cat)
    good = [m for m in allowed if scores.get(m, 0.0) >= scores.get(best, 0.0) - within - 1e-9]
    cheapest = min(good, key=lambda m: (price(cfg, m), allowed.index(m)))
    if cheapest == best:
        return Ranked(allowed, f"best score {scores.get(best, 0.0):.2f}")
    reason = (f"cheapest within score_margin {within:.2f} of {best} ({scores[best]:.2f}): "
              f"score {scores.get(cheapest, 0.0):.2f}, price {price(cfg, cheapest):.2f} vs "
              f"{price(cfg, best):.2f} per 1M tokens in+out")
    return Ranked([cheapest, *[m for m in allowed if m != cheapest]], reason)
