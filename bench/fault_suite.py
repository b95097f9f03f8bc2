"""The fault suite's load cases, on the default stack (real Envoy, router with the ONNX classifier and the
embedded Milvus Lite cache, demo upstreams). Each scenario runs concurrent clients and reports what they
saw and what the router counted; results go to bench/results/fault_suite.json.

    .venv/bin/python bench/fault_suite.py                     # every scenario (~4 min)
    .venv/bin/python bench/fault_suite.py --only load lite_kill --clients 32 --seconds 60

Scenarios:
- load: `--clients` clients for `--seconds`; /readyz sampled every 0.5 s.
- lite_kill: the Milvus Lite child SIGKILLed a third of the way in; seconds until the router writes to the
  cache again, and failed requests (must be 0: a dead cache is a miss, never an error).
- router_freeze / router_kill: the router SIGSTOPped for 3 s, then SIGKILLed and restarted, under load;
  Envoy refuses what the router does not answer (503 router_unavailable, counted as failed here; with
  failure_mode_allow: true it failed open to the default model and clients still got answers).
- upstream_faults: upstream 5xx and slow answers under load (passed through; 504 past the route timeout).
- invalid_reloads: an invalid then a valid config written every second under load; requests never fail.
- hostile: the inputs of bench/hostile_inputs.py, one at a time: 5xx count (must be 0), 4xx with and
  without an OpenAI error body, valid shapes routed, multi-megabyte guarded requests decided.
- long_prompts: `--clients` clients sending new short prompts, alone for `--fault-seconds`, then as long again
  beside LONG_CLIENTS clients sending new prompts of 60k-240k characters (issue 13's trial): the short requests'
  p50/p99 and refusals in both phases, the long ones' outcomes, the router's classifier failures by reason. An A/B
  of two trees: run this file from each with the same `--out` and a `--tag` each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fault_load import LoadResult, cache_figures, delta, run_load, sample_readyz, scrape, total
from hostile_inputs import cases

from devstack.stack import ROOT, Stack, derive_config

RESULTS = ROOT / "bench" / "results" / "fault_suite.json"


def default_stack(tmp: Path, workers: int | str | None = None) -> Stack:
    """config/config.yaml as shipped (classifier on, Milvus Lite cache, `server.workers` unless `workers` is
    given), on ports and a cache file of its own."""
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())

    def restore(cfg: dict[str, Any]) -> None:
        cfg["server"]["workers"] = workers or shipped["server"].get("workers", "auto")
        cfg["classifier"] = shipped["classifier"]
        cfg["semantic_cache"] = {**shipped["semantic_cache"], "uri": str(tmp / "cache" / "milvus_lite.db")}
        cfg["envoy"]["upstream_timeout_s"] = 2

    os.environ.setdefault("VSR_CACHE_HMAC_SECRET", "fault-suite")
    return Stack(derive_config(tmp, restore), tmp, log_to=tmp)


async def under_load(stack: Stack, clients: int, seconds: float,
                     fault: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Load for `seconds` with /readyz sampled; `fault` runs alongside and returns its own figures."""
    before = scrape(stack.cfg.server.metrics_port)
    result, ready, stop = LoadResult(), Counter[int](), asyncio.Event()
    sampler = asyncio.create_task(sample_readyz(stack.cfg.server.metrics_port, stop, ready))
    load = asyncio.create_task(run_load(stack.base_url, clients, seconds, result, headers))
    extra = await fault() if fault else {}
    await load
    stop.set()
    await sampler
    after = await settle(stack)
    return {"clients": clients, "seconds": seconds, "client_view": result.summary(),
            "readyz": {str(k): v for k, v in sorted(ready.items())}, "router": cache_figures(before, after), **extra}


