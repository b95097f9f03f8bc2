"""How well YAML example categories catch their own traffic, and what else they pull in (router/classifier/README.md,
"Add a category"). Run: `.venv/bin/python -m offline.example_eval [--test] [--add-dev N]`.

Categories: the shipped `customer support` (config/config.yaml) and two written 2026-12-02 before any evaluation
row was read. Positives: `offline/data/example_categories.jsonl`, real ShareGPT prompts labelled by reading
(legal contracts: asks about a contract's or agreement's meaning, law or drafting; travel bookings: a user planning
or booking their own trip). Negatives: every other real prompt of the split (ShareGPT first turns <= 400 chars, the
hand-labelled domain rows, the support asks). Split = ShareGPT's by conversation id (offline/README.md): dev rows
choose, test rows are read once. Scores: the shipped nearest-example cosine, the mean of a category's two nearest
examples, and the cosine to a category's mean example (both cost nothing per request).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from offline import chat_data
from router.classifier.canonical import canonical
from router.classifier.examples import ExampleHead, fit_example_head
from router.classifier.model import shared_models
from router.config import ClassifierConfig

DATA = Path(__file__).parent / "data"
WRITTEN = {
    "legal contracts": [
        "Can my landlord keep my deposit if the lease doesn't mention cleaning fees?",
        "Is a non-compete clause in my employment contract enforceable?",
        "What does an indemnification clause mean in a services agreement?",
        "Can I terminate a contract early if the other party misses a deadline?",
        "Review this NDA and tell me if the confidentiality term is unusual",
        "Who owns the intellectual property under this freelance agreement?",
        "Is a verbal agreement legally binding?",
    ],
    "travel bookings": [
        "Find me a cheap flight from Boston to Lisbon in March",
        "Can I change the dates on my hotel reservation without a fee?",
        "What's the best way to book train tickets across Italy?",
        "My flight was cancelled, am I entitled to a refund or rebooking?",
        "Recommend a hotel near the Eiffel Tower for a family of four",
        "How far in advance should I book a rental car for a summer trip?",
        "Do I need a visa to travel to Japan with a US passport?",
    ],
}
HAND_LABELLED = {"dev": ["chat_domain_dev"], "test": ["chat_domain_test", "chat_domain_test_v2"]}
THRESHOLDS = [round(0.30 + 0.05 * i, 2) for i in range(11)]


def categories() -> dict[str, list[str]]:
    config = yaml.safe_load((Path(__file__).parent.parent / "config" / "config.yaml").read_text())
    shipped = {c["name"]: c["examples"] for c in config["categories"] if c.get("examples")}
    return shipped | WRITTEN


def rows(split: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(positives as (text, category), negatives) of `split`, each text once."""
    positives = [(r["text"], r["category"]) for r in chat_data.jsonl_rows(DATA / "example_categories.jsonl")
                 if r["split"] == split]
    seen = {text for text, _ in positives}
    negatives: list[str] = []
    hand = [r["text"] for name in HAND_LABELLED[split] for r in chat_data.jsonl_rows(DATA / f"{name}.jsonl")]
    chat = [p.text for p in (*chat_data.sharegpt(), *chat_data.support_requests())
            if p.split == split and len(p.text) <= 400]
    for text in (*hand, *chat):
        if text not in seen:
            seen.add(text)
            negatives.append(text)
    return positives, negatives


def scores(head: ExampleHead, embeddings: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scoring rule: (winning category index, its score) per row."""
    similarities = embeddings @ head.embeddings.T
    per_category = [head.owners == c for c in range(len(head.categories))]
    nearest = np.stack([similarities[:, own].max(1) for own in per_category], 1)
    top2 = np.stack([np.sort(similarities[:, own], 1)[:, -2:].mean(1) for own in per_category], 1)
    means = np.stack([head.embeddings[own].mean(0) for own in per_category])
    centroid = embeddings @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T
    return {name: (s.argmax(1), s.max(1)) for name, s in
            (("nearest", nearest), ("top2 mean", top2), ("centroid", centroid))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="report the test split (read once)")
    parser.add_argument("--add-dev", type=int, default=0, metavar="N",
                        help="also give each category its first N dev positives as examples (as an operator copying "
                             "requests from its own logs would); evaluates on test")
    args = parser.parse_args()
    split = "test" if args.test or args.add_dev else "dev"
    encoder = shared_models(ClassifierConfig()).encoder
    cats = categories()
    for name in cats:
        cats[name] = cats[name] + [r["text"] for r in chat_data.jsonl_rows(DATA / "example_categories.jsonl")
                                   if r["split"] == "dev" and r["category"] == name][: args.add_dev]
    head = fit_example_head(cats, encoder)
    names = list(head.categories)
    positives, negatives = rows(split)
    texts = [t for t, _ in positives] + negatives
    embeddings = np.stack([encoder.encode(canonical(t)).embedding for t in texts])
    labels = np.array([names.index(c) for _, c in positives])
    p = len(positives)
    print(f"{split}: {p} positives ({', '.join(f'{n} {int((labels == i).sum())}' for i, n in enumerate(names))}), "
          f"{len(negatives)} negatives; examples per category: {[len(cats[n]) for n in names]}")
    for rule, (winner, score) in scores(head, embeddings).items():
        print(f"\n{rule}: threshold, recall per category ({', '.join(names)}), all; false captures of negatives")
        for t in THRESHOLDS:
            hit = (winner[:p] == labels) & (score[:p] >= t)
            per = " ".join(f"{int(hit[labels == i].sum())}/{int((labels == i).sum())}" for i in range(len(names)))
            fc = int((score[p:] >= t).sum())
            print(f"  {t:.2f}  {per}  recall {hit.mean():.3f}  false {fc} ({fc / len(negatives):.2%})")
        if rule == "nearest":  # read these: a request that belongs here is a missed positive, not a false capture
            print("  unrelated prompts nearest to an example:")
            for i in np.argsort(-score[p:])[:10]:
                print(f"    {score[p + i]:.3f} {names[int(winner[p + i])]}: {json.dumps(negatives[i][:100])}")


if __name__ == "__main__":
    main()
