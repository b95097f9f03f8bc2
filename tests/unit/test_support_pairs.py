"""Human-written support-question pairs for the cache verifier: the reading rule, the split, no held-out text."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline.cache_pairs import load_jsonl
from offline.support_pairs import EXCLUDED, PARAPHRASE, case_pairs, domain_split, support_pairs
from offline.train_data import DATA_DIR, PACKAGES

BENCH_DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


def _case(n: int) -> dict[str, object]:
    return {"original": f"Question {n}?", "adversarial": [f"rephrasing {n}.{i}" for i in range(8)]}


def test_the_casual_rephrasing_is_the_paraphrase_and_other_cases_are_negatives() -> None:
    pairs = case_pairs("hr", [_case(n) for n in range(4)])
    positives = [(p["a"], p["b"]) for p in pairs if p["label"] == 1]
    assert positives == [(f"Question {n}?", f"rephrasing {n}.{PARAPHRASE}") for n in range(4)]
    case_of = {t: n for n in range(4) for t in (f"Question {n}?", *(f"rephrasing {n}.{i}" for i in range(8)))}
    negatives = [(case_of[p["a"]], case_of[p["b"]]) for p in pairs if p["label"] == 0]
    assert len(negatives) == 2 * (4 * 3 // 2)  # every two cases, in both styles
    assert all(a != b for a, b in negatives)
    assert all(p["domain"] == "hr" for p in pairs)


def test_split_is_by_domain_and_stable() -> None:
    assert {domain_split(d) for d in ("hr", "travel", "legal", "healthcare", "saas")} == {"train", "dev"}
    assert domain_split("hr") == domain_split("hr")


@pytest.mark.skipif(not list(DATA_DIR.glob(f"contradish-{PACKAGES['contradish'].split('==')[1]}-*.whl")),
                    reason="contradish wheel not downloaded (offline.train_data)")
def test_wheel_pairs_keep_domains_apart_and_held_out_texts_out() -> None:
    pairs = support_pairs()
    domains = {side: {p["domain"] for p in rows} for side, rows in pairs.items()}
    assert domains["train"] and domains["dev"] and not domains["train"] & domains["dev"]
    assert not (domains["train"] | domains["dev"]) & EXCLUDED
    texts = {side: {t for p in rows for t in (p["a"], p["b"])} for side, rows in pairs.items()}
    assert not texts["train"] & texts["dev"]
    held_out = {t.lower() for name in ("cache_heldout_pairs", "cache_heldout_v2", "cache_hard_pairs")
                for r in load_jsonl(BENCH_DATA / f"{name}.jsonl") for t in (r["a"], r["b"])}
    assert not {t.lower() for side in texts.values() for t in side} & held_out
