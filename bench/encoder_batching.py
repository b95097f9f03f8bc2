"""Would batching the encoder across concurrent requests pay (issue 13)? Cost, exactness and feasibility.

The shipped graph takes `input_ids` only (no attention mask), so only texts of exactly the same token length can
share a run without changing what each one attends to; and dynamic int8 quantisation computes one activation
scale per tensor, i.e. over the whole batch, so even a same-length batch can move each embedding. This measures,
on real first user turns (ShareGPT DEV split, offline.chat_data, benign rows), tokenised as Encoder does:

1. cost: CPU time per request (time.process_time, onnxruntime 1 intra-op thread as shipped) at batch sizes
   1, 2, 4, 8, 16, (a) for same-length groups, (b) padded to the longest of the batch in arrival order (wrong
   without a mask: only the upper bound of what batching could save);
2. exactness of (a): per request 1 - cosine(batched, alone), and the decisions that change when the shipped
   classifier (router.classifier.model.EncoderClassifier.classify, unchanged) reads the batched encoder output:
   category, below the confidence threshold, jailbreak and content-safety scores across their thresholds, PII
   types, and cache cosines across the candidate floor (every pair of the measured prompts; the held-out cache
   pairs, each text batched with same-length ShareGPT prompts);
3. feasibility: with the real length distribution and Poisson arrivals, how many requests would find another of
   exactly their length within a batching window.

    PYTHONPATH=$PWD .venv/bin/python bench/encoder_batching.py [--out bench/results/encoder_batching.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from offline.chat_data import DEV, jsonl_rows, sharegpt
from router.cache.semantic_cache import candidate_floor
from router.classifier.encoder import CLS_ID, SEP_ID, Encoder
from router.classifier.model import EncoderClassifier, load_classifier
from router.config import load_config
from router.signals import Classification

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 2, 4, 8, 16)
PER_LENGTH = 16  # prompts taken per token length (each length with at least this many): one batch of 16
PADDED_SAMPLE = 160  # prompts, in arrival order, for the padded upper bound
RATES = (100, 400)  # req/s
WINDOWS_MS = (1, 2, 5)
MAX_BATCH = 16
ROUNDS = 3


class _Replay:
    """Stands in for the ONNX session: hands Encoder.encode the rows a batched run gave this text, so that the
    library's own post-processing (windows, token states, offsets) and every head read the batched output."""

    def __init__(self, ids: np.ndarray, outputs: list[np.ndarray]):
        self.ids, self.outputs = ids, outputs

    def run(self, _names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert np.array_equal(feeds["input_ids"], self.ids), "replayed rows are not this text's"
        return self.outputs


def rows(encoder: Encoder, text: str) -> np.ndarray:
    """The input_ids Encoder.encode feeds the graph for text: one row, or two (head and tail windows)."""
    return np.array([[CLS_ID, *w.ids, SEP_ID] for w in encoder._windows(text)], dtype=np.int64)


def run(encoder: Encoder, ids: np.ndarray) -> tuple[list[np.ndarray], float]:
    start = time.process_time()
    outputs = encoder._session.run(None, {"input_ids": ids})
    return outputs, time.process_time() - start


def classify_replayed(classifier: EncoderClassifier, text: str, ids: np.ndarray, outputs: list[np.ndarray]) -> Classification:
    """The shipped classify() on a batched run's rows for text (the encoder's session swapped for a replay)."""
    replay = copy.copy(classifier.models.encoder)
    replay._session = _Replay(ids, outputs)  # type: ignore[assignment]
    models = dataclasses.replace(classifier.models, encoder=replay)
    return EncoderClassifier(models, classifier.examples, classifier.example_threshold,
                             classifier.pii_enabled).classify(text)


def same_length_groups(encoder: Encoder, texts: list[str]) -> list[list[str]]:
    """PER_LENGTH texts of each row shape that has that many (two-window texts share one shape, 2 x 258)."""
    by_shape: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for text in texts:
        by_shape[rows(encoder, text).shape].append(text)
    return [group[:PER_LENGTH] for _, group in sorted(by_shape.items()) if len(group) >= PER_LENGTH]


def batched(encoder: Encoder, group: list[str], size: int) -> tuple[dict[str, tuple[np.ndarray, list]], float]:
    """Each text's rows and outputs when group runs in batches of `size`, and the CPU seconds of those runs."""
    out, cpu = {}, 0.0
    for start in range(0, len(group), size):
        chunk = group[start : start + size]
        per = [rows(encoder, text) for text in chunk]
        outputs, seconds = run(encoder, np.concatenate(per))
        cpu += seconds
        offset = 0
        for text, ids in zip(chunk, per, strict=True):
            out[text] = (ids, [o[offset : offset + len(ids)] for o in outputs])
            offset += len(ids)
    return out, cpu


def decisions(result: Classification, settings: Any) -> dict[str, Any]:
    return {
        "category": result.category,
        "below_confidence": result.confidence < settings.confidence_threshold,
        "jailbreak": result.jailbreak_score >= settings.jailbreak_threshold,
        "content_safety": result.content_safety_score >= settings.content_safety_threshold,
        "pii_types": tuple(sorted(result.pii_types)),
    }


def floor_crossings(alone: np.ndarray, batch: np.ndarray, floor: float) -> dict[str, int]:
    """Pairs (i < j) whose cosine lies on the other side of the floor when both are embedded in batches."""
    upper = np.triu_indices(len(alone), 1)
    before, after = (alone @ alone.T)[upper], (batch @ batch.T)[upper]
    return {"pairs": len(before), "within_0.02_of_floor": int((abs(before - floor) < 0.02).sum()),
            "crossed": int(((before >= floor) != (after >= floor)).sum())}


def exactness(classifier: EncoderClassifier, settings: Any, floor: float, groups: list[list[str]]) -> dict[str, Any]:
    encoder = classifier.models.encoder
    texts = [text for group in groups for text in group]
    alone = {text: classifier.classify(text) for text in texts}
    alone_emb = np.stack([alone[text].embedding for text in texts])
    report: dict[str, Any] = {}
    for size in BATCHES:  # 1: the control, the replay path reproducing the alone run
        runs: dict[str, tuple[np.ndarray, list]] = {}
        for group in groups:
            runs.update(batched(encoder, group, size)[0])
        changed: dict[str, int] = defaultdict(int)
        gaps, batch_emb = [], []
        for text in texts:
            result = classify_replayed(classifier, text, *runs[text])
            gaps.append(1.0 - float(result.embedding @ alone[text].embedding))
            batch_emb.append(result.embedding)
            before, after = decisions(alone[text], settings), decisions(result, settings)
            for key in before:
                changed[key] += before[key] != after[key]
        report[str(size)] = {
            "requests": len(texts),
            "one_minus_cosine": {"max": max(gaps), "p50": float(np.median(gaps)), "p99": float(np.percentile(gaps, 99))},
            "decisions_changed": dict(changed),
            "cache_floor_pairs": floor_crossings(alone_emb, np.stack(batch_emb), floor),
        }
        print(f"exact  batch {size:2d}: 1-cos max {max(gaps):.4f} p50 {np.median(gaps):.4f}; changed {dict(changed)};"
              f" floor {report[str(size)]['cache_floor_pairs']}", flush=True)
    return report


def heldout_floor(encoder: Encoder, pool: list[str], floor: float, size: int = 8) -> dict[str, Any]:
    """Held-out cache pairs (v11): each side batched with size-1 same-length ShareGPT prompts vs alone."""
    by_shape: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for text in pool:
        by_shape[rows(encoder, text).shape].append(text)

    def embed(text: str) -> tuple[np.ndarray, np.ndarray | None]:
        ids = rows(encoder, text)
        alone = encoder.encode(text).embedding
        fillers = [t for t in by_shape[ids.shape] if t != text][: size - 1]
        if len(fillers) < size - 1:
            return alone, None
        outputs, _ = run(encoder, np.concatenate([ids, *(rows(encoder, t) for t in fillers)]))
        return alone, outputs[0][0] / np.linalg.norm(outputs[0][0])

    pairs = jsonl_rows(ROOT / "bench/data/cache_heldout_v11.jsonl")
    counted = crossed = near = 0
    for pair in pairs:
        (a, a_batch), (b, b_batch) = embed(pair["a"]), embed(pair["b"])
        if a_batch is None or b_batch is None or len(rows(encoder, pair["a"])) > 1 or len(rows(encoder, pair["b"])) > 1:
            continue
        counted += 1
        before, after = float(a @ b), float(a_batch @ b_batch)
        near += abs(before - floor) < 0.02
        crossed += (before >= floor) != (after >= floor)
    return {"pairs": len(pairs), "with_fillers": counted, "batch": size, "within_0.02_of_floor": near, "crossed": crossed}


def cost(encoder: Encoder, groups: list[list[str]], sample: list[str]) -> dict[str, Any]:
    """CPU ms per request: same-length groups, and the padded upper bound on a real arrival-order sample. Batch
    sizes alternate within each of ROUNDS rounds (the machine is shared); the median round is reported."""
    one = [group for group in groups if len(rows(encoder, group[0])) == 1]
    two = [group for group in groups if len(rows(encoder, group[0])) == 2]
    short = [text for text in sample if len(rows(encoder, text)) == 1]
    measures = {
        "same_length_one_window": (sum(map(len, one)), lambda size: same_length_ms(encoder, one, size)),
        "same_length_two_windows": (sum(map(len, two)), lambda size: same_length_ms(encoder, two, size)),
        "padded_arrival_order": (len(sample), lambda size: padded_ms(encoder, sample, size)),
        "padded_one_window_only": (len(short), lambda size: padded_ms(encoder, short, size)),
    }
    rounds: dict[str, dict[int, list[float]]] = {name: defaultdict(list) for name in measures}
    for _ in range(ROUNDS):
        for name, (_, measure) in measures.items():
            for size in BATCHES:
                rounds[name][size].append(measure(size))
    report: dict[str, Any] = {}
    for name, (requests, _) in measures.items():
        report[name] = {"requests": requests} | {str(size): float(np.median(rounds[name][size])) for size in BATCHES}
        report[name]["rounds"] = {str(size): rounds[name][size] for size in BATCHES}
        print(f"cost   {name} ms/request, {requests} requests: "
              + ", ".join(f"{size} {report[name][str(size)]:.2f}" for size in BATCHES), flush=True)
    return report


def same_length_ms(encoder: Encoder, groups: list[list[str]], size: int) -> float:
    return 1000 * sum(batched(encoder, group, size)[1] for group in groups) / sum(map(len, groups))


def padded_ms(encoder: Encoder, texts: list[str], size: int) -> float:
    """CPU ms per request when texts, in order, run in batches of `size` padded with [PAD] to the longest."""
    cpu = 0.0
    for start in range(0, len(texts), size):
        per = [rows(encoder, text) for text in texts[start : start + size]]
        width = max(ids.shape[1] for ids in per)
        cpu += run(encoder, np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in per]))[1]
    return 1000 * cpu / len(texts)


