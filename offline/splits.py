"""Write offline/data/splits.json: which source went to train, dev and test for every head, with the seeds.

`python -m offline.splits` (runtime venv). Rebuilt from the pinned packages by the same functions training and
evaluation use, so the manifest cannot drift from what they read.
"""

from __future__ import annotations

import json
from collections import Counter

from offline import chat_data, guard_data
from offline.chat_data import DATA
from offline.pii_eval import HELDOUT_FRACTION, TRAIN_SEED
from offline.train_data import HELD_OUT, PACKAGES, SEED

OUT = DATA / "splits.json"


def _jsonl_counts(name: str, key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(row.get(key, "?")) for row in chat_data.jsonl_rows(DATA / name)).items()))


def hand_labelled() -> dict:
    """Row counts of the committed data files (offline/data): a unit test compares them with splits.json, the one
    part of it that needs no package download, so an edited file cannot leave the manifest stale."""
    return {
        "chat_domain_test.jsonl": _jsonl_counts("chat_domain_test.jsonl", "label"),
        "chat_domain_dev.jsonl": _jsonl_counts("chat_domain_dev.jsonl", "label"),
        "chat_domain_test_v2.jsonl (ShareGPT TEST only; no model predicted on it before it was committed)": _jsonl_counts(
            "chat_domain_test_v2.jsonl", "label"
        ),
        "chat_domain_test_v3.jsonl (ShareGPT DEV conversations and later TEST turns; no model predicted on it before it was committed)": _jsonl_counts(
            "chat_domain_test_v3.jsonl", "label"
        ),
        "chat_domain_test_v4.jsonl (a seeded sample of ShareGPT TEST first turns, natural mix; no model predicted on it before it was committed)": _jsonl_counts(
            "chat_domain_test_v4.jsonl", "label"
        ),
        "train/chat_domain_train.jsonl (ShareGPT TRAIN only; domain head and offline.finetune)": _jsonl_counts(
            "train/chat_domain_train.jsonl", "label"
        ),
        "train/guard_written.jsonl (written by hand; training rows of the jailbreak head only)": _jsonl_counts(
            "train/guard_written.jsonl", "label"
        ),
        "train/chat_domain_written.jsonl (written for training, not ShareGPT; domain head only)": _jsonl_counts(
            "train/chat_domain_written.jsonl", "label"
        ),
        "train/cache_written.jsonl (written by hand; cache verifier training pairs)": _jsonl_counts(
            "train/cache_written.jsonl", "kind"
        ),
        "cache_written_dev.jsonl (written by hand on other topics; cache verifier dev pairs)": _jsonl_counts(
            "cache_written_dev.jsonl", "kind"
        ),
        "chat_jailbreak_like_dev.jsonl (ShareGPT DEV rows JAILBREAK_LIKE matches, read before any model scored them)":
            _jsonl_counts("chat_jailbreak_like_dev.jsonl", "label"),
        "chat_jailbreak_like_test.jsonl (ShareGPT TEST rows JAILBREAK_LIKE matches, read once, labels by reading only)":
            _jsonl_counts("chat_jailbreak_like_test.jsonl", "label"),
        "example_categories.jsonl (ShareGPT DEV/TEST rows read as an example category's own traffic; offline.example_eval)":
            _jsonl_counts("example_categories.jsonl", "split"),
        "pii_chat_negative_test.jsonl": _jsonl_counts("pii_chat_negative_test.jsonl", "group"),
        "pii_chat_names_test.jsonl": {
            "messages": sum(1 for _ in (DATA / "pii_chat_names_test.jsonl").open())
        },
        "pii_chat_non_english_dev.jsonl (ShareGPT DEV conversations, read; the PII language gate was chosen on it)": {
            "messages": len(chat_data.jsonl_rows(DATA / "pii_chat_non_english_dev.jsonl"))
        },
        "pii_chat_non_english_test.jsonl (ShareGPT TEST conversations, read; never used to choose)": {
            "messages": len(chat_data.jsonl_rows(DATA / "pii_chat_non_english_test.jsonl"))
        },
        "pii_system_dev.jsonl (system prompts written by hand; the system-prompt PII rule is chosen on it)": _jsonl_counts(
            "pii_system_dev.jsonl", "group"
        ),
        "pii_system_test.jsonl (system prompts written by hand apart from dev; run once, for the option chosen)": (
            _jsonl_counts("pii_system_test.jsonl", "group")
        ),
        "excluded_from_training": "every conversation with a row in offline/data/*.jsonl (chat_data.excluded_ids)",
    }


def build() -> dict:
    sharegpt = Counter(f"{p.source}/{p.split}" for p in chat_data.sharegpt())
    return {
        "packages": PACKAGES,
        "seeds": {
            "mmlu_held_out": f"per subject random.Random({SEED}), first {HELD_OUT:.0%} held out",
            "sharegpt": "sha256(conversation id) % 10: 0-5 train, 6-7 dev, 8-9 test",
            "chitchat": "sha256(chat id) % 2: 0 dev, 1 test (never trained on)",
            "chatterbot_tech_support": "sha256(text) % 2: 0 dev, 1 test (never trained on)",
            "pii_templates": f"template ids shuffled with random.Random({TRAIN_SEED}), first {HELDOUT_FRACTION:.0%} held out",
        },
        "sharegpt_rows": dict(sorted(sharegpt.items())),
        "hand_labelled": hand_labelled(),
        "support_subset": dict(
            sorted(Counter(f"{p.source}/{p.split}" for p in chat_data.support_requests()).items())
        ),
        "guards": {guard: guard_data.manifest(guard) for guard in guard_data.GUARDS},
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
