"""Sentence embeddings of training and evaluation texts, cached on disk under the encoder file's hash.

Shared by head training (offline.train, build venv) and the cache evaluation (bench/cache_eval.py,
runtime venv), so it needs only numpy and the runtime encoder. One text per encoder run, exactly as in serving.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from offline.build import REPO_ROOT, sha256_file
from router.classifier.encoder import Encoder
from router.classifier.heads import pooled_features

FEATURE_CACHE = REPO_ROOT / "var" / "features"


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _save(path: Path, cache: dict[str, np.ndarray]) -> None:
    """Merge with what another process may have written meanwhile, then replace the file atomically (training
    jobs run side by side on the same encoder: a reader never sees a half-written file)."""
    FEATURE_CACHE.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        with np.load(path) as stored:
            cache = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True)) | cache
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, keys=np.array(list(cache)), vectors=np.stack(list(cache.values())))
    os.replace(partial, path)


def embed(encoder: Encoder, texts: list[str], pooled: bool = False) -> np.ndarray:
    """Sentence embeddings (or, pooled=True, heads.pooled_features: embedding | max over token states), cached
    per text on disk under the encoder file's hash (var/features/).

    Delete var/features/ after changing how encoder.py windows or pools text: the key only covers the model file.
    """
    suffix = ".pooled" if pooled else ""
    path = FEATURE_CACHE / f"{sha256_file(encoder.model_path)[:16]}{suffix}.npz"
    cache: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as stored:
            cache = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    missing = [text for text in dict.fromkeys(texts) if _key(text) not in cache]
    for index, text in enumerate(missing):
        encoded = encoder.encode(text)
        cache[_key(text)] = pooled_features(encoded) if pooled else encoded.embedding
        if index % 2000 == 1999:
            print(f"  embedded {index + 1}/{len(missing)}", flush=True)
    if missing:
        _save(path, cache)
    return np.stack([cache[_key(text)] for text in texts]).astype(np.float32)