async def settle(stack: Stack, timeout_s: float = 20) -> dict[Any, float]:
    """The router's counters once its write queue has drained (or after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            samples = scrape(stack.cfg.server.metrics_port)
        except OSError:
            samples = {}
        if samples and total(samples, "vsr_cache_write_queue_depth") == 0 or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.5)


def lite_pid(router_pid: int) -> int | None:
    """The Milvus Lite child of the router process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == router_pid and name == "milvus":
            return int(stat.parent.name)
    return None


async def lite_kill(stack: Stack, clients: int, seconds: float) -> dict[str, Any]:
    router = stack.procs["router"].pid

    async def fault() -> dict[str, Any]:
        port = stack.cfg.server.metrics_port
        start, began = scrape(port), time.monotonic()
        await asyncio.sleep(seconds / 3)
        old = lite_pid(router)
        assert old is not None, "no Milvus Lite child found"
        at_kill = scrape(port)
        writes = total(at_kill, "vsr_cache_events_total", event="write")
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        restarted = caching = None
        while time.monotonic() - killed < seconds / 2 and caching is None:
            await asyncio.sleep(0.1)
            new = lite_pid(router)
            if restarted is None and new not in (None, old):
                restarted = time.monotonic() - killed
            samples = scrape(port)
            if restarted is not None and total(samples, "vsr_cache_events_total", event="write") > writes:
                caching = time.monotonic() - killed
        recovered = scrape(port)
        await asyncio.sleep(max(seconds - (time.monotonic() - began) - 0.5, 0))
        # The same figures before the kill and after the cache is back, to see what the restart changed.
        return {"killed_pid": old, "lite_restarted_after_s": restarted, "caching_again_after_s": caching,
                "before_kill": cache_figures(start, at_kill), "after_recovery": cache_figures(recovered, scrape(port))}

    return await under_load(stack, clients, seconds, fault)


def router_pids(router_pid: int) -> list[int]:
    """The router process and, with workers, its worker processes (not the Milvus Lite child)."""
    pids = [router_pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text.rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == router_pid and "milvus" not in text.split("(", 1)[1].rsplit(")", 1)[0]:
            pids.append(int(stat.parent.name))
    return pids


async def router_faults(stack: Stack, clients: int, seconds: float) -> dict[str, Any]:
    async def fault() -> dict[str, Any]:
        await asyncio.sleep(seconds / 4)
        proc = stack.procs["router"]
        frozen = router_pids(proc.pid)  # the supervisor and every worker
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(3)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(seconds / 4)
        for pid in router_pids(proc.pid)[1:]:
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, stack.start_router)
        return {"frozen_s": 3, "router_restarted_after_s": round(time.monotonic() - killed, 2)}

    out = await under_load(stack, clients, seconds, fault)
    out["router"] = "not comparable: the restart reset the router's counters"
    return out


async def upstream_faults(stack: Stack, clients: int, seconds: float) -> dict[str, Any]:
    out = {}
    for name, headers in {"upstream_500": {"x-demo-status": "500"}, "upstream_slow_3s": {"x-demo-delay-ms": "3000"},
                          "upstream_slow_500ms": {"x-demo-delay-ms": "500"}}.items():
        out[name] = await under_load(stack, clients, seconds / 3, headers=headers)
    return out


async def invalid_reloads(stack: Stack, clients: int, seconds: float) -> dict[str, Any]:
    path = stack.config_path
    valid = path.read_text()

    async def fault() -> dict[str, Any]:
        edits = 0
        stop_at = time.monotonic() + seconds - 1
        while time.monotonic() < stop_at:
            path.write_text(valid.replace("default_category:", "default_category: [not, a, name]\nx_unknown:"))
            await asyncio.sleep(0.5)
            path.write_text(valid + f"\n# edit {edits}\n")
            await asyncio.sleep(0.5)
            edits += 2
        path.write_text(valid)
        samples = scrape(stack.cfg.server.metrics_port)
        return {"config_edits": edits,
                "reloads_failed": total(samples, "vsr_config_reloads_total", result="failed"),
                "reloads_ok": total(samples, "vsr_config_reloads_total", result="ok")}

    return await under_load(stack, clients, seconds, fault)


