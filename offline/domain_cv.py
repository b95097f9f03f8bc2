"""Choose the domain head's chat weighting and teacher rows without a test set: `.venv-build/bin/python -m offline.domain_cv`.

The dev set (84 random ShareGPT dev prompts) is a natural mix with 1-2 prompts for most domains, so it cannot
rank choices made for a balanced evaluation. Instead: 5-fold cross-validation on the hand-labelled ShareGPT TRAIN
rows, folds by sha256 of the conversation id (a conversation's parts stay in one fold), and on the MMLU training
part, folds by sha256 of the question (a question and its with-options form stay in one fold): each fold trains on
the other folds' MMLU and hand rows, one seed. With --teacher, each fold also fits the mpnet teacher on its own
hand rows only and adds the teacher's labels of the unlabelled ShareGPT TRAIN prompts outside the held-out
conversations (offline/domain_chat.py), so no held-out label reaches the fold's model. The written prompts
(offline/data/train/chat_domain_written.jsonl) join every fold's training rows (--written-weight; 0 = none) and,
with --written-teacher, every fold's teacher rows; they are never scored. MMLU's held-out 20% and the chat test sets
are never read. Reported per setting and prior shift: balanced recall (mean per-domain recall: what
a balanced test measures), accuracy on the natural mix (what an operator's traffic looks like), MMLU CV accuracy
(question only) and chat dev accuracy (84 rows, mean over the fold models; too small to choose by).
--features pooled trains and scores the head on heads.pooled_features (embedding | max over token states, what
the guard heads read) instead of the embedding alone.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from dataclasses import dataclass

import numpy as np
import torch

from offline import domain_chat, teacher, train
from offline.chat_data import CHAT_DOMAIN_DEV, TRAIN, benign_chat, jsonl_rows
from offline.features import embed
from offline.train_data import DOMAINS, Example, domain_split
from router.classifier.encoder import Encoder

FOLDS = 5


def _fold(key: str) -> int:
    """Fold of a ShareGPT row (by conversation: 'sharegpt:X_3' -> 'sharegpt:X') or of an MMLU question."""
    return int(hashlib.sha256(key.rsplit("_", 1)[0].encode()).hexdigest(), 16) % FOLDS


def _labels(texts: list[str]) -> np.ndarray:
    return np.array([DOMAINS.index(t) for t in texts])


@dataclass(frozen=True)
class _Data:
    """MiniLM features (embedding or pooled), labels and folds of every row the folds draw from (plus the dev
    set, reported only)."""

    x_mmlu: np.ndarray
    y_mmlu: np.ndarray
    mmlu_folds: np.ndarray
    question_only: np.ndarray  # True for MMLU rows without their options listed
    x_hand: np.ndarray
    y_hand: np.ndarray
    hand_folds: np.ndarray
    x_dev: np.ndarray
    y_dev: np.ndarray
    x_written: np.ndarray
    y_written: np.ndarray
    pool: list[str]  # unlabelled ShareGPT TRAIN prompts (empty without --teacher)
    x_pool: np.ndarray
    pool_folds: np.ndarray
    teachers: list[domain_chat.Labeller]  # per fold, fitted on that fold's training hand rows only


def _fold_teacher(
    rows: list[dict[str, str]], hand_folds: np.ndarray, fold: int, written: list[Example]
) -> domain_chat.Labeller:
    """The teacher fitted on the hand rows outside `fold` (plus `written`) only: no held-out label reaches it."""
    inside = [r for r, f in zip(rows, hand_folds, strict=True) if f != fold]
    return domain_chat.fit_teacher([r["text"] for r in inside] + [e.text for e in written],
                                   [r["label"] for r in inside] + [e.label for e in written])


def _load(encoder: Encoder, with_teacher: bool, written_teacher: bool, pooled: bool) -> _Data:
    (plain, _), (listed, _) = domain_split(False), domain_split(True)
    mmlu = plain + listed
    rows, dev = jsonl_rows(train.CHAT_TRAIN), jsonl_rows(CHAT_DOMAIN_DEV)
    hand_texts = {r["text"] for r in rows}
    pool = [p for p in benign_chat(TRAIN) if p.text not in hand_texts] if with_teacher else []
    hand_folds = np.array([_fold(r["id"]) for r in rows])
    x_hand = embed(encoder, [r["text"] for r in rows], pooled)
    written = train.written_chat()
    return _Data(
        x_mmlu=embed(encoder, [e.text for e in mmlu], pooled),
        y_mmlu=_labels([e.label for e in mmlu]),
        mmlu_folds=np.array([_fold(e.text) for e in plain] * 2),  # listed[i] is plain[i] with its options
        question_only=np.arange(len(mmlu)) < len(plain),
        x_hand=x_hand,
        y_hand=_labels([r["label"] for r in rows]),
        hand_folds=hand_folds,
        x_dev=embed(encoder, [r["text"] for r in dev], pooled),
        y_dev=_labels([r["label"] for r in dev]),
        x_written=embed(encoder, [e.text for e in written], pooled),
        y_written=_labels([e.label for e in written]),
        pool=[p.text for p in pool],
        x_pool=embed(encoder, [p.text for p in pool], pooled) if pool else np.zeros((0, x_hand.shape[1]), "f4"),
        pool_folds=np.array([_fold(p.id) for p in pool]),
        teachers=[
            _fold_teacher(rows, hand_folds, fold, written if written_teacher else [])
            for fold in range(FOLDS if with_teacher else 0)
        ],
    )


def _cross_validate(
    data: _Data, setting: tuple[float, int, float, float, float, float], args: argparse.Namespace
) -> list[dict[str, object]]:
    """One result row per prior shift: the held-out folds' predictions pooled, then scored."""
    min_confidence, cap, pseudo_weight, mmlu_weight, balance, written_weight = setting
    used = slice(None) if written_weight else slice(0)  # weight 0: no written rows at all
    x_written, y_written = data.x_written[used], data.y_written[used]
    predicted = {s: np.zeros(len(data.y_hand), dtype=int) for s in args.shifts}
    mmlu_right, dev_right, pseudo_rows = dict.fromkeys(args.shifts, 0), dict.fromkeys(args.shifts, 0), 0
    for fold in range(FOLDS):
        inside, mmlu_inside = data.hand_folds != fold, data.mmlu_folds != fold
        rows = np.flatnonzero(data.pool_folds != fold)  # the held-out conversations' other parts stay out too
        probabilities = (
            teacher.predict(data.teachers[fold], [data.pool[i] for i in rows])
            if data.teachers
            else np.zeros((0, len(DOMAINS)))
        )
        positions = domain_chat.confident_rows(probabilities, min_confidence, cap)
        kept, y_pseudo = rows[positions], probabilities[positions].argmax(axis=1)
        pseudo_rows += len(kept)
        x = np.concatenate([data.x_mmlu[mmlu_inside], data.x_hand[inside], data.x_pool[kept], x_written])
        y = np.concatenate([data.y_mmlu[mmlu_inside], data.y_hand[inside], y_pseudo, y_written])
        weights = train.domain_weights(
            int(mmlu_inside.sum()), data.y_hand[inside], y_pseudo, y_written,
            mmlu_weight, pseudo_weight, written_weight, balance,
        )  # fmt: skip
        head = train.fit_mlp(
            x, y, DOMAINS, hidden=args.hidden, seeds=args.seeds, epochs=args.epochs, weights=weights,
            first_seed=args.first_seed,
        )
        log_prior = train.log_chat_prior(data.y_hand[inside])
        on_mmlu = ~mmlu_inside & data.question_only
        # log-probabilities differ from the logits by a per-row constant: the same argmax after the shift
        scores = [
            np.log(head.probabilities(t) + 1e-12)
            for t in (data.x_hand[~inside], data.x_mmlu[on_mmlu], data.x_dev)
        ]
        for shift in args.shifts:
            held, mmlu_predicted, dev_predicted = ((s - shift * log_prior).argmax(axis=1) for s in scores)
            predicted[shift][~inside] = held
            mmlu_right[shift] += int(np.sum(mmlu_predicted == data.y_mmlu[on_mmlu]))
            dev_right[shift] += int(np.sum(dev_predicted == data.y_dev))
    results = []
    for shift in args.shifts:
        recall = [float(np.mean(predicted[shift][data.y_hand == d] == d)) for d in range(len(DOMAINS))]
        results.append({
            "teacher": bool(data.teachers), "min_confidence": min_confidence, "cap": cap,
            "pseudo_weight": pseudo_weight, "mmlu_weight": mmlu_weight, "balance": balance,
            "written_weight": written_weight, "written_teacher": args.written_teacher,
            "prior_shift": shift, "epochs": args.epochs, "seeds": args.seeds, "first_seed": args.first_seed,
            "hidden": args.hidden, "features": args.features,
            "pseudo_rows_per_fold": pseudo_rows // FOLDS,
            "cv_balanced_recall": round(float(np.mean(recall)), 4),
            "cv_natural_accuracy": round(float(np.mean(predicted[shift] == data.y_hand)), 4),
            "cv_recall_by_domain": [round(r, 2) for r in recall],
            "mmlu_cv": round(mmlu_right[shift] / int(data.question_only.sum()), 4),
            "chat_dev": round(dev_right[shift] / (FOLDS * len(data.y_dev)), 3),
        })  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher", action="store_true", help="add teacher-labelled ShareGPT TRAIN rows per fold"
    )
    parser.add_argument("--min-confidence", type=float, nargs="+", default=[domain_chat.MIN_CONFIDENCE])
    parser.add_argument("--cap", type=int, nargs="+", default=[domain_chat.PER_CLASS_CAP])
    parser.add_argument("--pseudo-weight", type=float, nargs="+", default=[train.PSEUDO_WEIGHT])
    parser.add_argument("--mmlu-weight", type=float, nargs="+", default=[train.MMLU_WEIGHT])
    parser.add_argument("--balance", type=float, nargs="+", default=[train.CHAT_BALANCE])
    parser.add_argument("--written-weight", type=float, nargs="+", default=[train.WRITTEN_WEIGHT])
    parser.add_argument(
        "--written-teacher", action="store_true", help="fit each fold's teacher on the written prompts too"
    )
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.0, train.PRIOR_SHIFT, 0.5])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=1, help="MLP members per fold (offline.train uses 2)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first member (to average runs)")
    parser.add_argument("--hidden", type=int, default=1024, help="MLP hidden width")
    parser.add_argument(
        "--features", choices=("embedding", "pooled"), default="embedding",
        help="head input: the sentence embedding or heads.pooled_features (embedding | max over token states)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = Encoder(train.MODEL_DIR, threads=args.threads)
    data = _load(encoder, args.teacher, args.written_teacher, args.features == "pooled")
    grid = itertools.product(
        args.min_confidence, args.cap, args.pseudo_weight, args.mmlu_weight, args.balance, args.written_weight
    )
    for setting in grid:
        for result in _cross_validate(data, setting, args):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
