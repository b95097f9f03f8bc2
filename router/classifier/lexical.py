"""Sparse lexical guard scores: a linear model over hashed wordpiece unigrams and bigrams, added to a guard head.

The MLP guard heads only see the frozen MiniLM states, where the real-chat tail sits among the held-out attacks;
a linear score over the wordpieces themselves ("ignore", "previous instructions", "system prompt") is a second,
differently biased view of the same request. It reads the token ids the encoder run already produced
(EncodedText.ids), so it costs a hash and a gather of a few hundred floats. Trained by offline/train_lexical.py on
the guard heads' own training rows; the guard's score is sigmoid(head logit + mix * lexical logit + offset),
with mix and offset chosen on dev so that p = 0.5 stays the operating point the default thresholds expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUCKET_BITS = 18
# Bigram keys (a + 1) * ID_BASE + b stay apart from unigram keys (< ID_BASE >= the 30,522 wordpiece ids).
ID_BASE = 1 << 15
_BUCKET_MULT = np.uint64(0x9E3779B1)
_SIGN_MULT = np.uint64(0x85EBCA77)
_LOW32 = np.uint64(0xFFFFFFFF)


def hashed_ngrams(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, value) of each distinct unigram and bigram of a text's wordpiece ids: signed hashing, values
    +-1/sqrt(distinct n-grams) so that a long prompt does not outvote a short one by length alone."""
    tokens = ids.astype(np.uint64)
    keys = np.unique(np.concatenate([tokens, (tokens[:-1] + np.uint64(1)) * np.uint64(ID_BASE) + tokens[1:]]))
    buckets = ((keys * _BUCKET_MULT) & _LOW32) >> np.uint64(32 - BUCKET_BITS)
    signs = (((keys * _SIGN_MULT) & _LOW32) >> np.uint64(31)).astype(np.float32) * 2 - 1
    return buckets.astype(np.intp), signs / np.float32(max(np.sqrt(len(keys)), 1.0))


@dataclass(frozen=True)
class LexicalScore:
    """weights[2**BUCKET_BITS] (zero outside the stored buckets), bias: the lexical logit; mix, offset: how it is
    added to the guard head's logit."""

    weights: np.ndarray
    bias: float
    mix: float
    offset: float

    def logit(self, ids: np.ndarray) -> float:
        """The lexical model's own logit for one text's wordpiece ids."""
        buckets, values = hashed_ngrams(ids)
        return self.bias + float(self.weights[buckets] @ values)

    def probability(self, head_logit: float, ids: np.ndarray) -> float:
        """The guard's positive probability: the head's logit plus the weighted lexical logit, shifted."""
        z = head_logit + self.mix * self.logit(ids) + self.offset
        return float(0.5 * (1.0 + np.tanh(0.5 * z)))

    def save(self, path: Path) -> None:
        """Only the non-zero buckets, fp16: the file stays small."""
        half = self.weights.astype(np.float16)
        buckets = np.flatnonzero(half).astype(np.int32)
        np.savez_compressed(
            path,
            buckets=buckets,
            values=half[buckets],
            scalars=np.array([self.bias, self.mix, self.offset], dtype=np.float64),
        )

    @classmethod
    def load(cls, path: Path) -> LexicalScore:
        with np.load(path) as data:
            weights = np.zeros(1 << BUCKET_BITS, dtype=np.float32)
            weights[data["buckets"]] = data["values"].astype(np.float32)
            bias, mix, offset = (float(v) for v in data["scalars"])
            return cls(weights, bias, mix, offset)
