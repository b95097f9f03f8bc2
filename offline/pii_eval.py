"""Span-level precision/recall of the PII detectors on synthetic held-out sentences.

Matching is by overlap with a span of the same type: the policy needs to know *that* a type is present
and roughly where, and the merged address spans legitimately differ in their edges from the gold ones.
Exact-boundary recall is reported beside it so edge errors stay visible.

Splits (see pii_data): the token head is scored only on sentences from held-out templates, filled with
Faker values from a seed the training never used. The structured validators have nothing trained, so
they are scored on sentences from all templates (more examples of the rare types: IBAN, SSN, IP).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from offline import pii_data
from router.classifier import pii_rules
from router.classifier.encoder import Encoder
from router.classifier.pii import detect_pii
from router.signals import PIIFinding

Detector = Callable[[str], Sequence[PIIFinding]]
TRAIN_SEED = 13
EVAL_SEED = 20261126
HELDOUT_FRACTION = 0.25
HEAD_TYPES = (pii_data.PERSON, pii_data.STREET_ADDRESS, pii_data.LOCATION)
# Fake city names are often surnames and cities sit inside addresses: also score the two place types as one.
PLACE = "STREET_ADDRESS|LOCATION"


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def score(
    samples: Iterable[pii_data.Sample], detect: Detector, types: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per-type span precision/recall/F1 (overlap match), exact-boundary recall, and support."""
    c: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sample in samples:
        found = [f for f in detect(sample.text) if f.type in types]
        gold = [s for s in sample.spans if s.type in types]
        for g in gold:
            c[g.type]["gold"] += 1
            same = [f for f in found if f.type == g.type]
            c[g.type]["hit"] += any(_overlaps(f.start, f.end, g.start, g.end) for f in same)
            c[g.type]["exact"] += any((f.start, f.end) == (g.start, g.end) for f in same)
        for f in found:
            c[f.type]["pred"] += 1
            c[f.type]["correct"] += any(
                g.type == f.type and _overlaps(f.start, f.end, g.start, g.end) for g in gold
            )
    return {t: _ratios(c[t]) for t in types}


def _ratios(n: dict[str, int]) -> dict[str, float]:
    p = n["correct"] / n["pred"] if n["pred"] else 0.0
    r = n["hit"] / n["gold"] if n["gold"] else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    exact = n["exact"] / n["gold"] if n["gold"] else 0.0
    return {
        "precision": p,
        "recall": r,
        "f1": f1,
        "exact_recall": exact,
        "support": n["gold"],
        "predicted": n["pred"],
    }


def as_one_type(
    samples: Sequence[pii_data.Sample], detect: Detector, members: Sequence[str], name: str
) -> tuple[list[pii_data.Sample], Detector]:
    """Samples and detector with every type in `members` renamed to `name` (type confusions then count)."""

    def rename(kind: str) -> str:
        return name if kind in members else kind

    renamed = [replace(s, spans=tuple(replace(g, type=rename(g.type)) for g in s.spans)) for s in samples]
    return renamed, lambda text: [replace(f, type=rename(f.type)) for f in detect(text)]


def flag_rate(texts: Sequence[str], detect: Detector) -> dict[str, float]:
    """Share of texts (expected PII-free) on which each type fires; a proxy for false positives in traffic."""
    counts: dict[str, int] = defaultdict(int)
    for text in texts:
        for t in {f.type for f in detect(text)}:
            counts[t] += 1
    return {t: counts[t] / len(texts) for t in sorted(counts)} if texts else {}


def evaluate_pii(
    detect: Detector,
    cache_dir: Path,
    per_template: int = 20,
    benign_texts: Sequence[str] = (),
) -> dict[str, object]:
    """Everything `semantic-router eval` reports for PII; `detect` is the full runtime detector."""
    cached = functools.cache(detect)  # the head set is scored twice: per type, and places as one type
    templates = pii_data.load_templates(pii_data.templates_path(cache_dir))
    _, heldout = pii_data.split_templates(len(templates), TRAIN_SEED, HELDOUT_FRACTION)
    head_set = pii_data.generate(templates, heldout, per_template, EVAL_SEED)
    all_set = pii_data.generate(templates, range(len(templates)), per_template, EVAL_SEED + 1)
    return {
        "split": {
            "templates": len(templates),
            "heldout_templates": heldout,
            "rule": f"template ids shuffled with random.Random({TRAIN_SEED}); first {HELDOUT_FRACTION:.0%} held out",
            "head_eval": f"{len(head_set)} sentences, held-out templates only, Faker seed {EVAL_SEED}",
            "structured_eval": f"{len(all_set)} sentences, all templates (validators are not trained)",
        },
        "head": score(head_set, cached, HEAD_TYPES)
        | score(*as_one_type(head_set, cached, HEAD_TYPES[1:], PLACE), [PLACE]),
        "structured": score(all_set, cached, pii_rules.STRUCTURED_TYPES),
        "benign_flag_rate": flag_rate(benign_texts, cached),
        "benign_texts": f"{len(benign_texts)} MMLU questions from held-out subjects (every 4th subject, sorted)",
        "benign_note": "real names and places in these questions count as flags too: an upper bound on false positives",
    }


def evaluate_encoder(
    encoder: Encoder, cache_dir: Path, per_template: int = 20, benign: int = 1500
) -> dict[str, object]:
    """`evaluate_pii` for the runtime path: one encoder pass per text, then `detect_pii`."""
    texts = pii_data.benign_questions(cache_dir, heldout=True)[:benign]
    return evaluate_pii(lambda text: detect_pii(text, encoder.encode(text)), cache_dir, per_template, texts)
