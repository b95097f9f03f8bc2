"""Classification metrics in plain numpy, shared by training (build venv) and `semantic-router eval`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """[true label, predicted label] counts in the order of `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, pred in zip(truth, predicted, strict=True):
        matrix[index[true], index[pred]] += 1
    return matrix


def multiclass_report(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, a per-class table and the confusion matrix."""
    matrix = confusion(truth, predicted, labels)
    true_pos = np.diag(matrix).astype(float)
    precision = true_pos / np.maximum(matrix.sum(axis=0), 1)
    recall = true_pos / np.maximum(matrix.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    per_class = {
        label: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(matrix[i].sum()),
        }
        for i, label in enumerate(labels)
    }
    return {
        "n": int(matrix.sum()),
        "accuracy": round(float(true_pos.sum() / max(matrix.sum(), 1)), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": matrix.tolist(),
    }


def binary_report(is_positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Precision, recall and false-positive rate of `score >= threshold`."""
    flagged = scores >= threshold
    true_pos = int((flagged & is_positive).sum())
    false_pos = int((flagged & ~is_positive).sum())
    positives, negatives = int(is_positive.sum()), int((~is_positive).sum())
    return {
        "threshold": round(float(threshold), 6),
        "positives": positives,
        "negatives": negatives,
        "precision": round(true_pos / max(true_pos + false_pos, 1), 4),
        "recall": round(true_pos / max(positives, 1), 4),
        "fpr": round(false_pos / max(negatives, 1), 4),
    }
