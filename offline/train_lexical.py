"""Fit the lexical guard scores and choose how they join the heads on dev: `python -m offline.train_lexical`.

Build venv (torch). For each guard: a logistic regression over router.classifier.lexical's hashed wordpiece
unigrams + bigrams, trained on exactly the rows the guard head trains on (guard_data.guard_splits TRAIN), with an
L2 penalty; buckets seen in fewer than MIN_DF training rows are zeroed (one-off strings of a single source are
memorised, not learnt). The shipped head is not retrained: the guard score becomes sigmoid(head logit + mix *
lexical logit + offset), each variant's threshold chosen on dev with guard_data.choose_threshold at DEV_BUDGETS
and baked into offset. Variants (L2 x mix) are compared by train_guards.dev_recall's mean over dev sources;
the best is written to heads/{guard}_lexical.npz only if it beats SHIP_BAR (the shipped head's dev mean plus
the same-data retrain seed spread, offline/README.md), else the dev table is all this run leaves.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from offline.build import sha256_file
from offline.chat_data import DEV, TRAIN
from offline.features import embed
from offline.guard_data import (
    COMPLAINT,
    DEV_BUDGETS,
    EDGY,
    LABELS,
    REAL_CHAT,
    choose_threshold,
    guard_splits,
    is_group,
    support_rows,
)
from offline.train import MODEL_DIR
from offline.train_data import Example
from offline.train_guards import dev_recall, log_odds, with_rules
from router.classifier.encoder import Encoder
from router.classifier.heads import HEADS_DIR, MLPHead
from router.classifier.lexical import BUCKET_BITS, LexicalScore, hashed_ngrams

MIN_DF = 2
L2 = (1e-5, 1e-4, 1e-3)
MIXES = (0.25, 0.5, 1.0)
# Stated before any lexical result: a variant ships only if its dev mean over sources exceeds the highest
# same-data retrain of the shipped head (content safety 0.228 -> 0.252-0.269; jailbreak 0.507 / 0.525).
SHIP_BAR = {"jailbreak": 0.525, "content_safety": 0.269}


@dataclass(frozen=True)
class Bags:
    """Rows of hashed n-grams in torch.nn.EmbeddingBag's flat form."""

    buckets: torch.Tensor
    offsets: torch.Tensor
    values: torch.Tensor

    @classmethod
    def of(cls, ids: list[np.ndarray], keep: np.ndarray | None = None) -> Bags:
        rows = [hashed_ngrams(i) for i in ids]
        if keep is not None:
            rows = [(b[keep[b]], v[keep[b]]) for b, v in rows]
        lengths = np.array([len(b) for b, _ in rows])
        return cls(
            torch.tensor(np.concatenate([b for b, _ in rows]), dtype=torch.int64),
            torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]), dtype=torch.int64),
            torch.tensor(np.concatenate([v for _, v in rows]), dtype=torch.float32),
        )


def document_frequency(ids: list[np.ndarray]) -> np.ndarray:
    counts = np.zeros(1 << BUCKET_BITS, dtype=np.int64)
    for row in ids:
        np.add.at(counts, np.unique(hashed_ngrams(row)[0]), 1)
    return counts


