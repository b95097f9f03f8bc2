"""Render deploy/grafana/dashboards/semantic-router.json to a PNG with real data, without Grafana.

Grafana does not install from the registries here, so this does what it would do: it starts the
local stack (real Envoy, router, demo upstreams) and a real Prometheus (Debian `prometheus`) that
scrapes the router, sends a bounded mix of local traffic (routed, cached, explicit-model, streaming,
invalid, plus one valid and one invalid config edit), then evaluates every panel's PromQL through
Prometheus' HTTP API and draws the panels at their gridPos with matplotlib.

    apt-get install prometheus   # the server only runs inside this script
    .venv/bin/python deploy/grafana/render_png.py [--seconds 60] [--out deploy/grafana/dashboard.png]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use(): the backend must be chosen first
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from devstack.stack import Stack, derive_config, wait_for_port

DASHBOARD = ROOT / "deploy/grafana/dashboards/semantic-router.json"
SCRAPE_S = 1
PROMPTS = [
    "Compute the integral of x squared from zero to one.",
    "Write a python function that reverses a linked list.",
    "What should I cook for dinner tonight?",
    "Summarise the plot of Hamlet in two sentences.",
    "Solve the equation 3 * 7 = x and prove it.",
]
BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ffcb7d"]


def start_prometheus(work: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("needs the Prometheus server: apt-get install prometheus")
    port = metrics_port + 1
    scrape = {"job_name": "semantic-router", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
    config = {"global": {"scrape_interval": f"{SCRAPE_S}s"}, "scrape_configs": [scrape]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    cmd = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("wb"))
    wait_for_port("127.0.0.1", port, 30, proc)
    return proc, f"http://127.0.0.1:{port}"


def send_traffic(stack: Stack, seconds: float) -> None:
    """A bounded loop of local requests; meanwhile a valid, an invalid and a fixing config edit."""
    client = httpx.Client(base_url=stack.base_url, timeout=10, headers={"authorization": "Bearer sk-demo"})
    deadline = time.monotonic() + seconds
    editor = threading.Timer(seconds / 3, edit_config, args=(stack, seconds / 6))
    editor.start()
    for i in itertools.count():
        if time.monotonic() > deadline:
            break
        prompt = PROMPTS[i % len(PROMPTS)] + ("" if i % 3 else f" (variant {i})")
        body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
        if i % 7 == 0:
            body["model"] = "qwen3-4b"
        if i % 5 == 0:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        client.post("/chat/completions", content=b"{oops" if i % 23 == 0 else json.dumps(body).encode())
        time.sleep(0.05)
    client.close()
    editor.join()


def edit_config(stack: Stack, pause_s: float) -> None:
    """Send `other` to the large model (applied), break the file (rejected), then fix it (applied)."""
    cfg = yaml.safe_load(stack.config_path.read_text())
    for category in cfg["categories"]:
        if category["name"] == "other":
            category["model_scores"] = [{"model": "gpt-oss-120b", "score": 1.0}]
    valid = yaml.safe_dump(cfg, sort_keys=False)
    for text in (valid, valid.replace("default_model:", "default_model: x"), valid + "\n"):
        stack.config_path.write_text(text)
        time.sleep(pause_s)


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    expr = expr.replace("$__rate_interval", f"{4 * SCRAPE_S}s").replace("$__range", f"{int(end - start)}s")
    params = {"query": expr, "start": start, "end": end, "step": max(1, int((end - start) / 120))}
    reply = httpx.get(f"{prom}/api/v1/query_range", params=params, timeout=30).json()
    if reply.get("status") != "success":
        raise RuntimeError(f"{expr}: {reply}")
    return reply["data"]["result"]  # type: ignore[no-any-return]


def legend(template: str, labels: dict[str, str]) -> str:
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out.replace("{{", "").replace("}}", "") or "value"


def fmt(value: float, unit: str | None) -> str:
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.2f} ms"
    if unit == "currencyUSD":
        return f"${value:.4f}"
    if unit == "bytes":
        return f"{value / 2**20:.0f} MiB"
    return f"{value:.3g}"


def draw_panel(ax: Any, panel: dict[str, Any], series: list[tuple[str, list[float], list[float]]]) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    kind = panel["type"]
    if not series:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
    elif kind == "stat":
        ax.text(0.5, 0.45, fmt(series[0][2][-1], unit), color=COLORS[0], fontsize=20, ha="center",
                va="center", transform=ax.transAxes, weight="bold")  # fmt: skip
    elif kind == "piechart":
        values = [s[2][-1] for s in series]
        ax.pie(values, labels=[s[0] for s in series], colors=COLORS, textprops={"color": TEXT, "fontsize": 7})
    elif kind == "heatmap":
        draw_heatmap(ax, series)
    else:
        draw_lines(ax, panel, series, unit)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=6)
    if kind in ("stat", "piechart"):
        ax.set_xticks([])
        ax.set_yticks([])


def draw_lines(ax: Any, panel: dict[str, Any], series: list[tuple[str, list[float], list[float]]],
               unit: str | None) -> None:  # fmt: skip
    t0 = min(s[1][0] for s in series)
    stacked = panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "percent"
    if stacked:
        times = sorted({t for s in series for t in s[1]})
        grids = [[dict(zip(s[1], s[2], strict=True)).get(t, 0.0) for t in times] for s in series]
        totals = [sum(col) or 1.0 for col in zip(*grids, strict=True)]
        shares = [[v / tot for v, tot in zip(g, totals, strict=True)] for g in grids]
        ax.stackplot([t - t0 for t in times], shares, labels=[s[0] for s in series], colors=COLORS, alpha=0.8)
    else:
        for (name, ts, vs), color in zip(series, itertools.cycle(COLORS)):
            ax.plot([t - t0 for t in ts], vs, color=color, linewidth=1.2, label=name)
    ax.grid(color=GRID, linewidth=0.5)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v, unit)))
    ax.legend(fontsize=6, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, loc="upper left")


def draw_heatmap(ax: Any, series: list[tuple[str, list[float], list[float]]]) -> None:
    """Cumulative `le` buckets -> per-bucket counts, one column per step."""
    ordered = sorted(series, key=lambda s: float(s[0]))
    times = ordered[0][1]
    cumulative = [dict(zip(s[1], s[2], strict=True)) for s in ordered]
    rows = [[c.get(t, 0.0) - (cumulative[i - 1].get(t, 0.0) if i else 0.0) for t in times]
            for i, c in enumerate(cumulative)]  # fmt: skip
    ax.imshow(rows, aspect="auto", origin="lower", cmap="inferno", interpolation="nearest")
    ax.set_yticks(range(len(ordered)), [s[0] for s in ordered])


def render(prom: str, start: float, end: float, out: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    fig = plt.figure(figsize=(24, rows * 0.42 + 0.6), facecolor=BG)
    top = 1 - 0.6 / (rows * 0.42 + 0.6)  # room for the title
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        rect = (
            g["x"] / 24 + 0.022,
            top * (1 - (g["y"] + g["h"]) / rows) + 0.01,
            g["w"] / 24 - 0.026,
            top * g["h"] / rows - 0.026,
        )  # fmt: skip (room for tick labels)
        if panel["type"] == "row":
            fig.text(rect[0], rect[1] + 0.004, panel["title"], color=TEXT, fontsize=12, weight="bold")
            continue
        series = [
            (legend(t.get("legendFormat", ""), r["metric"]), [float(v[0]) for v in r["values"]],
             [float(v[1]) if v[1] not in ("NaN", "+Inf", "-Inf") else 0.0 for v in r["values"]])
            for t in panel["targets"]
            for r in query_range(prom, t["expr"], start, end)
        ]  # fmt: skip
        draw_panel(fig.add_axes(rect), panel, series)
    fig.suptitle(f"{dashboard['title']} (rendered from the dashboard JSON with live data)", color=TEXT,
                 fontsize=14, x=0.5, y=0.998)  # fmt: skip
    fig.savefig(out, dpi=60, facecolor=BG)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "deploy/grafana/dashboard.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vsr-dashboard-"))
    config = derive_config(
        work, lambda cfg: cfg.update(semantic_cache={"enabled": True, "backend": "memory"})
    )
    stack = Stack(config, work, log_to=work)
    stack.start()
    prom, prom_url = start_prometheus(work, stack.cfg.server.metrics_port)
    try:
        start = time.time()
        send_traffic(stack, args.seconds)
        end = time.time()
        time.sleep(3 * SCRAPE_S)  # let the last samples land; the panels end with the traffic
        render(prom_url, start, end, args.out)
    finally:
        prom.terminate()
        prom.wait(10)
        stack.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
