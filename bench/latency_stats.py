"""How every benchmark here times calls and summarises latencies, so their figures mean the same thing.

Imported by the scripts beside it (run as `python bench/<script>.py`, which puts this directory on sys.path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

WARM_UP = 20


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean in milliseconds (numpy's linear-interpolation percentiles)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds per call of `fn`, after `WARM_UP` untimed calls."""
    for _ in range(WARM_UP):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out
