"""The hand-written system-prompt PII sets (offline/data/pii_system_*.jsonl) and how offline.pii_system scores them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from offline import pii_system
from router.classifier.pii import PERSON, STREET_ADDRESS
from router.signals import PIIFinding


@pytest.mark.parametrize("split", ["dev", "test"])
def test_each_set_holds_enough_labelled_prompts_of_both_groups(split: str) -> None:
    rows = pii_system.load(split)
    negatives = [r for r in rows if r["group"] == "negative"]
    positives = [r for r in rows if r["group"] == "positive"]
    assert len(negatives) >= 150 and len(positives) >= 80 and len(rows) == len(negatives) + len(positives)
    assert all(r["source"] == "written" and r["author"] and r["date"] for r in rows)
    assert not any(r["person_spans"] or r["address_spans"] for r in negatives)
    assert all(r["person_spans"] or r["address_spans"] for r in positives)
    for row in positives:  # every span is a whole phrase of its text
        for a, b in row["person_spans"] + row["address_spans"]:
            span = row["text"][a:b]
            assert span == span.strip() and span[0].isalnum() and not row["text"][b : b + 1].isalnum(), (row["id"], span)


def test_dev_and_test_share_no_prompt_and_no_name_or_address() -> None:
    def sentences(rows: list[dict[str, Any]]) -> set[str]:
        return {" ".join(s.lower().split()) for r in rows for s in re.split(r"[.\n]", r["text"]) if len(s.split()) > 4}

    def spans(rows: list[dict[str, Any]]) -> set[str]:
        return {r["text"][a:b] for r in rows for a, b in r["person_spans"] + r["address_spans"]}

    dev, test = pii_system.load("dev"), pii_system.load("test")
    assert not sentences(dev) & sentences(test)
    assert not spans(dev) & spans(test)


ROWS: list[dict[str, Any]] = [
    {"id": "n1", "group": "negative", "kind": "persona", "text": "You are Finn, a bot.", "person_spans": [],
     "address_spans": []},
    {"id": "n2", "group": "negative", "kind": "business_address", "text": "Shop at 2 Mill Road.", "person_spans": [],
     "address_spans": []},
    {"id": "p1", "group": "positive", "kind": "prose", "text": "The user is Ann Lee of 4 Elm Street.",
     "person_spans": [[12, 19]], "address_spans": [[23, 35]]},
]


def test_a_finding_of_the_wrong_type_is_no_hit_and_any_head_finding_on_a_negative_is_an_alarm() -> None:
    def detect(text: str) -> list[PIIFinding]:
        return {
            "You are Finn, a bot.": [PIIFinding(PERSON, 8, 12, 0.99)],
            "Shop at 2 Mill Road.": [PIIFinding("EMAIL_ADDRESS", 0, 4, 1.0)],  # the validators' types are not the head's
            "The user is Ann Lee of 4 Elm Street.": [PIIFinding(PERSON, 23, 35, 0.99)],  # an address typed PERSON
        }[text]

    result = pii_system.evaluate(ROWS, detect)
    assert result["false_alarms"] == 1 and result["alarms"][0]["id"] == "n1"  # type: ignore[index]
    assert result["address_recall"] == 0.0 and result["name_recall"] == 0.0


def test_the_persona_option_drops_the_assistant_name_only() -> None:
    keep = pii_system.OPTIONS["C names without persona names, addresses"]
    persona = PIIFinding(PERSON, 8, 12, 0.99)
    user, street = PIIFinding(PERSON, 12, 19, 0.99), PIIFinding(STREET_ADDRESS, 23, 35, 0.99)
    assert keep("You are Finn, a bot.", [persona]) == []
    assert keep("The user is Ann Lee of 4 Elm Street.", [user, street]) == [user, street]
    post_hoc = pii_system.OPTIONS["E addresses beside a named person (post hoc)"]
    assert post_hoc("The user is Ann Lee of 4 Elm Street.", [user, street]) == [street]
    assert post_hoc("Shop at 2 Mill Road.", [PIIFinding(STREET_ADDRESS, 8, 19, 0.99)]) == []
