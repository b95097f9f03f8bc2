"""PII detection on the shared encoder pass: exact validators plus a token head for names and places.

Structured types (cards, IBANs, SSNs, e-mail, phone, IP) have checksums or grammars, so rules in
pii_rules decide them exactly. Names and addresses have none: a two-layer MLP over the encoder's
token states (plus four casing/shape bits the uncased tokenizer throws away) tags each token, and
runs of same-type tokens become character spans. The head is numpy only: two small matmuls per
request, no second model run. Weights come from train_pii.py (committed .npz, reproducible by seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from router.classifier.pii_rules import find_structured
from router.signals import PIIFinding

DEFAULT_HEAD = Path(__file__).with_name("heads") / "pii_token_head.npz"
OUTSIDE = "O"
N_SHAPE_FEATURES = 4


class EncodedTokens(Protocol):
    """The part of the encoder's EncodedText this module reads."""

    token_states: np.ndarray
    offsets: Sequence[tuple[int, int]]


def shape_features(text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per token: starts with a capital, word is all caps, continues a word, has a digit.

    MiniLM is uncased, so "Bill" and "bill" get the same ids; the capital is the cue a name model
    misses most. Special tokens (empty offsets) get zeros.
    """
    feats = np.zeros((len(offsets), N_SHAPE_FEATURES), dtype=np.float32)
    for i, (start, end) in enumerate(offsets):
        if end <= start:
            continue
        piece = text[start:end]
        feats[i, 0] = piece[0].isupper()
        feats[i, 1] = len(piece) > 1 and piece.isupper()
        feats[i, 2] = start > 0 and (text[start - 1].isalnum())
        feats[i, 3] = any(c.isdigit() for c in piece)
    return feats


def token_features(text: str, encoded: EncodedTokens) -> np.ndarray:
    """The head's input: [T, hidden + shape] float32; shared by training and runtime."""
    states = np.asarray(encoded.token_states, dtype=np.float32)
    return np.concatenate([states, shape_features(text, encoded.offsets)], axis=1)


@dataclass(frozen=True, slots=True)
class TokenHead:
    """One ReLU layer, softmax over labels; labels[0] is "O", only `emit` labels become findings."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    labels: tuple[str, ...]
    emit: frozenset[str]
    min_score: float

    @classmethod
    def load(cls, path: Path = DEFAULT_HEAD) -> TokenHead:
        with np.load(path, allow_pickle=False) as z:
            mean, scale, w1 = (z[k].astype(np.float32) for k in ("mean", "scale", "w1"))
            # Fold the input standardisation into the first layer once: runtime is two matmuls.
            folded = w1 / scale[:, None]
            return cls(
                w1=folded,
                b1=z["b1"].astype(np.float32) - mean @ folded,
                w2=z["w2"].astype(np.float32),
                b2=z["b2"].astype(np.float32),
                labels=tuple(str(x) for x in z["labels"]),
                emit=frozenset(str(x) for x in z["emit"]),
                min_score=float(z["min_score"]),
            )

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        """[T, n_labels] softmax probabilities."""
        logits = np.maximum(feats @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def spans(self, text: str, encoded: EncodedTokens) -> list[PIIFinding]:
        """Runs of consecutive entity tokens (P(O) below 1 - min_score), typed by their summed probabilities.

        Typing the whole run at once keeps "Sancho Pintor" one PERSON instead of two spans of
        alternating types; runs typed as a label outside `emit` (ORGANIZATION) are dropped.
        """
        offsets = np.asarray(encoded.offsets).reshape(-1, 2)
        if len(offsets) == 0:
            return []
        probs = self.probabilities(token_features(text, encoded))
        entity = (probs[:, 0] < 1.0 - self.min_score) & (offsets[:, 1] > offsets[:, 0])
        out: list[PIIFinding] = []
        i = 0
        while i < len(offsets):
            if not entity[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(offsets) and entity[j + 1]:
                j += 1
            run = probs[i : j + 1]
            label = int(run[:, 1:].sum(axis=0).argmax()) + 1
            finding = self._finding(text, int(offsets[i, 0]), int(offsets[j, 1]), label, run[:, label])
            if finding is not None:
                out.append(finding)
            i = j + 1
        return out

    def _finding(self, text: str, start: int, end: int, label: int, token_probs: np.ndarray) -> PIIFinding | None:
        if self.labels[label] not in self.emit:
            return None
        # A name tagged on its first word-piece only still covers the whole word.
        while end < len(text) and text[end].isalnum():
            end += 1
        while start > 0 and text[start - 1].isalnum():
            start -= 1
        # Single letters and bare numbers ("Z", "G", "102") are maths, not names or addresses.
        if sum(c.isalpha() for c in text[start:end]) < 2:
            return None
        return PIIFinding(self.labels[label], start, end, round(float(token_probs.mean()), 4))


_HEAD: TokenHead | None = None


def default_head() -> TokenHead:
    """The committed head, loaded once per process."""
    global _HEAD
    if _HEAD is None:
        _HEAD = TokenHead.load()
    return _HEAD


def detect_pii(text: str, encoded: EncodedTokens, head: TokenHead | None = None) -> tuple[PIIFinding, ...]:
    """All PII in `text`: validated structured findings first, head spans that do not overlap them."""
    found = find_structured(text)
    for span in (head or default_head()).spans(text, encoded):
        if not any(span.start < f.end and f.start < span.end for f in found):
            found.append(span)
    return tuple(sorted(found, key=lambda f: f.start))
