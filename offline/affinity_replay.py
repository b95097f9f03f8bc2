"""`python -m offline.affinity_replay [--split train|dev] [--conversations 360]`: whole ShareGPT conversations
replayed turn by turn through the router's policy and affinity code in process (no Envoy, no upstream), counting
what a chat user notices: the model changing mid-conversation.

Each user turn is sent with the conversation's real history, as a client would, under one API key and the
`conversation` affinity key; the classification is the router's (keyword rules, domain head, example categories).
Not replayed: the guards (their scores are zeroed: a refused turn is finding 1's, not routing's) and PII (the
classifier runs without it: a PII-forced move is the PII policy's, not affinity's). Conversations: English parts
`_0` of the split with 2-10 user turns of at most 6,000 characters each, shuffled with a fixed seed; choose
rules on TRAIN, count DEV once as the held-out figure.

Counted per turn after the first: `changes` (the model differs from the previous turn's), `late_pins` (a
conversation first decided at this turn: x-vsr-affinity `new`), `late_weak` (of those, decided by the classifier
below 0.5), `switched`, and `left`: a turn whose own category (not the default one, confidence >= 0.5) would get
another model than the one answering it, a conversation kept on a model its turns confidently leave.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import random
from collections import Counter
from pathlib import Path

from offline.chat_data import DEV, TRAIN, sharegpt_records, sharegpt_split
from router import affinity
from router.classifier.model import EncoderClassifier, load_classifier
from router.config import RouterConfig, load_config
from router.openai_wire import bounded, parse_chat_request
from router.policy import Policy
from router.signals import Classification

WEAK = 0.5  # below it the head is more unsure than sure: a "weak" late pin, and not a confident leave
HEADERS = {"authorization": "Bearer sk-replay"}


def conversations(split: str, limit: int, seed: int = 12) -> list[list[str]]:
    """The user turns of `limit` conversations of `split` (see the module docstring)."""
    pool = []
    for record in sharegpt_records():
        rid = str(record.get("id", ""))
        if not rid.endswith("_0") or sharegpt_split(rid.rsplit("_", 1)[0]) != split:
            continue
        turns = [t.get("value") for t in record.get("conversations", []) if t.get("from") == "human"]
        if 2 <= len(turns) <= 10 and all(isinstance(t, str) and 1 <= len(t) <= 6000 and _english(t) for t in turns):
            pool.append(turns)
    random.Random(seed).shuffle(pool)
    return pool[:limit]


def _english(text: str) -> bool:
    return sum(c.isascii() for c in text) >= 0.95 * len(text)


class Replay:
    """One config's policy, a fresh pin store, and the classifier's answers memoised by text."""

    def __init__(self, cfg: RouterConfig, classifier: EncoderClassifier):
        self.cfg, self.policy, self.classifier = cfg, Policy(cfg), classifier
        self.store = affinity.MemoryPins()
        self._seen: dict[str, Classification] = {}

    def signal(self, text: str) -> Classification:
        if text not in self._seen:
            read = self.classifier.classify(bounded(text, self.cfg.classifier.max_scan_chars))
            self._seen[text] = dataclasses.replace(read, jailbreak_score=0.0, content_safety_score=0.0)
        return self._seen[text]

    async def conversation(self, n: int, turns: list[str]) -> list[tuple[str, str, float, str, str]]:
        """(answering model, affinity, own confidence, own category, own model) per turn."""
        messages: list[dict[str, str]] = []
        out = []
        for i, text in enumerate(turns):
            messages.append({"role": "user", "content": text})
            body = {"model": "auto", "messages": messages, "user": f"replay-{n}"}
            chat = parse_chat_request(json.dumps(body).encode())
            signal = self.signal(text)
            own = self.policy.decide(chat, signal, bounded(text, self.cfg.classifier.max_scan_chars))
            earlier = [(t, self.signal(t)) for t in turns[:i]]
            decision, how = await affinity.resolve(self.policy, self.store, chat, HEADERS, own, signal, "replay",
                                                   earlier)
            out.append((decision.model, how, own.confidence, own.category, own.model))
            messages.append({"role": "assistant", "content": f"(answer {i + 1})"})
        return out


async def replay(cfg: RouterConfig, classifier: EncoderClassifier, convs: list[list[str]]) -> Counter[str]:
    counts: Counter[str] = Counter(conversations=len(convs))
    run = Replay(cfg, classifier)
    for n, turns in enumerate(convs):
        rows = await run.conversation(n, turns)
        changed = False
        for previous, (model, how, confidence, category, own_model) in itertools.pairwise(rows):
            counts["later_turns"] += 1
            if model != previous[0]:
                counts["changes"] += 1
                changed = True
            counts["late_pins"] += how == affinity.NEW
            counts["late_weak"] += how == affinity.NEW and confidence < WEAK
            counts["switched"] += how == affinity.SWITCHED
            counts["left"] += category != cfg.default_category and confidence >= WEAK and own_model != model
        counts["conversations_changed"] += changed
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m offline.affinity_replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--split", choices=[TRAIN, DEV], default=TRAIN)
    parser.add_argument("--conversations", type=int, default=360)
    args = parser.parse_args()
    cfg = load_config(args.config)
    classifier = load_classifier(cfg.model_copy(update={"classifier": cfg.classifier.model_copy(
        update={"pii_enabled": False})}))
    counts = asyncio.run(replay(cfg, classifier, conversations(args.split, args.conversations)))
    print(json.dumps({"split": args.split, **counts}))


if __name__ == "__main__":
    main()