def fit_linear(bags: Bags, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Full-batch L-BFGS logistic regression (convex: no seeds); returns (bucket weights, bias)."""
    torch.manual_seed(0)
    layer = torch.nn.EmbeddingBag(1 << BUCKET_BITS, 1, mode="sum")
    torch.nn.init.zeros_(layer.weight)
    bias = torch.zeros(1, requires_grad=True)
    targets = torch.tensor(y, dtype=torch.float32)
    optimiser = torch.optim.LBFGS([layer.weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = layer(bags.buckets, bags.offsets, per_sample_weights=bags.values).squeeze(1) + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss = loss + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return layer.weight.detach().numpy()[:, 0].copy(), float(bias.item())


@dataclass(frozen=True)
class DevRows:
    """The dev rows a variant is judged on: head logits and wordpiece ids of positives and each benign group."""

    groups: dict[str, list[Example]]
    head_logit: dict[str, np.ndarray]
    ids: dict[str, list[np.ndarray]]


def head_logit(head: MLPHead, encoder: Encoder, texts: list[str]) -> np.ndarray:
    logits = head.logits(embed(encoder, texts, pooled=True))
    return logits[:, 1] - logits[:, 0]


def dev_rows(guard: str, head: MLPHead, encoder: Encoder, dev: list[Example]) -> DevRows:
    negative, positive = LABELS[guard]
    benign = [e for e in dev if e.label == negative]
    groups = {
        "positive": [e for e in dev if e.label == positive],
        "real_chat": [e for e, chat in zip(benign, is_group(benign, REAL_CHAT), strict=True) if chat],
        "support": support_rows(DEV),
        EDGY: [e for e, edgy in zip(benign, is_group(benign, (EDGY,)), strict=True) if edgy],
        COMPLAINT: [e for e, shop in zip(benign, is_group(benign, (COMPLAINT,)), strict=True) if shop],
    }
    texts = {name: [e.text for e in rows] for name, rows in groups.items()}
    return DevRows(
        groups,
        {name: head_logit(head, encoder, t) for name, t in texts.items()},
        {name: [encoder.content_ids(x) for x in t] for name, t in texts.items()},
    )


def guard_probabilities(guard: str, lexical: LexicalScore, rows: DevRows) -> dict[str, np.ndarray]:
    """What the router would compare with 0.5, per dev group (jailbreak: max with the exact rules)."""
    out = {}
    for name, examples in rows.groups.items():
        scores = np.array(
            [lexical.probability(z, i) for z, i in zip(rows.head_logit[name], rows.ids[name], strict=True)]
        )
        out[name] = with_rules(guard, scores, examples)
    return out


def judge(guard: str, lexical: LexicalScore, rows: DevRows) -> tuple[LexicalScore, dict]:
    """Choose the offset on dev (DEV_BUDGETS), then the dev figures at that operating point."""
    scores = guard_probabilities(guard, lexical, rows)
    threshold = choose_threshold({g: scores[g] for g in DEV_BUDGETS})
    shifted = LexicalScore(lexical.weights, lexical.bias, lexical.mix, -log_odds(threshold))
    scores = guard_probabilities(guard, shifted, rows)
    report = {
        "dev_recall": dev_recall(scores["positive"], rows.groups["positive"]),
        "dev_recall_pooled": round(float((scores["positive"] >= 0.5).mean()), 4),
        "dev_false_block": {g: round(float((scores[g] >= 0.5).mean()), 5) for g in DEV_BUDGETS},
        "threshold_before_shift": round(threshold, 6),
    }
    return shifted, report


def run_guard(guard: str, encoder: Encoder, write: bool) -> dict:
    splits = guard_splits(guard)
    train = splits[TRAIN]
    y = np.array([LABELS[guard].index(e.label) for e in train])
    train_ids = [encoder.content_ids(e.text) for e in train]
    keep = document_frequency(train_ids) >= MIN_DF
    bags = Bags.of(train_ids, keep)
    head = MLPHead.load(HEADS_DIR / f"{guard}.npz")
    rows = dev_rows(guard, head, encoder, splits[DEV])
    zero = np.zeros(1 << BUCKET_BITS, dtype=np.float32)
    _, baseline = judge(guard, LexicalScore(zero, 0.0, 0.0, 0.0), rows)
    results: dict = {"shipped head alone": baseline}
    best: tuple[float, LexicalScore | None, str] = (SHIP_BAR[guard], None, "")
    print(guard, "shipped head alone", json.dumps(baseline), flush=True)
    for l2 in L2:
        weights, bias = fit_linear(bags, y, l2)
        # Scored as served: fp16 weights, the kept buckets only.
        weights = np.where(keep, weights, 0).astype(np.float16).astype(np.float32)
        # Diagnostic, never shipped: the lexical model on its own (head logits zeroed).
        alone = replace(rows, head_logit={g: np.zeros_like(z) for g, z in rows.head_logit.items()})
        results[f"l2 {l2:g}, lexical alone"] = judge(guard, LexicalScore(weights, bias, 1.0, 0.0), alone)[1]
        print(guard, f"l2 {l2:g}, lexical alone", json.dumps(results[f"l2 {l2:g}, lexical alone"]), flush=True)
        for mix in MIXES:
            name = f"l2 {l2:g}, mix {mix:g}"
            lexical, report = judge(guard, LexicalScore(weights, bias, mix, 0.0), rows)
            report["nonzero_buckets"] = int(np.count_nonzero(weights))
            results[name] = report
            print(guard, name, json.dumps(report), flush=True)
            within = all(report["dev_false_block"][g] <= b for g, b in DEV_BUDGETS.items())
            if within and report["dev_recall"]["mean_over_sources"] > best[0]:
                best = (report["dev_recall"]["mean_over_sources"], lexical, name)
    results["shipped_variant"] = best[2] or None
    # The mix and offset are tuned to this head's logits: a retrained head needs this script run again
    # (tests/unit/test_classifier_lexical.py fails while the recorded hash is not the shipped head's).
    results["head_sha256"] = sha256_file(HEADS_DIR / f"{guard}.npz")
    if write and best[1] is not None:
        best[1].save(HEADS_DIR / f"{guard}_lexical.npz")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("guards", nargs="*", default=list(LABELS))
    parser.add_argument("--write", action="store_true", help="write heads/{guard}_lexical.npz if a variant wins")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = Encoder(MODEL_DIR, threads=1)
    results = {f"{g}_lexical": run_guard(g, encoder, args.write) for g in args.guards}
    print(json.dumps(results, indent=1))
    if args.write:
        summary_path = HEADS_DIR / "training.json"
        summary = json.loads(summary_path.read_text())
        summary_path.write_text(json.dumps(summary | results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
