"""The local stack: demo upstreams, the router and a real Envoy, as separate processes.

`make run` runs this module in the foreground (`python -m devstack`); the integration tests, the
benchmarks and the dashboard renderer use the same class, so what they check is what a newcomer starts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from router.config import ConfigError, RouterConfig, load_config, load_yaml
from router.envoy_config import envoy_config, render

ROOT = Path(__file__).resolve().parent.parent


_port_blocks = itertools.count(0)


def derive_config(tmp: Path, overrides: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The shipped config on ports of its own (so tests never collide with `make run`)."""
    shipped = ROOT / "config" / "config.yaml"
    cfg = load_yaml(shipped.read_text(), str(shipped))
    # Below the kernel's ephemeral range (32768+), where outgoing connections could hold our ports.
    base = 20000 + 100 * ((next(_port_blocks) + 15 * (os.getpid() % 8)) % 120)
    # One router process unless a test or benchmark asks for workers: most tests look at one process.
    cfg["server"].update(port=base + 51, metrics_port=base + 90, workers=1)
    cfg["envoy"].update(port=base + 1, admin_port=base + 99)
    for i, model in enumerate(cfg["models"].values()):
        model["endpoints"] = [{"address": "127.0.0.1", "port": base + 10 + i}]
    cfg["semantic_cache"] = {"enabled": False}
    cfg["classifier"]["enabled"] = False
    if overrides:
        overrides(cfg)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Stack:
    """Starts and stops every process of the local stack for one router config."""

    def __init__(self, config_path: Path, workdir: Path, log_to: Path | None = None,
                 envoy_config_path: Path | None = None, router_command: list[str] | None = None,
                 cwd: Path = ROOT):
        self.config_path = config_path
        self.cfg: RouterConfig = load_config(config_path)
        self.workdir = workdir
        self.log_to = log_to
        self.envoy_config_path = envoy_config_path or workdir / "envoy.yaml"
        # The router as a checkout runs it; the installed-package test passes the venv's console script.
        self.router_command = router_command or [sys.executable, "-m", "router.cli"]
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.cfg.envoy.host}:{self.cfg.envoy.port}/v1"

    def _spawn(self, name: str, args: list[str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        out: IO[bytes] | None = None
        if self.log_to is not None:
            # A served name may be a Hugging Face id ("Qwen/Qwen3-4B"): one file, not a directory.
            out = open(self.log_to / f"{name.replace('/', '_')}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(out)
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = proc
        return proc

    def start_upstreams(self) -> None:
        for name, model in self.cfg.models.items():
            for i, ep in enumerate(model.endpoints):
                proc = self._spawn(f"upstream-{name}-{i}", [sys.executable, "-m", "devstack.demo_upstream",
                                                            "--model", name, "--port", str(ep.port)])
                wait_for_port(ep.address, ep.port, 20, proc)

    def start_router(self, timeout: float = 120) -> None:
        proc = self._spawn("router", [*self.router_command, "serve", "--config", str(self.config_path)],
                           cwd=self.cwd)
        wait_for_port(self.cfg.server.host, self.cfg.server.port, timeout, proc)

    def stop_router(self) -> None:
        self._stop("router")

    def upstream_requests(self) -> int:
        """Requests the demo model servers have received, all models together (their `/stats`)."""
        total = 0
        for model in self.cfg.models.values():
            for ep in model.endpoints:
                with urllib.request.urlopen(f"http://{ep.address}:{ep.port}/stats", timeout=5) as r:
                    total += int(json.load(r)["requests"])
        return total

    def start_envoy(self) -> None:
        self.envoy_config_path.write_text(render(self.cfg))
        envoy = str(Path(sys.executable).parent / "envoy")
        proc = self._spawn("envoy", [envoy, "-c", str(self.envoy_config_path), "--use-dynamic-base-id",
                                     "--log-level", "warn", "--concurrency", "1"])
        wait_for_port(self.cfg.envoy.host, self.cfg.envoy.port, 20, proc)
        self._wait_envoy_ready()

    def start_bare_envoy(self) -> str:
        """The same Envoy without the ext_proc filter, on the next port: the baseline every benchmark
        measures the sidecar against. Returns its OpenAI base URL."""
        cfg = envoy_config(self.cfg)
        listener = cfg["static_resources"]["listeners"][0]
        port = self.cfg.envoy.port + 2
        listener["address"]["socket_address"]["port_value"] = port
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_proc"]
        cfg.pop("admin", None)
        path = self.workdir / "envoy-bare.yaml"
        path.write_text(yaml.safe_dump(cfg))
        envoy = str(Path(sys.executable).parent / "envoy")
        proc = self._spawn("envoy-bare", [envoy, "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn",
                                          "--concurrency", "1"])
        wait_for_port("127.0.0.1", port, 20, proc)
        return f"http://127.0.0.1:{port}/v1"

    def _wait_envoy_ready(self) -> None:
        if not self.cfg.envoy.admin_port:
            return
        url = f"http://127.0.0.1:{self.cfg.envoy.admin_port}/ready"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("envoy did not become ready")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_upstreams()
        self.start_router()
        self.start_envoy()

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in ["envoy", "envoy-bare", "router", *[n for n in self.procs if n.startswith("upstream")]]:
            self._stop(name)
        for f in self._logs:
            f.close()


def _persistent_cache_secret(path: Path) -> None:
    """Tenant namespaces are HMACs: keep the local secret across restarts so the cache survives them."""
    if "VSR_CACHE_HMAC_SECRET" in os.environ:
        return
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    os.environ["VSR_CACHE_HMAC_SECRET"] = path.read_text().strip()


def main() -> None:
    """`make run`: the whole local stack in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devstack", description=main.__doc__)
    parser.add_argument("config", nargs="?", type=Path, default=ROOT / "config" / "config.yaml",
                        help="router config (default: config/config.yaml)")
    # Not envoy/envoy.yaml: that file is committed and checked against config/config.yaml (make envoy-config).
    parser.add_argument("--envoy-config", type=Path, default=ROOT / "var" / "envoy.yaml",
                        help="where to write the Envoy config generated from CONFIG (default: var/envoy.yaml)")
    args = parser.parse_args()
    _persistent_cache_secret(ROOT / "var" / "cache-hmac.secret")
    try:
        stack = Stack(args.config, ROOT / "var", envoy_config_path=args.envoy_config)
    except ConfigError as exc:
        sys.exit(f"python -m devstack: {exc}")
    stopping = False

    def _terminate(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        stack.start()
        print(f"\nSemantic router ready. OpenAI endpoint: {stack.base_url}  (Ctrl-C to stop)\n"
              f"  Envoy config: {stack.envoy_config_path}\n"
              f"  curl -si {stack.base_url}/chat/completions -H 'authorization: Bearer sk-demo' "
              "-H 'content-type: application/json' "
              """-d '{"model":"auto","messages":[{"role":"user","content":"Prove that sqrt(2) is irrational"}]}'"""
              "\n", flush=True)
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(0.5)
        print("a child process exited; stopping the stack", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()

