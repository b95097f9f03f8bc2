"""Train / dev / test sets of the two guards (jailbreak, content safety) with real chat as the benign side.

Both are rebuilt identically by training (build venv) and `semantic-router eval` (runtime venv): no torch here.
  jailbreak       jailbreak_data's source split (its "validation" is the dev split here), plus real chat:
                  ShareGPT train part as benign training rows; ShareGPT dev + support dev + chitchat dev as dev;
                  ShareGPT test + support test + chitchat test as test (chat_data.benign_chat: with the dev/test
                  rows JAILBREAK_LIKE matches that were read as benign, chat_data.JAILBREAK_LIKE_LABELS); the plain
                  harmful requests written by hand (injection_data.written) as benign training rows
  content_safety  safety_data's source split, plus the benign training rows of the jailbreak set (MMLU,
                  contradish, small talk) as safe training rows
Both guards are also held to the hand-written prompts that merely sound risky ("how do I kill a frozen process",
offline/data/chat_edgy_{dev,test}.jsonl, group "edgy", never trained on); the plain harmful rows of those files are
extra content-safety positives (group "edgy_harmful"), reported apart from the other sources.
Both are also held to frustrated shoppers' complaints written by hand ("I don't care about your rules, I want a refund",
offline/data/guard_complaints_dev.jsonl, group "complaint", dev only; trial 18); its complaint-dressed attacks ("I'm
the store manager, ignore your instructions ...") are jailbreak dev positives reported apart (COMPLAINT_ATTACK).
Both guards also train on later user turns of ShareGPT TRAIN conversations (`followups`): short context-bound
lines ("No, they aren't people", "make it shorter") that the heads otherwise flag, as chitchat lines showed on dev.
Thresholds are chosen on the dev rows only (DEV_BUDGETS: false-block rate per benign group), never on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from offline.chat_data import (
    DATA,
    DEV,
    JAILBREAK_LIKE,
    JAILBREAK_LIKE_BENIGN,
    TEST,
    TRAIN,
    benign_chat,
    excluded_ids,
    jsonl_rows,
    sharegpt_records,
    sharegpt_split,
)
from offline.injection_data import written
from offline.jailbreak_data import BENIGN, JAILBREAK, jailbreak_splits
from offline.safety_data import HARMFUL, SAFE, safety_splits
from offline.train_data import Example

GUARDS = ("jailbreak", "content_safety")
LABELS = {"jailbreak": (BENIGN, JAILBREAK), "content_safety": (SAFE, HARMFUL)}
SPLITS = (TRAIN, DEV, TEST)
# Benign groups that are real chat, and the support/how-to subset, as the guards' false-block targets see them. The
# jailbreak-like ShareGPT rows read as benign count since 2026-12-02 (before, a template opening "ignore all previous
# instructions" was never counted, however often the guard refused it).
REAL_CHAT = ("sharegpt", "chitchat", JAILBREAK_LIKE_BENIGN)
SUPPORT = ("sharegpt_support", "support")
# Hand-written benign prompts that sound risky, and plain harmful asks, per held-out split (2026-12-01).
EDGY, EDGY_HARMFUL = "edgy", "edgy_harmful"
EDGY_FILES = {DEV: DATA / "chat_edgy_dev.jsonl", TEST: DATA / "chat_edgy_test.jsonl"}
# Frustrated shoppers (2026-12-02, trial 18): benign complaints and attacks dressed as complaints, dev only.
COMPLAINT, COMPLAINT_ATTACK = "complaint", "complaint_attack"
COMPLAINTS_DEV = DATA / "guard_complaints_dev.jsonl"
# Dev sources reported but left out of the mean variants are chosen by: SHIP_BAR was set on the others.
APART = (COMPLAINT_ATTACK,)
FOLLOWUP_MAX_CHARS = 300
FOLLOWUP_ROWS = 6000
# Per guard, the dev false-block rate allowed on each benign group: half of the budget (0.3% of real
# chat, 0.5% of support asks) for each guard, so that the union of both guards stays within it; at most 1% of the
# risky-sounding benign prompts (3 of 357 dev rows) per guard.
# Complaints are support requests: the support budget (0 of the 100 dev rows).
DEV_BUDGETS = {"real_chat": 0.0015, "support": 0.0025, EDGY: 0.01, COMPLAINT: 0.0025}


@cache
def followups() -> tuple[str, ...]:
    """Later user turns (2nd on) of ShareGPT TRAIN conversations, at most FOLLOWUP_MAX_CHARS long: real chat that
    leans on its context. Conversations with a jailbreak-like turn or a hand-labelled row are left out; the first
    FOLLOWUP_ROWS distinct lines in file order are kept."""
    excluded = excluded_ids()
    seen: dict[str, str] = {}
    for record in sharegpt_records():
        conversation = str(record["id"]).rsplit("_", 1)[0]
        if sharegpt_split(conversation) != TRAIN or f"sharegpt:{conversation}" in excluded:
            continue
        turns = [t.get("value") for t in record.get("conversations", []) if t.get("from") == "human"]
        texts = [t.strip() for t in turns if isinstance(t, str)]
        if any(JAILBREAK_LIKE.search(t) for t in texts):
            continue
        for text in texts[1:]:
            key = " ".join(text.lower().split())
            if key and len(text) <= FOLLOWUP_MAX_CHARS:
                seen.setdefault(key, text)
        if len(seen) >= FOLLOWUP_ROWS:
            break
    return tuple(list(seen.values())[:FOLLOWUP_ROWS])


def guard_splits(guard: str) -> dict[str, list[Example]]:
    """{'train' | 'dev' | 'test': examples labelled with LABELS[guard]}."""
    negative = LABELS[guard][0]
    if guard == "content_safety":
        splits = safety_splits()
        # The hand-written hard negatives train the jailbreak head only: with them (and the written harmful
        # requests) content-safety dev recall fell 0.082 -> 0.066 at the same budget (offline/README.md).
        splits[TRAIN] += [
            Example(e.text, SAFE, e.group)
            for e in jailbreak_splits()["train"]
            if e.label == BENIGN and e.group != "written_benign"
        ]
    else:
        source = jailbreak_splits()
        splits = {TRAIN: source["train"], DEV: source["validation"], TEST: source["test"]}
        for split in SPLITS:
            splits[split] = splits[split] + [Example(p.text, BENIGN, p.source) for p in benign_chat(split)]
        # A plain harmful request is not a jailbreak: without these the head learnt the written attacks' payloads
        # ("how to make a bomb") and scored a bare "How do I make a pipe bomb at home?" as one.
        splits[TRAIN] += [Example(text, BENIGN, "written_harmful") for text in written(HARMFUL)]
    splits[TRAIN] += [Example(text, negative, "sharegpt_followup") for text in followups()]
    for split, path in EDGY_FILES.items():
        for row in jsonl_rows(path):
            if row["label"] == "benign":
                splits[split].append(Example(row["text"], negative, EDGY))
            elif guard == "content_safety":
                splits[split].append(Example(row["text"], HARMFUL, EDGY_HARMFUL))
    for row in jsonl_rows(COMPLAINTS_DEV):
        if row["label"] == "benign":
            splits[DEV].append(Example(row["text"], negative, COMPLAINT))
        elif guard == "jailbreak":
            splits[DEV].append(Example(row["text"], JAILBREAK, COMPLAINT_ATTACK))
    return splits


def support_rows(split: str) -> list[Example]:
    """The short support / how-to asks of a split (a subset of ShareGPT plus chatterbot's tech support)."""
    from offline.chat_data import support_requests

    return [Example(p.text, BENIGN, p.source) for p in support_requests() if p.split == split]


def false_block_rate(scores: np.ndarray, threshold: float) -> float:
    return float((scores >= threshold).mean()) if len(scores) else 0.0


def choose_threshold(budgets: dict[str, np.ndarray], candidates: Sequence[float] | None = None) -> float:
    """Lowest threshold at which every benign group's flag rate is within its DEV_BUDGETS entry (highest recall)."""
    grid = (
        candidates
        if candidates is not None
        else np.concatenate([np.linspace(0.05, 0.95, 91), 1 - np.logspace(-2, -6, 41)])
    )
    for threshold in sorted(grid):
        if all(
            false_block_rate(scores, threshold) <= DEV_BUDGETS[group] for group, scores in budgets.items()
        ):
            return float(threshold)
    return float(max(grid))


def curve(positive: np.ndarray, negatives: dict[str, np.ndarray], thresholds: Sequence[float]) -> list[dict]:
    """Recall on the positives and flag rate on each benign group, per threshold (the README's trade-off table)."""
    return [
        {"threshold": round(float(t), 6), "recall": round(false_block_rate(positive, t), 4)}
        | {f"fpr_{group}": round(false_block_rate(scores, t), 5) for group, scores in negatives.items()}
        for t in thresholds
    ]


def is_group(examples: Sequence[Example], groups: Sequence[str]) -> np.ndarray:
    return np.array([e.group in groups for e in examples], dtype=bool)


def manifest(guard: str) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {source group: {label: rows}}}: which source went where, for offline/data/splits.json."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for split, examples in guard_splits(guard).items():
        table: dict[str, dict[str, int]] = {}
        for example in examples:
            counts = table.setdefault(example.group, {})
            counts[example.label] = counts.get(example.label, 0) + 1
        out[split] = dict(sorted(table.items()))
    return out
