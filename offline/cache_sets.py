"""Which hand-written cache pair sets may be trained on: plain paths, importable from both venvs."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "data"
# The current held-out set: evaluated once per shipped change, never trained on or tuned to.
HELDOUT = BENCH / "cache_heldout_v24.jsonl"
# Held-out sets that were evaluated (once each, figures in router/cache/README.md) and then replaced by a fresher
# set: written the same way, so the pair model trains on them now. HELDOUT joins this list only when its successor
# has been written.
RETIRED = tuple(BENCH / name for name in (
    "cache_heldout_pairs.jsonl", *(f"cache_heldout_v{v}.jsonl" for v in range(2, 24))))