LONG_CLIENTS = 4
LONG_CHARS = (60_000, 240_000)


async def long_prompts(stack: Stack, clients: int, seconds: float) -> dict[str, Any]:
    """Short prompts alone, then beside long ones; every prompt new (neither the memo nor the cache answers)."""
    out: dict[str, Any] = {"long_clients": LONG_CLIENTS, "long_chars": list(LONG_CHARS)}
    for phase, long_clients in (("alone", 0), ("with_long", LONG_CLIENTS)):
        before = scrape(stack.cfg.server.metrics_port)
        short, long = LoadResult(), LoadResult()
        seed = 1000 * (long_clients + 1)  # each phase's prompts differ from the other's
        await asyncio.gather(run_load(stack.base_url, clients, seconds, short, repeat_share=0, seed=seed),
                             run_load(stack.base_url, long_clients, seconds, long, repeat_share=0,
                                      long_chars=LONG_CHARS, seed=seed + 500))
        after = await settle(stack)
        out[phase] = {"short": short.summary(), **({"long": long.summary()} if long_clients else {}),
                      "classifier_failures": {reason: int(delta(before, after, "vsr_classifier_failures_total",
                                                                reason=reason))
                                              for reason in ("timeout", "overload", "error")}}
    return out


async def hostile(stack: Stack, _clients: int, _seconds: float) -> dict[str, Any]:
    import httpx

    counts: Counter[str] = Counter()
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        for name, body, headers, expect in cases():
            try:
                r = await http.post("/chat/completions", content=body,
                                    headers={"content-type": "application/json", **headers})
            except httpx.HTTPError as exc:
                counts["no_response"] += 1
                wrong.append(f"{name}: {type(exc).__name__}")
                continue
            openai_error = r.headers.get("content-type", "").startswith("application/json") and "error" in r.text
            counts[f"{r.status_code // 100}xx"] += 1
            ok = {"4xx": 400 <= r.status_code < 500 and openai_error, "2xx": r.status_code == 200,
                  "decided": r.status_code in (403, 503) and openai_error}[expect]
            counts["as_expected" if ok else "unexpected"] += 1
            if not ok:
                wrong.append(f"{name}: {r.status_code} {r.text[:80]}")
    return {"cases": sum(counts[k] for k in ("2xx", "4xx", "5xx", "no_response")), "counts": dict(counts),
            "unexpected": wrong}


SCENARIOS: dict[str, Callable[[Stack, int, float], Awaitable[dict[str, Any]]]] = {
    "load": under_load, "lite_kill": lite_kill, "router_faults": router_faults,
    "upstream_faults": upstream_faults, "invalid_reloads": invalid_reloads, "hostile": hostile,
    "long_prompts": long_prompts,
}


def _commit(tree: Path) -> str:
    """The commit of the router code that ran, "+" when `router/` had changes beyond it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no", "--", "router") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fault-seconds", type=float, default=30, help="duration of each fault scenario")
    parser.add_argument("--workers", type=int, default=None, help="server.workers (default: the shipped config's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", help="store each scenario as NAME@TAG (old and new code into one file)")
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="fault-suite-") as tmp:
        stack = default_stack(Path(tmp), args.workers)
        stack.start()
        try:
            for name in args.only:
                seconds = args.seconds if name == "load" else args.fault_seconds
                print(f"{name}: {args.clients} clients, {seconds:.0f} s", flush=True)
                key = f"{name}@{args.tag}" if args.tag else name
                results[key] = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "router_code": _commit(stack.cwd),
                                "workers": args.workers or stack.cfg.server.workers,
                                "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                                **asyncio.run(SCENARIOS[name](stack, args.clients, seconds))}
                print(json.dumps(results[key], indent=1), flush=True)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
