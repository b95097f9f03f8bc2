"""Real chat prompts pseudo-labelled with a domain by the mpnet teacher, as extra training rows for the domain head.

Build venv (torch, transformers). The teacher's labeller is a softmax regression on mpnet embeddings of an MMLU
training sample (TEACHER_PER_DOMAIN questions per domain, seeded); it labels a seeded sample of ShareGPT's train
part (hand-labelled conversations excluded), keeping labels with probability >= MIN_CONFIDENCE. Its agreement with
the hand labels is measured on the DEV set only (offline/data/chat_domain_dev.jsonl); the test set is never read.
"""

from __future__ import annotations

import json
import random

import numpy as np

from offline import teacher
from offline.chat_data import DATA, TRAIN, benign_chat
from offline.train_data import DOMAINS, Example, domain_split

TEACHER_PER_DOMAIN = 160
CHAT_SAMPLE = 2000
MIN_CONFIDENCE = 0.5
SEED = 1


def _labeller() -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(SEED)
    by_domain: dict[str, list[Example]] = {}
    for example in domain_split(False)[0]:
        by_domain.setdefault(example.label, []).append(example)
    sample = [
        e for d in DOMAINS for e in rng.sample(by_domain[d], min(TEACHER_PER_DOMAIN, len(by_domain[d])))
    ]
    return teacher.fit_labeller([e.text for e in sample], [e.label for e in sample])


def dev_agreement(labeller: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Teacher accuracy on the hand-labelled dev prompts, overall and above MIN_CONFIDENCE."""
    rows = [json.loads(line) for line in (DATA / "chat_domain_dev.jsonl").read_text().splitlines() if line]
    probabilities = teacher.predict(labeller, [r["text"] for r in rows])
    right = np.array([DOMAINS[i] == r["label"] for i, r in zip(probabilities.argmax(1), rows, strict=True)])
    confident = probabilities.max(1) >= MIN_CONFIDENCE
    return {
        "n": len(rows),
        "accuracy": round(float(right.mean()), 4),
        "confident_share": round(float(confident.mean()), 4),
        "confident_accuracy": round(float(right[confident].mean()), 4) if confident.any() else 0.0,
    }


def pseudo_labelled() -> tuple[list[Example], dict[str, object]]:
    """ShareGPT train prompts with the teacher's domain (confident ones only), and a report for training.json."""
    labeller = _labeller()
    prompts = [p.text for p in benign_chat(TRAIN)]
    random.Random(SEED).shuffle(prompts)
    prompts = prompts[:CHAT_SAMPLE]
    probabilities = teacher.predict(labeller, prompts)
    keep = probabilities.max(1) >= MIN_CONFIDENCE
    examples = [
        Example(text, DOMAINS[int(row.argmax())], "sharegpt_teacher")
        for text, row, kept in zip(prompts, probabilities, keep, strict=True)
        if kept
    ]
    counts = {d: sum(e.label == d for e in examples) for d in DOMAINS}
    report = {
        "sampled": len(prompts),
        "kept": len(examples),
        "by_domain": counts,
        "dev": dev_agreement(labeller),
    }
    return examples, report
