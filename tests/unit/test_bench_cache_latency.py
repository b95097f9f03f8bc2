"""bench/cache_latency.py's `verifier_cost_top3` row (the README's lookup-cost figure) must run against the router's
operating point as it is."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache_latency(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    if not (ROOT / "models" / "cache-pair" / "model_int8.onnx").is_file():
        pytest.skip("models/cache-pair is not built: run `make models` (python -m offline build)")
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the bench scripts import their helpers by bare name
    monkeypatch.chdir(ROOT)  # the default pair_model_dir is relative
    from bench import cache_latency
    return cache_latency


async def test_the_verifier_cost_row_pays_a_pair_run_on_every_would_be_hit(cache_latency: ModuleType) -> None:
    """It read OperatingPoint.lower_bound, which the staircase point (2026-11-30) no longer has: AttributeError
    before any lookup, so the row the README's lookup cost comes from could not be measured."""
    row = await cache_latency.verifier_cost(200, 25)
    assert row["pair_hit_pair_runs"] == 25
