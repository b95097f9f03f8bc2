"""Throughput and latency under concurrent load: wrk against the real stack, beside Envoy alone, in one run.

For each scenario one stack is started (demo upstreams, router, real Envoy) plus a second Envoy on the same
upstreams without the ext_proc filter. wrk (Debian's `wrk`, a C load generator that costs little CPU) drives
both at each concurrency, one after the other, so machine noise hits both alike:

- `keyword_only`: classifier and cache off (the ext_proc round trips and the policy alone);
- `miss`: the default stack (classifier, Milvus Lite cache), a new prompt per request (a Lua counter), so
  neither the classification memo nor the cache can answer;
- `miss_chat`: the same with real first turns (ShareGPT TRAIN, `CHAT_PROMPTS`, in file order, each made new by a
  counter): `miss`'s prompts are 25 tokens and differ only in a number, so they understate the encoder (real turns run
  to 256 tokens per window, two windows past that) and every lookup finds 3 candidates the verifier judges;
- `hit`: the default stack, one repeated prompt that was answered once before timing (cache hits).

Each scenario runs once per `--workers` value (`server.workers`: router processes on the ext_proc port). Every
row records the load average when it started and the CPU time the router's processes (supervisor, workers,
Milvus Lite child, also apart) and the routed Envoy spent per request, which is what says how far more cores
would go, and how many requests the router decided by path (`router_decided`: a miss run must show no cache
answers, and a request the router never saw is a 503 for wrk, or with failure_mode_allow: true a success).
wrk, Envoy, the router and the upstreams share this machine's cores; the JSON records how many.
Writes bench/results/load.json and load.png.

    apt-get install wrk
    .venv/bin/python bench/load.py [--duration 10] [--concurrency 1 8 32] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.stack import ROOT, Stack, derive_config

PROMPT = "How do I convert miles to kilometres for a road trip?"
CHAT_PROMPTS = ROOT / "offline" / "data" / "train" / "chat_domain_train.jsonl"
LUA = """
local counter = 0
local threads = 0
local unique = %(unique)s
local run = ""
local prompts = {}
-- `tid` is a global of each thread's own Lua state, set here from the main state (a `local tid` would shadow
-- it, and both wrk threads then sent the same prompts: exact repeats the memo and the cache answered)
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function(args)
  run = args[1] or ""
  for line in io.lines("%(prompts)s") do prompts[#prompts + 1] = line end
end
request = function()
  counter = counter + 1
  local text = prompts[(counter %% #prompts) + 1]
  if unique then text = string.format("%%s (trip %%s-%%d-%%d)", text, run, tid, counter) end
  local body = '{"model":"auto","messages":[{"role":"user","content":"' .. text .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions",
    {["content-type"] = "application/json", ["authorization"] = "Bearer sk-load-test"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"connect_errors":%%d,' ..
    '"timeouts":%%d,"read_errors":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.timeout,
    summary.errors.read, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def process_tree(root: int) -> dict[int, tuple[str, float]]:
    """A process and its live descendants: pid -> (kind, user + system CPU seconds from /proc), `kind` being
    `lite` for Milvus Lite children (their `comm` is `milvus`) and `python` for the rest."""
    parents: dict[int, int] = {}
    info: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, rest = stat.read_text().rsplit(")", 1)
            fields = rest.split()
        except (OSError, ValueError):
            continue
        pid = int(stat.parent.name)
        kind = "lite" if comm.endswith("(milvus") else "python"
        parents[pid], info[pid] = int(fields[1]), (kind, (int(fields[11]) + int(fields[12])) / tick)
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {pid: info[pid] for pid in tree if pid in info}


def tree_cpu_s(root: int) -> dict[str, float]:
    """CPU seconds of a process and its live descendants, by kind (`python`, `lite`)."""
    out = {"python": 0.0, "lite": 0.0}
    for kind, cpu_s in process_tree(root).values():
        out[kind] += cpu_s
    return out


def pin_tree(root: int, cpus: set[int], skip_lite: bool = False) -> None:
    """Every thread of a process and its live descendants onto `cpus` (`skip_lite`: leave Milvus Lite children)."""
    for pid, (kind, _) in process_tree(root).items():
        if skip_lite and kind == "lite":
            continue
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except (OSError, ValueError):
                continue


def decided(metrics_url: str) -> Counter[str]:
    """Requests the router decided so far by decision path (vsr_requests_total summed over model and category)."""
    out: Counter[str] = Counter()
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("vsr_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('path="', 1)[1].split('"', 1)[0]] += int(float(value))
    return out


def wrk(url: str, concurrency: int, duration: int, script: Path,
        watch: dict[str, int] | None = None, metrics_url: str | None = None) -> dict[str, Any]:
    """One wrk run; its Lua `done` prints the summary as JSON. `watch`: processes whose CPU per request to report.

    With `metrics_url`, the row also says how many of the requests the router decided, by path (upstream,
    cache, ...): a request the router never answered is a 503 (or with failure_mode_allow: true a 200) for wrk,
    and a "miss" run must show no cache answers.
    """
    load = os.getloadavg()[0]
    before = {name: tree_cpu_s(pid) for name, pid in (watch or {}).items()}
    decided_before = decided(metrics_url) if metrics_url else Counter()
    threads = min(concurrency, 2)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s", "--timeout", "5s",
                          "-s", str(script), url,
                          # a run id: prompts stay new across runs (LuaJIT's math.random is unseeded, so the
                          # previous counter-and-random prompts repeated and the memo and cache answered them)
                          "--", secrets.token_hex(6)], capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    errors = raw["status_errors"] + raw["connect_errors"] + raw["timeouts"] + raw["read_errors"]
    extra: dict[str, Any] = {}
    for name, pid in (watch or {}).items():
        spent = {kind: cpu_s - before[name][kind] for kind, cpu_s in tree_cpu_s(pid).items()}
        per_request = {kind: round(cpu_s * 1000 / max(raw["requests"], 1), 3) for kind, cpu_s in spent.items()}
        extra[f"{name}_cpu_ms_per_request"] = round(sum(per_request.values()), 3)
        if spent["lite"]:  # the router's processes: its Python ones and the Milvus Lite child apart
            extra[f"{name}_python_cpu_ms_per_request"] = per_request["python"]
            extra[f"{name}_lite_cpu_ms_per_request"] = per_request["lite"]
    if metrics_url:
        extra["router_decided"] = dict(decided(metrics_url) - decided_before)
    return {"concurrency": concurrency, "requests": raw["requests"], "errors": errors,
            "req_per_s": round(raw["requests"] / seconds, 1),
            **{f"{q}_ms": round(raw[f"{q}_us"] / 1000, 2) for q in ("p50", "p90", "p99", "max")},
            "load_avg_1m_at_start": round(load, 2), **extra}


def scenario_config(tmp: Path, name: str, workers: int) -> Path:
    def overrides(cfg: dict[str, Any]) -> None:
        cfg["server"]["workers"] = workers
        if name == "keyword_only":
            return
        cfg["classifier"]["enabled"] = True
        cfg["semantic_cache"] = {"enabled": True, "uri": str(tmp / "cache" / "milvus_lite.db")}
    return derive_config(tmp, overrides)


def run_scenario(name: str, concurrencies: list[int], duration: int, workers: int, pin: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"vsr-load-{name}-"))
    stack = Stack(scenario_config(tmp, name, workers), tmp, log_to=tmp)
    script, prompts = tmp / "request.lua", tmp / "prompts.txt"
    texts = [json.loads(line)["text"] for line in CHAT_PROMPTS.open()] if name == "miss_chat" else [PROMPT]
    prompts.write_text("".join(json.dumps(t)[1:-1] + "\n" for t in texts))  # JSON-escaped, one per line
    script.write_text(LUA % {"unique": "false" if name == "hit" else "true", "prompts": prompts})
    rows: list[dict[str, Any]] = []
    try:
        stack.start()
        bare = stack.start_bare_envoy()
        routed = f"{stack.base_url}/chat/completions"
        with httpx.Client(timeout=10, headers={"authorization": "Bearer sk-load-test"}) as client:
            body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
            wait_workers(stack, workers)
            client.post(routed, json=body).raise_for_status()  # warm-up; primes the cache for `hit`
            time.sleep(2)  # the write leaves the request path; let it land
            if name == "hit":
                assert client.post(routed, json=body).headers.get("x-vsr-cache-hit") == "true", "hit not primed"
        watch = {"router": stack.procs["router"].pid, "envoy": stack.procs["envoy"].pid}
        if pin:  # the router's Python processes alone on the last CPU; everything else (wrk too) on the others
            last = max(os.sched_getaffinity(0))
            rest = os.sched_getaffinity(0) - {last}
            for proc in stack.procs.values():
                pin_tree(proc.pid, rest)
            pin_tree(os.getpid(), rest)
            pin_tree(watch["router"], {last}, skip_lite=True)
        metrics = f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics"
        for c in concurrencies:
            rows.append({"target": "envoy_alone", "workers": workers, "pinned": pin,
                         **wrk(f"{bare}/chat/completions", c, duration, script)})
            rows.append({"target": "stack", "workers": workers, "pinned": pin,
                         **wrk(routed, c, duration, script, watch, metrics)})
            print(name, rows[-2], rows[-1], flush=True)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["scenarios"])
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        rows = results["scenarios"][name]["rows"]
        first = rows[0]["workers"]
        lines = [("Envoy alone", "--", [r for r in rows if r["target"] == "envoy_alone" and r["workers"] == first])]
        lines += [(f"stack, {w} worker{'s' if w > 1 else ''}", "-",
                   [r for r in rows if r["target"] == "stack" and r["workers"] == w]) for w in results["workers"]]
        for label, style, pts in lines:
            cs = [r["concurrency"] for r in pts]
            axes[0][col].plot(cs, [r["req_per_s"] for r in pts], style, marker="o", label=label)
            axes[1][col].plot(cs, [r["p50_ms"] for r in pts], style, marker="o", label=f"{label} p50")
            axes[1][col].plot(cs, [r["p99_ms"] for r in pts], style, marker="x", label=f"{label} p99")
        axes[0][col].set_title(f"{name}: requests/s")
        axes[1][col].set_title(f"{name}: latency (ms)")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xlabel("concurrent connections")
            axes[row][col].legend(fontsize=7)
        axes[1][col].set_yscale("log")
    fig.suptitle(f"wrk, {results['cpus']} CPUs shared by wrk, Envoy, router and upstreams")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def wait_workers(stack: Stack, workers: int, timeout_s: float = 120) -> None:
    """Every worker serving (the supervisor's /readyz), so no run starts on a half-started router."""
    url = f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200 and r.json().get("workers_ready", 1) >= workers:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{workers} workers not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--scenarios", nargs="+", default=["keyword_only", "miss", "hit"],
                        choices=["keyword_only", "miss", "miss_chat", "hit"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server.workers values to compare")
    parser.add_argument("--pin", action="store_true",
                        help="router processes alone on the last CPU, the rest of the stack and wrk on the others: "
                             "what one dedicated router core carries")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    results: dict[str, Any] = {"cpus": os.cpu_count(), "duration_s": args.duration, "workers": args.workers,
                               "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "method": __doc__.split("\n\n")[1], "scenarios": {}}
    for name in args.scenarios:
        rows: list[dict[str, Any]] = []
        for workers in args.workers:
            rows += run_scenario(name, args.concurrency, args.duration, workers, args.pin)["rows"]
        results["scenarios"][name] = {"rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
