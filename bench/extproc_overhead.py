"""Latency the sidecar adds: the same requests through Envoy with and without ext_proc, in one run.

Two Envoys share the demo upstreams; one has the ext_proc filter and talks to the real router
(classifier on when the model is built), the other is the same config without the filter. Requests
alternate between them so machine noise hits both equally. Writes bench/results/extproc_overhead.json.

`--stream`: streamed answers instead (issue 13). The demo upstream writes one SSE event per token (`max_tokens`
of them, `--token-ms` apart, as a model server flushing each token), answers of `--chunks` events at each
`--concurrency`, alternating between the two Envoys batch by batch. Per row: time to first and last byte and the
gaps between body reads at the client, the router's CPU (its process tree, /proc) per chunk, and the ext_proc
messages Envoy exchanged per stream (its admin stats). Two kinds of stream: `unread`, a plain chat stream (no
`stream_options.include_usage`, cache off): nothing in it to store or count; `read`, the same with include_usage,
whose body the router must read (as a stream it stores in the cache). Writes bench/results/stream_cost.json.

    .venv/bin/python bench/extproc_overhead.py [--requests 2000]
    .venv/bin/python bench/extproc_overhead.py --stream [--chunks 50 200 1000] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_stats import summary_ms
from load import tree_cpu_s

from devstack.stack import ROOT, Stack, derive_config


def run(requests: int, classifier: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-bench-"))

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = classifier

    stack = Stack(derive_config(tmp, overrides), tmp, log_to=tmp)
    stack.start()
    urls = {"with_ext_proc": f"{stack.base_url}/chat/completions",
            "without_ext_proc": f"{stack.start_bare_envoy()}/chat/completions"}
    samples: dict[str, list[float]] = {k: [] for k in urls}
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(requests + 100):
                # A new text per request: a repeated one would be answered by the classification memo.
                body = {"model": "auto", "messages": [{"role": "user", "content": f"What is {i} times {i + 7} plus 4?"}]}
                for name, url in urls.items():
                    start = time.perf_counter()
                    r = client.post(url, json=body)
                    elapsed = time.perf_counter() - start
                    r.raise_for_status()
                    if i >= 100:  # warm-up
                        samples[name].append(elapsed)
    finally:
        stack.stop()
    result = {k: summary_ms(v) for k, v in samples.items()}
    w, wo = result["with_ext_proc"], result["without_ext_proc"]
    result["added"] = {"p50_ms": round(w["p50_ms"] - wo["p50_ms"], 3), "p99_ms": round(w["p99_ms"] - wo["p99_ms"], 3),
                       "p50_ratio": round(w["p50_ms"] / wo["p50_ms"], 2)}
    result["config"] = {"requests_each": requests, "classifier": classifier, "prompt_tokens": "short, unique per request"}
    return result


def ext_proc_msgs(admin_port: int) -> int:
    """Messages Envoy has sent to the router so far (`ext_proc.stream_msgs_sent`)."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/stats?filter=ext_proc.stream_msgs_sent", timeout=5).text
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.strip())


async def one_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any], token_ms: float) -> dict[str, Any]:
    """Time to first and last body byte, and the gaps between body reads, of one streamed answer."""
    start = time.perf_counter()
    reads: list[float] = []
    events = 0
    async with client.stream("POST", url, json=body, headers={"x-demo-token-ms": str(token_ms)}) as r:
        r.raise_for_status()
        async for chunk in r.aiter_raw():
            reads.append(time.perf_counter())
            events += chunk.count(b"data: ")
    return {"ttfb": reads[0] - start, "ttlb": reads[-1] - start, "gaps": [b - a for a, b in itertools.pairwise(reads)],
            "events": events}


