"""Routed domain accuracy of two configs on the hand-labelled chat sets, and every row whose category changes.

For judging a keyword-rule edit once on a held-out set: the shipped head classifies each text once, each config's
policy routes it (`Policy.category_for`: rules, threshold, default category).

    PYTHONPATH=$PWD .venv/bin/python -m offline.compare_routing BEFORE.yaml AFTER.yaml chat_v4,chat_v3
"""

from __future__ import annotations

import sys

from offline.chat_data import jsonl_rows
from offline.chat_eval import DATA, DOMAIN_CHAT_SETS
from router.classifier.model import EncoderClassifier, shared_models
from router.config import load_config
from router.policy import Policy


def main(argv: list[str]) -> int:
    before, after = load_config(argv[0]), load_config(argv[1])
    classifier = EncoderClassifier(shared_models(before.classifier), pii_enabled=False)
    policies = Policy(before), Policy(after)
    for name in argv[2].split(","):
        rows = jsonl_rows(DATA / DOMAIN_CHAT_SETS[name][0])
        right, changed = [0, 0], []
        for row in rows:
            signal = classifier.classify(row["text"])
            routed = [policy.category_for(row["text"], signal)[0] for policy in policies]
            right = [n + (category == row["label"]) for n, category in zip(right, routed, strict=True)]
            if routed[0] != routed[1]:
                changed.append(f"{row['id']}: {row['label']} routed {routed[0]} -> {routed[1]}")
        print(f"{name}: {len(rows)} rows, routed right {right[0]} -> {right[1]}")
        for line in changed:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