def feasibility(shapes: list[tuple[int, ...]], seed: int = 0, requests: int = 100_000) -> dict[str, Any]:
    """Poisson arrivals with lengths drawn from the real distribution: the first request of a length opens a
    batch that closes `window` ms later (or at MAX_BATCH); later arrivals of exactly that length join it."""
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {}
    for rate in RATES:
        for window in WINDOWS_MS:
            times = np.cumsum(rng.exponential(1000 / rate, requests))
            drawn = rng.integers(len(shapes), size=requests)
            open_batches: dict[tuple[int, ...], tuple[float, int]] = {}
            sizes = []
            for t, index in zip(times, drawn, strict=True):
                shape = shapes[index]
                opened = open_batches.get(shape)
                if opened is not None and t < opened[0] + window and opened[1] < MAX_BATCH:
                    open_batches[shape] = (opened[0], opened[1] + 1)
                    continue
                if opened is not None:
                    sizes.append(opened[1])
                open_batches[shape] = (t, 1)
            sizes.extend(count for _, count in open_batches.values())
            counts = np.array(sizes)
            key = f"{rate}rps_{window}ms"
            report[key] = {"share_batched": float(counts[counts > 1].sum() / counts.sum()),
                           "mean_batch": float(counts.mean()),
                           "mean_batch_seen_by_request": float((counts**2).sum() / counts.sum())}
            print(f"feasible {key}: {report[key]}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench/results/encoder_batching.json"))
    args = parser.parse_args()
    cfg = load_config(ROOT / "config/config.yaml")
    classifier = load_classifier(cfg)
    encoder = classifier.models.encoder
    settings, floor = cfg.classifier, candidate_floor(cfg.semantic_cache)
    pool = [p.text for p in sharegpt() if p.split == DEV and p.source == "sharegpt"]
    shapes = [rows(encoder, text).shape for text in pool]
    groups = same_length_groups(encoder, pool)
    sample = list(np.random.default_rng(1).permutation(np.array(pool, dtype=object))[:PADDED_SAMPLE])
    tokens = np.array([shape[1] - 2 for shape in shapes])
    print(f"{len(pool)} ShareGPT DEV first turns, tokens p50 {np.median(tokens):.0f}, two-window "
          f"{np.mean([shape[0] == 2 for shape in shapes]):.1%}; {len(groups)} same-length groups of {PER_LENGTH}",
          flush=True)
    encoder.encode("warm up the session")
    report = {
        "prompts": {"source": "offline.chat_data.sharegpt(), DEV split, source sharegpt (first user turns)",
                    "count": len(pool), "tokens_p50": float(np.median(tokens)),
                    "two_window_share": float(np.mean([shape[0] == 2 for shape in shapes])),
                    "same_length_groups": ["x".join(map(str, rows(encoder, g[0]).shape)) for g in groups]},
        "cost": cost(encoder, groups, sample),
        "exactness": exactness(classifier, settings, floor, groups),
        "cache_heldout_v11_floor": heldout_floor(encoder, pool, floor),
        "feasibility": feasibility(shapes),
        "settings": {"threads": settings.threads, "precision": settings.precision, "floor": floor,
                     "jailbreak_threshold": settings.jailbreak_threshold,
                     "content_safety_threshold": settings.content_safety_threshold,
                     "confidence_threshold": settings.confidence_threshold, "max_batch": MAX_BATCH,
                     "per_length": PER_LENGTH},
    }
    print(f"held-out floor: {report['cache_heldout_v11_floor']}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
