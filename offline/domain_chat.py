"""Real chat prompts pseudo-labelled with a domain by the mpnet teacher, as extra training rows for the domain head.

Build venv (torch, transformers). The teacher is linear on all-mpnet-base-v2 embeddings: a class-balanced softmax
regression fitted on the hand-labelled ShareGPT TRAIN prompts (offline/data/train/chat_domain_train.jsonl), plus
ZERO_SHOT_WEIGHT x the zero-shot scores (cosine to a one-line description per domain, DESCRIPTIONS / TEMPERATURE),
which know the rare domains the hand rows barely show (chemistry 7 rows, biology 30). It labels the other
ShareGPT TRAIN prompts (never dev or test ones: chat_data.benign_chat(TRAIN) leaves out every conversation with a
hand-labelled dev/test row); those with confidence >= MIN_CONFIDENCE become training rows, at most PER_CLASS_CAP
per domain, so the big classes do not take over again. Every choice here was made by 5-fold cross-validation on
the hand-labelled TRAIN rows, folds by conversation (offline.domain_cv; offline/README.md, "Domain on chat: a
chat-trained teacher"), never on the test sets.

Teacher CV on the hand rows (balanced recall / natural accuracy): zero-shot alone 0.592 / 0.526; regression
alone 0.545 / 0.740 (L2 1e-3), 0.524 / 0.733 (1e-4); regression (L2 1e-2) + 0.5 x zero-shot 0.667 / 0.737, of
which the 71% with confidence >= 0.7 are 0.834 right. Earlier: a regression on MMLU embeddings agreed with the
hand labels on 0.32 of the 84 dev prompts (MMLU does not teach chat).
"""

from __future__ import annotations

import numpy as np

from offline import teacher
from offline.chat_data import CHAT_DOMAIN_DEV, TRAIN, benign_chat, jsonl_rows
from offline.train_data import DOMAINS, Example

MIN_CONFIDENCE = 0.7
PER_CLASS_CAP = 400
L2 = 1e-2
ZERO_SHOT_WEIGHT = 0.5
TEMPERATURE = 0.03
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
Labeller = tuple[np.ndarray, np.ndarray]


def fit_teacher(texts: list[str], labels: list[str]) -> Labeller:
    """The chat-trained teacher: class-balanced softmax regression on mpnet embeddings of hand-labelled prompts,
    plus the zero-shot description scores (softmax(a + w * b) = softmax(a + w * log_softmax(b)): still linear)."""
    weight, bias = teacher.fit_labeller(texts, labels, balanced=True, l2=L2)
    descriptions = teacher.embed([DESCRIPTIONS[d] for d in DOMAINS]).T / TEMPERATURE
    return weight + ZERO_SHOT_WEIGHT * descriptions, bias


def confident_rows(probabilities: np.ndarray, min_confidence: float, cap: int) -> list[int]:
    """Rows whose top domain has probability >= min_confidence, at most `cap` per domain (most confident first),
    in input order: the cap stops computer science (a third of ShareGPT) from taking the rare domains' weight."""
    best, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    kept: list[int] = []
    for domain_index in range(probabilities.shape[1]):
        rows = np.flatnonzero((best == domain_index) & (confidence >= min_confidence))
        kept += rows[np.argsort(-confidence[rows], kind="stable")][:cap].tolist()
    return sorted(kept)


def pseudo_label(
    labeller: Labeller, texts: list[str], min_confidence: float = MIN_CONFIDENCE, cap: int = PER_CLASS_CAP
) -> list[Example]:
    """The teacher's domain for each text confident_rows keeps."""
    probabilities = teacher.predict(labeller, texts)
    rows = confident_rows(probabilities, min_confidence, cap)
    return [Example(texts[i], DOMAINS[int(probabilities[i].argmax())], "sharegpt_teacher") for i in rows]


def dev_agreement(labeller: Labeller) -> dict[str, float]:
    """Teacher accuracy on the hand-labelled dev prompts, overall and above MIN_CONFIDENCE."""
    rows = jsonl_rows(CHAT_DOMAIN_DEV)
    probabilities = teacher.predict(labeller, [r["text"] for r in rows])
    right = np.array([DOMAINS[i] == r["label"] for i, r in zip(probabilities.argmax(1), rows, strict=True)])
    confident = probabilities.max(1) >= MIN_CONFIDENCE
    return {
        "n": len(rows),
        "accuracy": round(float(right.mean()), 4),
        "confident_share": round(float(confident.mean()), 4),
        "confident_accuracy": round(float(right[confident].mean()), 4) if confident.any() else 0.0,
    }


def pseudo_labelled(hand: list[Example]) -> tuple[list[Example], dict[str, object]]:
    """Unlabelled ShareGPT TRAIN prompts with the teacher's domain (fitted on `hand`), and a report for training.json."""
    labeller = fit_teacher([e.text for e in hand], [e.label for e in hand])
    hand_texts = {e.text for e in hand}
    pool = [p.text for p in benign_chat(TRAIN) if p.text not in hand_texts]
    examples = pseudo_label(labeller, pool)
    report = {
        "pool": len(pool),
        "kept": len(examples),
        "min_confidence": MIN_CONFIDENCE,
        "per_class_cap": PER_CLASS_CAP,
        "by_domain": {d: sum(e.label == d for e in examples) for d in DOMAINS},
        "dev": dev_agreement(labeller),
    }
    return examples, report
