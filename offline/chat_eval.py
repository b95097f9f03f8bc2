"""Issue 10's figures on real chat, through the same classify() the router serves (one encoder pass per text).

  domain          accuracy / macro-F1 on the hand-labelled chat test set (offline/data/chat_domain_test.jsonl), and
                  the accuracy of the category the config's policy routes by (confidence threshold, default)
  guards          per guard: recall on its held-out attack / harmful sources (test split) at the default 0.5;
                  false blocks (jailbreak OR content safety at 0.5) on real chat test (ShareGPT test, its
                  jailbreak-like rows read as benign, chitchat test), on the short support / how-to test subset
                  and on the risky-sounding written prompts (offline/data/chat_edgy_test.jsonl, group "edgy");
                  content safety's recall on that file's harmful rows apart from HarmBench's; threshold curves
                  for the README table. Each text is scored as a plain chat's user turn; `with_system_prompt`
                  scores it as one in a request with instructions the user did not type (a plain override
                  counts there: router/classifier/injection_rules.in_request)
  pii             false alarms on hand-read and rule-selected PII-free chat, PERSON recall on chitchat names,
                  plus the min_score curve of the token head
Nothing here chooses a threshold: they were set on dev by training (offline/train_guards.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from offline.chat_data import DATA, JAILBREAK_LIKE_BENIGN, TEST, jsonl_rows
from offline.evaluate import domain_report
from offline.guard_data import (
    EDGY,
    EDGY_HARMFUL,
    GUARDS,
    LABELS,
    REAL_CHAT,
    curve,
    guard_splits,
    is_group,
    support_rows,
)
from router.classifier.injection_rules import in_request
from router.classifier.model import EncoderClassifier
from router.policy import Policy
from router.signals import Classification

CURVE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
OPERATING_POINT = 0.5


class Scored:
    """classify() once per distinct text, kept for every figure that needs it."""

    def __init__(self, classifier: EncoderClassifier) -> None:
        self.classifier = classifier
        self._seen: dict[str, Classification] = {}

    def __call__(self, texts: Iterable[str]) -> list[Classification]:
        out = []
        for text in texts:
            if text not in self._seen:
                self._seen[text] = self.classifier.classify(text)
            out.append(self._seen[text])
        return out

    def score(self, guard: str, texts: Iterable[str], foreign: bool = False) -> np.ndarray:
        """`guard`'s scores, each text as a plain chat's turn, or (`foreign`) in a request with a system prompt."""
        if guard == "jailbreak":
            return np.array([in_request(c, foreign).jailbreak_score for c in self(texts)], dtype=np.float64)
        return np.array([c.content_safety_score for c in self(texts)], dtype=np.float64)

    def blocked(self, texts: Sequence[str], foreign: bool = False) -> np.ndarray:
        """Either guard at its operating point: what a request sees with both guards on `block`."""
        return np.array(
            [max(in_request(c, foreign).jailbreak_score, c.content_safety_score) >= OPERATING_POINT
             for c in self(texts)],
            dtype=bool,
        )


# The hand-labelled chat test sets: the first (evaluated after every change since 2026-11-29, so seen), then fresh ones
# labelled before any model predicted on them; v2 and v3 balance the domains, v4 is the natural traffic mix.
DOMAIN_CHAT_SETS = {
    "chat": ("chat_domain_test.jsonl", "ShareGPT + chatterbot prompts labelled by reading them"),
    "chat_v2": ("chat_domain_test_v2.jsonl", "ShareGPT TEST-split prompts labelled by reading them (fresh)"),
    "chat_v3": ("chat_domain_test_v3.jsonl", "ShareGPT DEV-split and later TEST-split prompts labelled by reading"),
    "chat_v4": ("chat_domain_test_v4.jsonl", "a seeded random sample of ShareGPT TEST first turns: the natural mix"),
}


def evaluate_domain_chat(scored: Scored, policy: Policy | None = None, name: str = "chat") -> dict:
    file, what = DOMAIN_CHAT_SETS[name]
    rows = jsonl_rows(DATA / file)
    report = domain_report(scored, [r["text"] for r in rows], [r["label"] for r in rows], policy)
    report["set"] = f"offline/data/{file}: {what}"
    return report


def _rate(flags: np.ndarray) -> float:
    return round(float(flags.mean()), 5) if len(flags) else 0.0


def evaluate_guards(scored: Scored) -> dict:
    """Recall per guard on its held-out positives, false blocks of both guards together on held-out real chat."""
    report: dict = {}
    benign_chat: list[str] = []
    read_benign: list[str] = []
    edgy: list[str] = []
    for guard in GUARDS:
        test = guard_splits(guard)[TEST]
        # The written harmful asks (EDGY_HARMFUL) are reported apart: `recall` stays the held-out corpus's figure.
        positive = [e for e in test if e.label == LABELS[guard][1] and e.group != EDGY_HARMFUL]
        benign = [e for e in test if e.label == LABELS[guard][0]]
        pos_scores = scored.score(guard, [e.text for e in positive])
        chat = [e.text for e in benign if e.group in REAL_CHAT]
        benign_chat = benign_chat or chat
        read_benign = read_benign or [e.text for e in benign if e.group == JAILBREAK_LIKE_BENIGN]
        edgy = edgy or [e.text for e in benign if e.group == EDGY]
        negatives = {
            "real_chat": scored.score(guard, chat),
            "support": scored.score(guard, [e.text for e in support_rows(TEST)]),
            EDGY: scored.score(guard, edgy),
            "all_benign": scored.score(guard, [e.text for e in benign]),
        }
        report[guard] = {
            "recall": _rate(pos_scores >= OPERATING_POINT),
            "positives": len(positive),
            "recall_by_source": {
                group: _rate(pos_scores[is_group(positive, [group])] >= OPERATING_POINT)
                for group in sorted({e.group for e in positive})
            },
            "false_block_alone": {name: _rate(s >= OPERATING_POINT) for name, s in negatives.items()},
            "curve": curve(pos_scores, negatives, CURVE_THRESHOLDS),
        }
        if guard == "jailbreak":
            with_prompt = scored.score(guard, [e.text for e in positive], foreign=True)
            report[guard]["with_system_prompt"] = {
                "recall": _rate(with_prompt >= OPERATING_POINT),
                "false_block_alone": {name: _rate(scored.score(guard, texts, foreign=True) >= OPERATING_POINT)
                                      for name, texts in (("real_chat", chat), (JAILBREAK_LIKE_BENIGN, read_benign))},
            }
        if edgy_harmful := [e.text for e in test if e.group == EDGY_HARMFUL]:
            report[guard]["edgy_harmful_recall"] = _rate(scored.score(guard, edgy_harmful) >= OPERATING_POINT)
            report[guard]["edgy_harmful_n"] = len(edgy_harmful)
    support = [e.text for e in support_rows(TEST)]
    # The jailbreak-like rows read as benign are part of real_chat, and apart: real_chat before 2026-12-02 lacked them.
    texts = {"real_chat": benign_chat, "support": support, EDGY: edgy, JAILBREAK_LIKE_BENIGN: read_benign}
    blocked = {name: scored.blocked(rows) for name, rows in texts.items()}
    report["false_blocks"] = {}
    for name, flags in blocked.items():
        report["false_blocks"] |= {name: _rate(flags), f"{name}_n": len(flags)}
    examples = [(t, b) for name in ("real_chat", "support") for t, b in zip(texts[name], blocked[name], strict=True)]
    report["false_blocks"]["examples"] = [t[:160] for t, b in examples if b][:20]
    report["false_blocks"]["edgy_examples"] = [t[:160] for t, b in zip(edgy, blocked[EDGY], strict=True) if b][:30]
    report["false_blocks"]["real_chat_with_system_prompt"] = _rate(scored.blocked(benign_chat, foreign=True))
    return report


def plot_guard_curves(report: dict, path: Path) -> None:
    """Recall and false-block rates against the threshold, one panel per guard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, len(GUARDS), figsize=(11, 4.2))
    for axes, guard in zip(panels, GUARDS, strict=True):
        points = report[guard]["curve"]
        x = [p["threshold"] for p in points]
        axes.plot(x, [p["recall"] for p in points], "o-", label="recall (held-out sources)")
        for key, style in (
            ("fpr_real_chat", "s--"), ("fpr_support", "^--"), ("fpr_edgy", "d--"), ("fpr_all_benign", "x:")
        ):
            axes.plot(x, [100 * p[key] for p in points], style, label=f"{key[4:]} flagged, % (x100)")
        axes.axvline(OPERATING_POINT, color="grey", lw=0.8)
        axes.set_title(f"{guard} (default threshold {OPERATING_POINT})")
        axes.set_xlabel("threshold")
        axes.set_ylim(-0.02, 1.02)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
