"""Small numpy heads on top of the shared encoder output (trained offline, weights in heads/*.npz).

Runtime is numpy only: a head is a standardiser plus a stack of dense layers, so a forward pass over one
request's features costs tens of microseconds and no framework is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.classifier.encoder import EncodedText

HEADS_DIR = Path(__file__).with_name("heads")
# Labels of the binary jailbreak head (training writes them into the npz; the runtime looks them up).
JAILBREAK, BENIGN = "jailbreak", "benign"


def pooled_features(encoded: EncodedText) -> np.ndarray:
    """[sentence embedding | max over token states]: max-pooling keeps rare, decisive terms the mean blurs."""
    states = encoded.token_states
    peak = states.max(axis=0) if len(states) else np.zeros(states.shape[1], dtype=np.float32)
    return np.concatenate([encoded.embedding, peak]).astype(np.float32)


@dataclass(frozen=True)
class MLPHead:
    """Standardise, then dense layers with GELU between them, softmax over `labels`."""

    labels: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: tuple[np.ndarray, ...]  # each [in, out]
    biases: tuple[np.ndarray, ...]

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Pre-softmax outputs for one feature vector [F] or a batch [N, F]."""
        hidden = (features - self.mean) / self.scale
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = hidden @ weight + bias
            if index < last:
                hidden = _gelu(hidden)
        logits: np.ndarray = hidden
        return logits

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities for one feature vector [F] or a batch [N, F]."""
        hidden = self.logits(features)
        hidden = hidden - hidden.max(axis=-1, keepdims=True)
        exp = np.exp(hidden)
        probs: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
        return probs

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "labels": np.array(self.labels),
            "mean": self.mean,
            "scale": self.scale,
        }
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{index}"] = weight.astype(np.float16)
            arrays[f"b{index}"] = bias.astype(np.float32)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool

    @classmethod
    def load(cls, path: Path) -> MLPHead:
        with np.load(path) as data:
            layers = sum(1 for key in data.files if key.startswith("w"))
            return cls(
                labels=tuple(str(label) for label in data["labels"]),
                mean=data["mean"].astype(np.float32),
                scale=data["scale"].astype(np.float32),
                weights=tuple(np.ascontiguousarray(data[f"w{i}"], dtype=np.float32) for i in range(layers)),
                biases=tuple(data[f"b{i}"].astype(np.float32) for i in range(layers)),
            )


def _gelu(x: np.ndarray) -> np.ndarray:
    """tanh approximation, as in training (torch GELU(approximate='tanh')); in place, no float power (~30x faster)."""
    inner = x * x
    inner *= x
    inner *= 0.044715
    inner += x
    inner *= 0.7978845608028654
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= x
    inner *= 0.5
    result: np.ndarray = inner
    return result
