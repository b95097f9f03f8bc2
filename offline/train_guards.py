"""Fit the jailbreak and content-safety heads with real chat as negatives (`python -m offline.train GUARD`).

Build venv (torch for fitting); features are the runtime int8 encoder's sentence embeddings (frozen encoder,
var/features cache). Each head's operating threshold is chosen on dev (guard_data.DEV_BUDGETS) and baked into
its output bias so that p = 0.5 is the operating point, as the router's default thresholds expect. Writes
router/classifier/heads/{jailbreak,content_safety}.npz and the guards' entries in heads/training.json.
"""

from __future__ import annotations

import json
import math

import numpy as np

from offline.chat_data import DEV, TRAIN
from offline.features import embed
from offline.guard_data import (
    APART,
    COMPLAINT,
    EDGY,
    LABELS,
    REAL_CHAT,
    choose_threshold,
    guard_splits,
    is_group,
    support_rows,
)
from offline.train import fit_mlp
from offline.train_data import Example
from router.classifier.encoder import Encoder
from router.classifier.heads import HEADS_DIR, MLPHead
from router.classifier.injection_rules import injection_score


def guard_scores(guard: str, head: MLPHead, encoder: Encoder, examples: list[Example]) -> np.ndarray:
    """What the router compares with the threshold: the head's positive probability (jailbreak: max with the rules)."""
    return with_rules(guard, head.probabilities(embed(encoder, [e.text for e in examples], pooled=True))[:, 1],
                      examples)


def with_rules(guard: str, scores: np.ndarray, examples: list[Example]) -> np.ndarray:
    """The router's jailbreak score is the larger of the model's and the exact injection rules'."""
    return np.maximum(scores, [injection_score(e.text) for e in examples]) if guard == "jailbreak" else scores


def log_odds(threshold: float) -> float:
    """The logit at which a probability equals `threshold` (kept off 0 and 1): what a shift to 0.5 subtracts."""
    threshold = min(max(threshold, 1e-6), 1 - 1e-6)
    return math.log(threshold / (1 - threshold))


def shift_to_half(head: MLPHead, threshold: float) -> MLPHead:
    """Move the positive logit so that p == 0.5 exactly where p was `threshold` (binary softmax heads)."""
    bias = head.biases[-1].copy()
    bias[1] -= log_odds(threshold)
    return MLPHead(head.labels, head.mean, head.scale, head.weights, (*head.biases[:-1], bias))


def dev_groups(guard: str, head: MLPHead, encoder: Encoder, dev: list[Example]) -> dict[str, np.ndarray]:
    """Dev scores of the benign groups the thresholds are held to (real chat, support asks, risky-sounding asks)."""
    benign = [e for e in dev if e.label == LABELS[guard][0]]
    scores = guard_scores(guard, head, encoder, benign)
    return {
        "real_chat": scores[is_group(benign, REAL_CHAT)],
        "support": guard_scores(guard, head, encoder, support_rows(DEV)),
        EDGY: scores[is_group(benign, (EDGY,))],
        COMPLAINT: scores[is_group(benign, (COMPLAINT,))],
    }


def dev_recall(scores: np.ndarray, positives: list[Example]) -> dict:
    """Recall at the operating point per dev source and their mean, the figure variants are chosen by. Pooled
    recall would be 81% one source (content safety: 247 of 304 dev rows are Do-Not-Answer information-hazard
    asks), so a gain on the others would not show; the held-out test is another source again. Sources in APART are
    listed, not averaged."""
    by_source = {
        group: round(float((scores[is_group(positives, (group,))] >= 0.5).mean()), 4)
        for group in sorted({e.group for e in positives})
    }
    mean = np.mean([recall for group, recall in by_source.items() if group not in APART])
    return {"mean_over_sources": round(float(mean), 4), "by_source": by_source}


def train_guard(guard: str, encoder: Encoder) -> dict:
    labels = LABELS[guard]
    splits = guard_splits(guard)
    train = splits[TRAIN]
    y = np.array([labels.index(e.label) for e in train])
    # Two members of 192 units: the 768-wide input costs the same multiply-adds per request as the old
    # 384-wide input with 3 x 256 units (classify p50 at 12 words +0.18 ms with 3 x 256 on pooled features).
    head = fit_mlp(embed(encoder, [e.text for e in train], pooled=True), y, labels, hidden=192, seeds=2)
    train_rows = {label: int((y == i).sum()) for i, label in enumerate(labels)}
    return set_operating_point(guard, head, encoder, splits[DEV], {"train_rows": train_rows})


def rethreshold_guard(guard: str, encoder: Encoder) -> dict:
    """Keep the shipped head's weights and re-choose only its operating point on dev: what a change of the dev
    budgets needs (2026-12-01: the edgy group; a retrain on the same data fell to 0 dev recall at its budget)."""
    head = MLPHead.load(HEADS_DIR / f"{guard}.npz")
    return set_operating_point(guard, head, encoder, guard_splits(guard)[DEV], {"weights": "shipped head kept"})


def set_operating_point(guard: str, head: MLPHead, encoder: Encoder, dev: list[Example], report: dict) -> dict:
    """Choose the threshold on dev (DEV_BUDGETS), bake it into the bias, save the head, report the dev figures."""
    threshold = choose_threshold(dev_groups(guard, head, encoder, dev))
    # The rules' fixed score must stay above the operating point, or a lowered head threshold would hide them.
    head = shift_to_half(head, threshold)
    head.save(HEADS_DIR / f"{guard}.npz")
    positives = [e for e in dev if e.label == LABELS[guard][1]]
    scores = guard_scores(guard, head, encoder, positives)
    groups = dev_groups(guard, head, encoder, dev)
    report = report | {
        "threshold_before_shift": round(threshold, 6),
        "dev_recall": dev_recall(scores, positives),
        "dev_recall_pooled": round(float((scores >= 0.5).mean()), 4),
        "dev_false_block": {g: round(float((s >= 0.5).mean()), 5) for g, s in groups.items()},
        "dev_rows": {"positive": len(positives), **{g: len(s) for g, s in groups.items()}},
    }
    print(guard, json.dumps(report), flush=True)
    return report
