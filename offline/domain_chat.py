"""Real chat prompts pseudo-labelled with a domain by the mpnet teacher, as extra training rows for the domain head.

Build venv (torch, transformers). The teacher labels zero-shot: each domain is a one-line description
(DESCRIPTIONS), a prompt gets the domain whose description's mpnet embedding is nearest (softmax over cosine
similarities / TEMPERATURE as confidence). Labels of a seeded sample of ShareGPT's train part (hand-labelled
conversations excluded) with confidence >= MIN_CONFIDENCE become training rows. Agreement with the hand labels
is measured on the DEV set only (offline/data/chat_domain_dev.jsonl); the test set is never read.

Measured on dev (84 prompts): a softmax regression on mpnet embeddings of MMLU (160 questions per domain) agreed
with the hand labels on 0.32 of them, the MiniLM head trained on MMLU on 0.45, zero-shot descriptions with
MiniLM 0.51 and with mpnet 0.61: what MMLU teaches does not transfer to chat, so the teacher does not learn
from MMLU here.
"""

from __future__ import annotations

import json
import random

import numpy as np

from offline import teacher
from offline.chat_data import DATA, TRAIN, benign_chat
from offline.train_data import DOMAINS, Example

CHAT_SAMPLE = 1200
MIN_CONFIDENCE = 0.5  # dev: 0.75 of the confident two thirds agree with the hand labels (0.61 overall)
TEMPERATURE = 0.03
SEED = 1
DESCRIPTIONS = {
    "biology": "biology: cells, genetics, DNA, evolution, organisms, animals, plants, ecology",
    "business": "business: marketing, sales, advertising copy, management, startups, customers, companies, products, finance",
    "chemistry": "chemistry: chemical reactions, molecules, elements, compounds, acids, laboratory chemistry",
    "computer science": "computer science and programming: code, software, python, javascript, SQL, databases, servers, APIs, bugs and errors",
    "economics": "economics: markets, inflation, GDP, interest rates, trade, economic policy",
    "engineering": "engineering: electrical circuits, electronics, mechanical design, machines, power systems, construction",
    "health": "health and medicine: diseases, symptoms, treatment, nutrition, fitness, sleep, doctors",
    "history": "history: historical events, wars, empires, ancient civilizations, historical figures",
    "law": "law: legal questions, contracts, courts, regulations, rights, lawyers",
    "math": "mathematics: equations, algebra, calculus, geometry, probability, statistics, arithmetic",
    "other": "everyday life and creative writing: stories, poems, jokes, travel, food, recipes, games, movies, music, greetings",
    "philosophy": "philosophy and religion: ethics, morality, meaning of life, God, the Bible, philosophers",
    "physics": "physics: forces, energy, motion, quantum mechanics, relativity, astronomy, light",
    "psychology": "psychology: emotions, behaviour, mental health, relationships, personality, motivation",
}  # fmt: skip


def _labeller() -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot: the weights are the descriptions' embeddings / TEMPERATURE (teacher.predict's softmax)."""
    weights = teacher.embed([DESCRIPTIONS[d] for d in DOMAINS]).T / TEMPERATURE
    return weights, np.zeros(len(DOMAINS), dtype=np.float32)


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
