"""Names and street addresses in system prompts: the hand-written sets, and how the PII head would do on them.

offline/data/pii_system_{dev,test}.jsonl (written by hand 2026-12-02, before any model ran on them; never trained on):
group "negative", PII-free system prompts as apps write them (personas with invented assistant names, brands and
products, a business's public address, tool instructions, RAG templates, formatting rules, long multi-paragraph
prompts); group "positive", system prompts carrying an end user's name or street address (prose, key: value profiles,
JSON, memory summaries, some with structured PII beside), each name a `person_spans` and each street address an
`address_spans` entry. A shop's or a company's public address is not personal data (a negative); a person's home or
delivery address is. Whether the router should read system prompts for names and addresses is chosen on dev by the
rule in the classifier README ("System prompts"); the test set is run once, for the option that rule picks.

    PYTHONPATH=. .venv/bin/python -m offline.pii_system [--split dev]
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offline.chat_data import jsonl_rows
from router.classifier.canonical import canonical
from router.classifier.encoder import Encoder
from router.classifier.pii import DEFAULT_HEAD, PERSON, STREET_ADDRESS, TokenHead, detect_pii
from router.signals import PIIFinding

DATA = Path(__file__).with_name("data")
HEAD_TYPES = (PERSON, STREET_ADDRESS)
MIN_SCORES = (0.9, 0.95, 0.98, 0.99)  # 0.9 is the shipped head's, as for user turns
# The name an app gives its assistant ("You are Finn", "Your name is Max", "I'm Sol"): not a person.
_PERSONA = re.compile(r"(?:\byou are|\byou're|\byour name is|\bi am|\bi'm)\s+$", re.IGNORECASE)
Detector = Callable[[str], Sequence[PIIFinding]]
Keep = Callable[[str, Sequence[PIIFinding]], Sequence[PIIFinding]]  # an option: the findings it keeps of a text


def load(split: str) -> list[dict[str, Any]]:
    return jsonl_rows(DATA / f"pii_system_{split}.jsonl")


def _hits(findings: Sequence[PIIFinding], kind: str, spans: Sequence[Sequence[int]]) -> bool:
    return any(f.type == kind and f.start < b and a < f.end for f in findings for a, b in spans)


def evaluate(rows: Sequence[Mapping[str, Any]], detect: Detector) -> dict[str, object]:
    """False alarms (a negative with any name or address finding) and recall per positive prompt: its name (address)
    counts as found when a PERSON (STREET_ADDRESS) finding overlaps one of its labelled spans."""
    negatives = [r for r in rows if r["group"] == "negative"]
    alarms = []
    for row in negatives:
        types = sorted({f.type for f in detect(row["text"]) if f.type in HEAD_TYPES})
        if types:
            alarms.append({"id": row["id"], "kind": row["kind"], "types": types, "text": row["text"][:120]})
    found = {r["id"]: detect(r["text"]) for r in rows if r["group"] == "positive"}
    names = [r for r in rows if r["person_spans"]]
    addresses = [r for r in rows if r["address_spans"]]
    return {
        "negatives": len(negatives),
        "false_alarms": len(alarms),
        "false_alarms_not_business_address": sum(a["kind"] != "business_address" for a in alarms),
        "name_recall": round(sum(_hits(found[r["id"]], PERSON, r["person_spans"]) for r in names) / len(names), 4),
        "name_prompts": len(names),
        "address_recall": round(
            sum(_hits(found[r["id"]], STREET_ADDRESS, r["address_spans"]) for r in addresses) / len(addresses), 4),
        "address_prompts": len(addresses),
        "alarms": alarms,
    }


def _not_persona(text: str, found: Sequence[PIIFinding]) -> Sequence[PIIFinding]:
    return [f for f in found if f.type != PERSON or not _PERSONA.search(text[max(0, f.start - 40) : f.start])]


OPTIONS: dict[str, Keep] = {
    "A head as for user turns": lambda text, found: found,
    "B addresses only": lambda text, found: [f for f in found if f.type == STREET_ADDRESS],
    "C names without persona names, addresses": _not_persona,
    # Added after A-C failed the rule on dev (not pre-registered): an address counts only in a prompt that also
    # names a person (persona names dropped), so a business's own address alone is not flagged.
    "E addresses beside a named person (post hoc)": lambda text, found: (
        [f for f in found if f.type == STREET_ADDRESS] if any(f.type == PERSON for f in _not_persona(text, found))
        else []),
}


def option_table(encoder: Encoder, split: str = "dev") -> dict[str, dict[str, object]]:
    """Every option at every min_score on one split; each text is encoded once (in its canonical form, as the
    classifier reads it), only the head's decoding and the option's filter change."""
    rows = load(split)
    encoded = {r["text"]: encoder.encode(canonical(r["text"])) for r in rows}
    with np.load(DEFAULT_HEAD, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    table = {}
    for min_score in MIN_SCORES:
        head = TokenHead.from_arrays(arrays, min_score)
        for name, keep in OPTIONS.items():

            def detect(text: str, head: TokenHead = head, keep: Keep = keep) -> Sequence[PIIFinding]:
                return keep(text, detect_pii(canonical(text), encoded[text], head))

            table[f"{name} @ {min_score}"] = evaluate(rows, detect)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--model-dir", type=Path, default=Path("models/minilm"))
    args = parser.parse_args()
    table = option_table(Encoder(args.model_dir, threads=1), args.split)
    for name, row in table.items():
        print(json.dumps({"option": name, **{k: v for k, v in row.items() if k != "alarms"}}))


if __name__ == "__main__":
    main()
