"""The reading order for chat_domain_test_v4.jsonl: a seeded shuffle of eligible ShareGPT TEST first turns.

v4 measures the natural traffic mix, so rows are read in this order and labelled (or skipped) until 300 are
labelled, with no search or balancing; one row per conversation (its first part in the shuffled order), so
related parts do not count twice. Eligible: a TEST-split first user turn, not `JAILBREAK_LIKE`, 15-2,000
characters, mostly Latin letters (other scripts are not English; other Latin-script languages are skipped by
reading), its conversation without a row in any offline/data/**/*.jsonl file, and its text (lower case, words only)
found neither in such a file nor in any turn of a TRAIN conversation. Nothing here scores a prompt.

    PYTHONPATH=$PWD .venv/bin/python -m offline.chat_v4_sample /tmp/v4_order.jsonl
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from offline.chat_data import DATA, TEST, TRAIN, conversation, sharegpt, sharegpt_records, sharegpt_split

SEED = 20261202
V4 = "chat_domain_test_v4.jsonl"  # the file this order was read for: left out, so the order can be rebuilt later
MIN_CHARS, MAX_CHARS = 15, 2000
WORD = re.compile(r"[^\W_]+")


def words(text: str) -> str:
    """Lower case, words only: the form two copies of a prompt share despite punctuation and spacing."""
    return " ".join(WORD.findall(text.lower()))


def _latin(text: str) -> bool:
    """Most letters are ASCII: drops CJK, Cyrillic, Hangul, ... prompts without reading them."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= 0.9 * len(letters)


def _labelled() -> tuple[set[str], str]:
    """Conversations with a row in any other offline/data/**/*.jsonl file, and all their texts as one string."""
    ids, texts = set(), []
    for path in sorted(p for p in DATA.rglob("*.jsonl") if p.name != V4):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            if "id" in row:
                ids.add(conversation(str(row["id"])))
            texts += [f" {words(v)} " for v in row.values() if isinstance(v, str)]
    return ids, "\n".join(texts)


def _train_text() -> str:
    """Every turn (either side) of every TRAIN conversation, words only, space-padded so matches are whole words."""
    return "\n".join(
        f" {words(turn['value'])} "
        for record in sharegpt_records()
        if sharegpt_split(str(record["id"]).rsplit("_", 1)[0]) == TRAIN
        for turn in record.get("conversations", [])
        if isinstance(turn.get("value"), str)
    )


def reading_order() -> list[dict[str, str]]:
    ids, labelled = _labelled()
    train = _train_text()
    pool = sorted(
        (p for p in sharegpt()
         if p.split == TEST and p.source == "sharegpt" and MIN_CHARS <= len(p.text) <= MAX_CHARS
         and _latin(p.text) and conversation(p.id) not in ids),
        key=lambda p: p.id,
    )  # fmt: skip
    eligible = [p for p in pool if (key := f" {words(p.text)} ") not in labelled and key not in train]
    random.Random(SEED).shuffle(eligible)
    first = {conversation(p.id): p for p in reversed(eligible)}  # a conversation's earliest part in shuffled order
    order = [p for p in eligible if first[conversation(p.id)] is p]
    print(f"{len(pool)} TEST first turns pass the id/length/script filters, {len(eligible)} the text filter, "
          f"{len(order)} conversations")
    return [{"id": p.id, "text": p.text} for p in order]


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reading_order()), encoding="utf-8")
