"""Choose the domain head's chat weighting without the test set: `.venv-build/bin/python -m offline.domain_cv`.

The dev set (84 random ShareGPT dev prompts) is a natural mix with 1-2 prompts for most domains, so it cannot
rank choices made for a balanced evaluation. Instead: 5-fold cross-validation on the hand-labelled ShareGPT TRAIN
rows, folds by sha256 of the conversation id (a conversation's parts stay in one fold); each fold trains on the
MMLU training part plus the other folds' hand rows (no teacher rows), one seed. Reported per setting:
balanced recall (mean per-domain recall: what a balanced test measures), accuracy on the natural mix (what an
operator's traffic looks like), MMLU held-out (question only) and chat dev accuracy of a fit on all hand rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import torch

from offline import train
from offline.chat_data import DATA
from offline.features import embed
from offline.train_data import DOMAINS, domain_split
from router.classifier.encoder import Encoder

FOLDS = 5


def _fold(prompt_id: str) -> int:
    return int(hashlib.sha256(prompt_id.rsplit("_", 1)[0].encode()).hexdigest(), 16) % FOLDS


def _shifted_predictions(
    x: np.ndarray,
    y: np.ndarray,
    chat_y: np.ndarray,
    balance: float,
    epochs: int,
    shifts: list[float],
    *tests: np.ndarray,
) -> list[list[np.ndarray]]:
    """Fit like train_domain (chat rows weighted by train.chat_weights), then argmax per prior shift and test set."""
    weights = np.concatenate([np.ones(len(y) - len(chat_y)), train.chat_weights(chat_y, balance)])
    head = train.fit_mlp(x, y, DOMAINS, hidden=1024, seeds=1, epochs=epochs, weights=weights)
    prior = np.bincount(chat_y, minlength=len(DOMAINS)) + 1.0
    log_prior = np.log(prior / prior.sum())
    # log-probabilities differ from the logits by a per-row constant: the same argmax after the shift
    scores = [np.log(head.probabilities(t) + 1e-12) for t in tests]
    return [[(s - shift * log_prior).argmax(axis=1) for s in scores] for shift in shifts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--balance", type=float, nargs="+", default=[0.0, train.CHAT_BALANCE])
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.0, train.PRIOR_SHIFT, 0.5])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = Encoder(train.MODEL_DIR, threads=args.threads)
    (plain, held), (listed, _) = domain_split(False), domain_split(True)
    mmlu = plain + listed
    rows = [
        json.loads(line) for line in train.CHAT_TRAIN.read_text(encoding="utf-8").split("\n") if line.strip()
    ]
    dev = [json.loads(line) for line in (DATA / "chat_domain_dev.jsonl").read_text().splitlines() if line]
    x_mmlu, x_hand = embed(encoder, [e.text for e in mmlu]), embed(encoder, [r["text"] for r in rows])
    x_held, x_dev = embed(encoder, [e.text for e in held]), embed(encoder, [r["text"] for r in dev])
    y_mmlu = np.array([DOMAINS.index(e.label) for e in mmlu])
    y_hand = np.array([DOMAINS.index(r["label"]) for r in rows])
    y_held, y_dev = (
        np.array([DOMAINS.index(e.label) for e in held]),
        np.array([DOMAINS.index(r["label"]) for r in dev]),
    )
    folds = np.array([_fold(r["id"]) for r in rows])
    for balance in args.balance:
        predicted = {shift: np.zeros(len(rows), dtype=int) for shift in args.shifts}
        for fold in range(FOLDS):
            inside = folds != fold
            x = np.concatenate([x_mmlu, x_hand[inside]])
            y = np.concatenate([y_mmlu, y_hand[inside]])
            per_shift = _shifted_predictions(
                x, y, y_hand[inside], balance, args.epochs, args.shifts, x_hand[~inside]
            )
            for shift, (fold_predicted,) in zip(args.shifts, per_shift, strict=True):
                predicted[shift][~inside] = fold_predicted
        x, y = np.concatenate([x_mmlu, x_hand]), np.concatenate([y_mmlu, y_hand])
        full = _shifted_predictions(x, y, y_hand, balance, args.epochs, args.shifts, x_held, x_dev)
        for shift, (held_predicted, dev_predicted) in zip(args.shifts, full, strict=True):
            recall = [float(np.mean(predicted[shift][y_hand == d] == d)) for d in range(len(DOMAINS))]
            print(json.dumps({
                "balance": balance, "prior_shift": shift, "epochs": args.epochs,
                "cv_balanced_recall": round(float(np.mean(recall)), 3),
                "cv_natural_accuracy": round(float(np.mean(predicted[shift] == y_hand)), 3),
                "mmlu_held_out": round(float(np.mean(held_predicted == y_held)), 3),
                "chat_dev": round(float(np.mean(dev_predicted == y_dev)), 3),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
