"""Per-request cost of the session-affinity pin stores (router/affinity.py): in memory and shared (SQLite, WAL).

A turn that continues a session costs one `get` and one `put` on the serving event loop's side (a first turn one
`put`): this times that pair through the async interface, so the shared store's thread hop is included, serially,
(the max includes a prune, every 1,000 writes) on a table prefilled with `--sizes` live pins, with and without a second process writing pins to the same file as
fast as it can (the other worker of the Pod, under load: the worst case for lock waits). Wall time per pair, p50 and
p99, and the share of pairs that failed (a lock held past BUSY_TIMEOUT_S), per store and size:

    .venv/bin/python bench/affinity_store.py [--sizes 10000 100000] [--pairs 5000]

writes bench/results/affinity_store.json. Timings on a shared machine are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from router.affinity import MemoryPins, Pin, PinStore, SharedPins
from router.config import AffinityConfig
from router.observability.metrics import REGISTRY

OUT = Path(__file__).resolve().parent / "results" / "affinity_store.json"
PIN = Pin("gpt-oss-120b", "math")


def _writer(path: str, stop: Any) -> None:
    """The other worker: writes pins to the same file until told to stop."""
    async def run() -> None:
        store, i = SharedPins(Path(path)), 0
        while not stop.is_set():
            await store.put(f"h:other-{i}", PIN)
            i += 1
    asyncio.run(run())


def _errors() -> float:
    return REGISTRY.get_sample_value("vsr_dependency_errors_total", {"dependency": "affinity_store"}) or 0.0


async def _time_pairs(store: PinStore, size: int, pairs: int) -> dict[str, float]:
    for i in range(size):
        await store.put(f"h:{i}", PIN)
    failed_before, samples = _errors(), []
    for i in range(pairs):
        key = f"h:{(i * 7919) % size}"
        start = time.perf_counter()
        pin = await store.get(key)
        await store.put(key, pin or PIN)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {"p50_us": round(samples[len(samples) // 2] * 1e6, 1),
            "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1), "max_us": round(samples[-1] * 1e6, 1),
            "failed_share": round((_errors() - failed_before) / (2 * pairs), 5)}


def measure(kind: str, size: int, pairs: int, contended: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pins.sqlite3"
        cfg = AffinityConfig(max_entries=max(size * 2, 1000))
        store: PinStore = MemoryPins().configure(cfg) if kind == "memory" else SharedPins(path).configure(cfg)
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        other = ctx.Process(target=_writer, args=(str(path), stop)) if contended else None
        if other is not None:
            other.start()
        try:
            row = asyncio.run(_time_pairs(store, size, pairs))
        finally:
            if other is not None:
                stop.set()
                other.join(30)
    return {"store": kind, "size": size, "pairs": pairs, "second_writer": contended, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--pairs", type=int, default=5000)
    args = parser.parse_args()
    rows = [measure("memory", size, args.pairs, False) for size in args.sizes]
    rows += [measure("shared", size, args.pairs, contended) for size in args.sizes for contended in (False, True)]
    for row in rows:
        print(json.dumps(row))
    OUT.write_text(json.dumps({"machine": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
