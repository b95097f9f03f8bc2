"""The hand-written verifier pairs (offline/data/train/cache_written.jsonl, offline/data/cache_written_dev.jsonl)."""

from __future__ import annotations

from pathlib import Path

from offline import chat_data
from offline.cache_pairs import WRITTEN, load_jsonl, retired_pairs, text_key, written_pairs
from offline.cache_sets import HELDOUT, RETIRED

BENCH = Path(__file__).resolve().parents[2] / "bench" / "data"
# Evaluation and tuning sets no written pair may share a text with (bench/cache_eval.py reads them).
EVALUATION = (
    "cache_heldout_pairs.jsonl",
    "cache_heldout_v2.jsonl",
    "cache_heldout_v3.jsonl",
    "cache_heldout_v4.jsonl",
    "cache_heldout_v5.jsonl",
    "cache_heldout_v6.jsonl",
    "cache_heldout_v7.jsonl",
    "cache_heldout_v8.jsonl",
    "cache_heldout_v9.jsonl",
    "cache_heldout_v10.jsonl",
    "cache_heldout_v11.jsonl",
    "cache_heldout_v12.jsonl",
    "cache_heldout_v13.jsonl",
    "cache_heldout_v14.jsonl",
    "cache_heldout_v15.jsonl",
    "cache_heldout_v16.jsonl",
    "cache_heldout_v17.jsonl",
    "cache_heldout_v18.jsonl",
    "cache_heldout_v19.jsonl",
    "cache_heldout_v20.jsonl",
    "cache_heldout_v21.jsonl",
    "cache_heldout_v22.jsonl",
    "cache_heldout_v23.jsonl",
    "cache_heldout_v24.jsonl",
    "cache_hard_pairs.jsonl",
)


def _texts(rows: list[dict]) -> set[str]:
    return {text_key(r[side]) for r in rows for side in ("a", "b")}


def test_rows_are_marked_balanced_and_labelled_by_kind() -> None:
    for name, rows in written_pairs().items():
        assert {r["source"] for r in rows} == {"written"} and all(r["author"] for r in rows), name
        assert all((r["label"] == 1) == (r["kind"] == "paraphrase") for r in rows), name
        assert all(text_key(r["a"]) != text_key(r["b"]) for r in rows), name  # an exact repeat is a key hit, not a pair
        positives = sum(r["label"] for r in rows)
        assert positives >= {"train": 700, "dev": 150}[name] and len(rows) - positives >= positives * 0.9, name


def test_train_and_dev_share_no_text() -> None:
    pairs = written_pairs()
    assert not _texts(pairs["train"]) & _texts(pairs["dev"])


def test_no_written_text_is_in_an_evaluation_or_tuning_set() -> None:
    written = _texts([r for rows in written_pairs().values() for r in rows])
    for name in EVALUATION:
        shared = written & _texts(load_jsonl(BENCH / name))  # only written texts, never the whole evaluation set
        assert not shared, (name, sorted(shared))


def test_dev_rows_sit_with_the_held_out_sets_and_train_rows_apart() -> None:
    # chat_data.excluded_ids() reads every offline/data/*.jsonl row's id: the dev file must carry them, and no
    # training pool may hold one; the train file lives in offline/data/train/, outside that glob.
    assert WRITTEN["dev"].parent == chat_data.DATA and WRITTEN["train"].parent == chat_data.DATA / "train"
    dev_ids = {r["id"] for r in written_pairs()["dev"]}
    assert dev_ids <= chat_data.excluded_ids()
    assert not {r["id"] for r in written_pairs()["train"]} & chat_data.excluded_ids()


def test_training_rows_weigh_each_source_and_drop_weight_zero() -> None:
    import numpy as np

    from offline.train_cache_verifier import training_rows
    from router.cache.verifier import FEATURES

    def table(label: list[int]) -> dict[str, np.ndarray]:
        x = np.zeros((len(label), len(FEATURES)), np.float32)
        x[:, FEATURES.index("query_only_words")] = 1.0
        return {"x": x, "label": np.array(label), "candidate": np.ones(len(label), bool)}

    x, y, w = training_rows([(table([1, 0]), 1.0), (table([1, 0]), 10.0), (table([1, 1, 1]), 0.0)])
    assert len(x) == 8 and y.mean() == 0.5  # two sources x two pairs x both directions; the weight-0 one is left out
    assert sorted(set(w.round(6))) == [1.0, 10.0]
    assert x[:, FEATURES.index("candidate_only_words")].sum() == 4  # the flipped copies swap the one-sided counts


def test_the_current_held_out_set_is_not_retired_and_retired_rows_avoid_what_they_must() -> None:
    assert HELDOUT.exists() and HELDOUT not in RETIRED and all(p.exists() for p in RETIRED)
    assert HELDOUT.name in EVALUATION and BENCH / "cache_hard_pairs.jsonl" not in RETIRED  # the tuning set stays dev
    rows = [r for p in RETIRED for r in load_jsonl(p)]
    avoid = _texts(rows[:5])
    kept = retired_pairs(avoid)
    assert 0 < len(kept) <= len(rows) - 5 and not _texts(kept) & avoid
