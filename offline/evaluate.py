"""`semantic-router eval`: held-out figures of every head, through the same classify() the router serves.

Writes bench/results/classifier_eval.json and PNGs (domain confusion on MMLU and on hand-labelled chat, guard
threshold curves, PII min_score curve). The splits are rebuilt from the pinned packages exactly as training made
them (see train_data, jailbreak_data and offline/guard_data); the real-chat figures come from offline/chat_eval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from offline.jailbreak_data import JAILBREAK, jailbreak_splits
from offline.metrics import binary_report, multiclass_report
from offline.train_data import DOMAINS, HELD_OUT, SEED, domain_split
from router.classifier.model import EncoderClassifier, EncoderModels
from router.classifier.pii import detect_pii
from router.policy import Policy
from router.signals import Classification

PII_CACHE = Path("var/pii")
Classify = Callable[[Iterable[str]], list[Classification]]


def domain_report(classifier: Classify, texts: list[str], labels: list[str], policy: Policy | None) -> dict:
    """multiclass_report of the head's arg-max; with `policy`, also `routed_accuracy`: how often the category a
    request is routed by (Policy.category_for: keyword rules, the head if confident enough, else the default) is
    right, which is what users see."""
    signals = classifier(texts)
    report = multiclass_report(labels, [c.category or "" for c in signals], DOMAINS)
    if policy is not None:
        routed = [policy.category_for(t, s)[0] for t, s in zip(texts, signals, strict=True)]
        report["routed_accuracy"] = round(float(np.mean([r == y for r, y in zip(routed, labels, strict=True)])), 4)
        # Two categories the config sends to the same model with the same reasoning setting are one decision: what
        # a user can notice is the model and reasoning their request got, not the category's name.
        same = [_served(policy, r) == _served(policy, y) for r, y in zip(routed, labels, strict=True)]
        report["routed_decision_accuracy"] = round(float(np.mean(same)), 4)
    return report


def _served(policy: Policy, category: str) -> tuple[str, bool]:
    """The model and reasoning setting a request of `category` gets from the policy when every model may see it."""
    cat = policy.cfg.category(category)
    return policy.ranked(cat, lambda _: True).models[0], bool(cat and cat.use_reasoning)


def evaluate_domain(classifier: Classify, policy: Policy | None = None) -> dict:
    report: dict = {
        "split": f"MMLU de-duplicated by question text; per subject, shuffled with random.Random({SEED}), "
        f"first {HELD_OUT:.0%} held out (never trained on)",
    }
    for name, with_options in (("question_only", False), ("question_with_options", True)):
        _, held_out = domain_split(with_options)
        report[name] = domain_report(classifier, [e.text for e in held_out], [e.label for e in held_out], policy)
    return report


def evaluate_jailbreak(classifier: Classify, threshold: float) -> dict:
    report: dict = {"split": "by source, see offline/jailbreak_data.py; threshold set on validation"}
    splits = jailbreak_splits()
    for name in ("validation", "test"):
        examples = splits[name]
        scores = np.array([c.jailbreak_score for c in classifier([e.text for e in examples])])
        positive = np.array([e.label == JAILBREAK for e in examples])
        report[name] = binary_report(positive, scores, threshold)
        report[name]["by_source"] = {}
        for group in sorted({e.group for e in examples}):
            mask = np.array([e.group == group for e in examples])
            report[name]["by_source"][group] = binary_report(positive[mask], scores[mask], threshold)
    return report


def plot_confusion(result: dict, path: Path, title: str) -> None:
    """Row-normalised confusion matrix, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(result["confusion"], dtype=float)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    labels = result["labels"]
    figure, axes = plt.subplots(figsize=(10, 8.5))
    axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            axes.text(col, row, str(int(count)), ha="center", va="center", fontsize=7,
                      color="white" if share[row, col] > 0.5 else "black")  # fmt: skip
    axes.set_title(f"{title} (accuracy {result['accuracy']})")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_eval(
    models: EncoderModels, jailbreak_threshold: float, out_dir: Path, with_pii: bool = True, policy: Policy | None = None
) -> dict:
    """All figures into out_dir/classifier_eval.json (+ PNGs); returns the report. With the config's `policy`, the
    domain figures also say how often the routed category is right."""
    from offline import chat_eval, pii_chat, pii_eval

    started = time.monotonic()
    scored = chat_eval.Scored(EncoderClassifier(models, pii_enabled=False))  # each distinct text classified once
    domain = evaluate_domain(scored, policy)
    for name in chat_eval.DOMAIN_CHAT_SETS:
        domain[name] = chat_eval.evaluate_domain_chat(scored, policy, name)
    report: dict[str, object] = {
        "domain": domain,
        "jailbreak": evaluate_jailbreak(scored, jailbreak_threshold),
        "guards_real_chat": chat_eval.evaluate_guards(scored),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if with_pii:
        report["pii"] = pii_eval.evaluate_encoder(models.encoder, PII_CACHE)
        report["pii_chat"] = pii_chat.evaluate_chat(lambda text: detect_pii(text, models.encoder.encode(text)))
        report["pii_chat"]["min_score_curve"] = pii_chat.min_score_curve(models.encoder)
        pii_chat.plot_min_score_curve(report["pii_chat"]["min_score_curve"], out_dir / "pii_chat_curve.png")
    report["seconds"] = round(time.monotonic() - started, 1)
    (out_dir / "classifier_eval.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_confusion(domain["question_only"], out_dir / "domain_confusion.png", "Domain head, MMLU held-out, question only")
    plot_confusion(domain["chat"], out_dir / "domain_chat_confusion.png", "Domain head, hand-labelled real chat")
    chat_eval.plot_guard_curves(report["guards_real_chat"], out_dir / "guard_curves.png")
    return report