async def stream_batch(url: str, chunks: int, concurrency: int, streams: int, usage: bool, token_ms: float,
                       tag: str) -> list[dict[str, Any]]:
    """`streams` answers of `chunks` events, `concurrency` at a time; a new prompt each (the memo never answers)."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def go(i: int) -> dict[str, Any]:
            body: dict[str, Any] = {"model": "auto", "stream": True, "max_tokens": chunks,
                                    "messages": [{"role": "user", "content": f"Tell me about {tag} {i} please"}]}
            if usage:
                body["stream_options"] = {"include_usage": True}
            async with sem:
                return await one_stream(client, url, body, token_ms)
        return await asyncio.gather(*(go(i) for i in range(streams)))


def stream_row(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"streams": len(samples), "events_per_stream": round(sum(s["events"] for s in samples) / len(samples), 1),
            "ttfb": summary_ms([s["ttfb"] for s in samples]), "ttlb": summary_ms([s["ttlb"] for s in samples]),
            "gap": summary_ms([g for s in samples for g in s["gaps"]])}


def run_streams(chunk_counts: list[int], concurrencies: list[int], token_ms: float, batches: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-bench-stream-"))
    stack = Stack(derive_config(tmp), tmp, log_to=tmp)  # classifier and cache off: the stream's own cost
    stack.start()
    routed, bare = f"{stack.base_url}/chat/completions", f"{stack.start_bare_envoy()}/chat/completions"
    router, admin = stack.procs["router"].pid, stack.cfg.envoy.admin_port
    rows: list[dict[str, Any]] = []
    try:
        asyncio.run(stream_batch(routed, 50, 2, 10, False, token_ms, "warm-up"))
        for kind in ("unread", "read"):
            for chunks in chunk_counts:
                for c in concurrencies:
                    streams = c * max(1, 200 // chunks)  # one batch: about 200 chunks per connection
                    with_s: list[dict[str, Any]] = []
                    without_s: list[dict[str, Any]] = []
                    cpu_s, msgs = 0.0, 0
                    for b in range(batches):  # alternated, so machine noise hits both alike
                        tag = f"{kind}-{chunks}-{c}-{b}-{time.time_ns()}"
                        without_s += asyncio.run(stream_batch(bare, chunks, c, streams, kind == "read", token_ms, tag))
                        cpu0, msgs0 = sum(tree_cpu_s(router).values()), ext_proc_msgs(admin)
                        with_s += asyncio.run(stream_batch(routed, chunks, c, streams, kind == "read", token_ms, tag))
                        cpu_s += sum(tree_cpu_s(router).values()) - cpu0
                        msgs += ext_proc_msgs(admin) - msgs0
                    events = sum(s["events"] for s in with_s)
                    row = {"kind": kind, "chunks": chunks, "concurrency": c, "load_avg_1m": round(os.getloadavg()[0], 2),
                           "with_ext_proc": stream_row(with_s), "without_ext_proc": stream_row(without_s),
                           "ext_proc_msgs_per_stream": round(msgs / len(with_s), 1),
                           "router_cpu_ms_per_stream": round(cpu_s * 1000 / len(with_s), 3),
                           "router_cpu_us_per_chunk": round(cpu_s * 1e6 / events, 1)}
                    w, wo = row["with_ext_proc"], row["without_ext_proc"]
                    row["added_ms"] = {f"{m}_{q}": round(w[m][f"{q}_ms"] - wo[m][f"{q}_ms"], 3)
                                       for m in ("ttfb", "ttlb", "gap") for q in ("p50", "p99")}
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("kind", "chunks", "concurrency", "ext_proc_msgs_per_stream",
                                                          "router_cpu_us_per_chunk", "added_ms")}), flush=True)
    finally:
        stack.stop()
    return {"rows": rows, "config": {"token_ms": token_ms, "batches_each": batches, "cpus": os.cpu_count(),
                                     "classifier": False, "cache": False,
                                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-classifier", action="store_true", help="keyword rules only")
    parser.add_argument("--out", help="default: bench/results/extproc_overhead[_keyword_only].json")
    parser.add_argument("--stream", action="store_true", help="streamed answers (bench/results/stream_cost.json)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[50, 200, 1000], help="SSE events per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--token-ms", type=float, default=1.0, help="the upstream's wait before each event")
    parser.add_argument("--batches", type=int, default=3, help="alternated batches per row and Envoy")
    args = parser.parse_args()
    if args.stream:
        result = run_streams(args.chunks, args.concurrency, args.token_ms, args.batches)
        out = Path(args.out or ROOT / "bench" / "results" / "stream_cost.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        return
    result = run(args.requests, classifier=not args.no_classifier)
    name = "extproc_overhead_keyword_only.json" if args.no_classifier else "extproc_overhead.json"
    out = Path(args.out or ROOT / "bench" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
