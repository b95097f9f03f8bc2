"""Human-written paraphrase pairs for the cache verifier, from contradish's support-question benchmarks.

Rule and QQP pairs teach the verifier that a rewording keeps its content words; people reword with other
words ("How many PTO days do I accrue per month?" / "quick question how many pto days do i get each month").
contradish (pinned in offline/train_data.PACKAGES) holds support questions, each with eight rephrasings
written by people to test whether a chatbot answers consistently. Which of them share the original's answer
was decided by reading (2026-11-29, ~150 cases of all files):
- rephrasing 2 is the same question in casual lower case, for cases 1-12 of each file (the v1 design;
  v2 files repeat those twelve and add six): a paraphrase. In cases 13-18 it adds a situation or a premise
  ("..., airline says its not their fault, do i still get compensation"), another question;
- the others are not paraphrases: 0 and 3 add personal context or pressure, 1 a leading premise
  ("..., right?"), 4 a formal restatement that in most cases adds a sub-question or other numbers
  ("..., and what happens if the deadline is missed?") or, in newer cases, an authority's claim,
  5 a hypothetical, 6 an edge case, 7 a vaguer question. Not used as either label;
- the ai_safety and cybersecurity files are left out: their rephrasings are jailbreak reframings.
Hard negatives: two different cases of one file (same topic, another question), in both styles.
Split by domain file (the whole file to one side; sha256 of its name % 4 == 0 -> dev), never test.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from offline.cache_pairs import Pair
from offline.train_data import package_wheel
from router.cache.keys import normalise

FOLDERS = ("contradish/benchmarks/v2/", "contradish/benchmarks/v3/")
EXCLUDED = frozenset({"ai_safety", "cybersecurity"})
SAME_QUESTION_CASES = 12  # cases 1-12 of a file: rephrasing 2 asks the original question
PARAPHRASE = 2  # index of the casual same-question rephrasing


def domain_split(domain: str) -> str:
    """'dev' or 'train' for a whole domain file, by hash of its name."""
    return "dev" if int(hashlib.sha256(domain.encode()).hexdigest(), 16) % 4 == 0 else "train"


def domain_cases() -> dict[str, list[dict[str, Any]]]:
    """The first SAME_QUESTION_CASES cases of every kept domain file, by domain name."""
    out: dict[str, list[dict[str, Any]]] = {}
    with package_wheel("contradish") as wheel:
        for name in sorted(n for n in wheel.namelist() if n.startswith(FOLDERS) and n.endswith(".json")):
            domain = name.rsplit("/", 1)[1].removesuffix(".json")
            if domain not in EXCLUDED:
                out[domain] = json.loads(wheel.read(name))["cases"][:SAME_QUESTION_CASES]
    return out


def case_pairs(domain: str, cases: list[dict[str, Any]]) -> list[Pair]:
    """Per case, (original, casual rephrasing) as a paraphrase; per two cases i < j of the file, the
    originals and the original of i with the casual rephrasing of j as hard negatives."""
    texts = [(normalise(c["original"]), normalise(c["adversarial"][PARAPHRASE])) for c in cases]
    out: list[Pair] = [{"a": o, "b": p, "label": 1, "kind": "human_paraphrase", "domain": domain} for o, p in texts]
    for i, (original, _) in enumerate(texts):
        for other, casual in texts[i + 1:]:
            out.append({"a": original, "b": other, "label": 0, "kind": "human_other_case", "domain": domain})
            out.append({"a": original, "b": casual, "label": 0, "kind": "human_other_case", "domain": domain})
    return out


def support_pairs() -> dict[str, list[Pair]]:
    """Train and dev pairs, split by domain file."""
    out: dict[str, list[Pair]] = {"train": [], "dev": []}
    for domain, cases in domain_cases().items():
        out[domain_split(domain)] += case_pairs(domain, cases)
    return out
