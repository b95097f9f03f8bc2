"""The Kubernetes Pod's shutdown, as the kubelet runs it, against the real Envoy and router of a local stack: both
containers' preStop hooks from deploy/kubernetes/deployment.yaml at once, then SIGTERM to each container whose hook
returned. A stream in flight must finish, and the router must outlive Envoy (else Envoy's last requests are refused,
or with `failure_mode_allow: true` pass unrouted and unguarded)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import yaml

from devstack.stack import ROOT, Stack

ENVOY_ADMIN_PORT = 9901  # the manifest's Envoy config (deploy/kubernetes/config/envoy.yaml)


def pre_stop(container: str) -> list[str]:
    pod = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    command: list[str] = next(c for c in pod["containers"] if c["name"] == container)["lifecycle"]["preStop"]["exec"][
        "command"]
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]  # the image's python on PATH


def test_a_stream_in_flight_finishes_and_the_router_outlives_envoy(make_stack: Callable[..., Stack]) -> None:
    """The hooks were `sleep 5`; then Envoy's SIGTERM (which never drains) reset every client stream still running,
    and a model's answer streams for tens of seconds. The upstream here stalls 10 s halfway (demo fault `stall`)."""
    def pod_ports(cfg: dict[str, Any]) -> None:
        cfg["envoy"]["admin_port"] = ENVOY_ADMIN_PORT

    stack = make_stack(pod_ports)
    frames: list[str] = []
    first, stream_done = threading.Event(), threading.Event()

    def stream() -> None:
        body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Plan my week, please."}]}
        try:
            with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=60,
                              headers={"x-demo-fault": "qwen3-4b=stall"}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        frames.append(line.removeprefix("data: "))
                        first.set()
        except httpx.HTTPError as exc:
            frames.append(f"error: {exc!r}")
        finally:
            first.set()
            stream_done.set()

    client = threading.Thread(target=stream)
    client.start()
    assert first.wait(10)
    envoy, router = stack.procs["envoy"], stack.procs["router"]
    hooks = {name: subprocess.Popen(pre_stop(name), cwd=ROOT) for name in ("envoy", "router")}
    ended: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(ended) < 4 and time.monotonic() < deadline:  # the kubelet: SIGTERM once a container's hook is done
        for name, proc in (("envoy", envoy), ("router", router)):
            if name not in ended and hooks[name].poll() is not None:
                ended[name] = time.monotonic()
                proc.send_signal(signal.SIGTERM)
            if f"{name} exited" not in ended and proc.poll() is not None:
                ended[f"{name} exited"] = time.monotonic()
        time.sleep(0.05)
    client.join(30)
    assert frames[-1] == "[DONE]", frames[-2:]
    assert ended["router"] >= ended["envoy exited"]  # ext_proc served every request Envoy still took
    assert hooks["envoy"].returncode == 0 and hooks["router"].returncode == 0


def test_a_router_stopped_mid_stream_lets_the_stream_end_whole_and_refuses_new_requests(
        make_stack: Callable[..., Stack]) -> None:
    """SIGTERM straight to the router (Compose, systemd, `make run`; no preStop hook): it drained streams for 5 s,
    then cut them: the client's answer broke off (with `failure_mode_allow: true` its rest passed through Envoy
    unprocessed, not cached, usage not counted). The stream here stalls 10 s halfway (demo fault `stall`). A new
    request meanwhile went on unrouted and unguarded (fail open); now it gets the 503 `router_unavailable`."""
    stack = make_stack()
    router = stack.procs["router"]
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Plan my week, please."}]}
    frames: list[str] = []
    late: httpx.Response | None = None
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=60,
                      headers={"x-demo-fault": "qwen3-4b=stall"}) as r:
        try:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    frames.append(line.removeprefix("data: "))
                    if len(frames) == 1:
                        router.send_signal(signal.SIGTERM)
                        ready = _readyz_while(router, stack.cfg.server.metrics_port)
                        assert ready is not None and ready["components"]["stopping"]["ok"] is False, ready
                        sent = stack.upstream_requests()
                        late = httpx.post(f"{stack.base_url}/chat/completions", json={**body, "stream": False},
                                          timeout=30)
                        assert stack.upstream_requests() == sent  # not forwarded unscreened
        except httpx.HTTPError as exc:
            frames.append(f"error: {exc!r}")
    assert frames[-1] == "[DONE]", frames[-2:]
    assert late is not None and late.status_code == 503 and late.headers["retry-after"] == "1"
    assert late.json()["error"]["code"] == "router_unavailable"
    assert router.wait(30) == 0  # and then it exits by itself


def _readyz_while(router: subprocess.Popen[bytes], port: int) -> dict[str, Any] | None:
    """The router's /readyz once it says it is stopping (None if it exited first): a draining router is not ready."""
    while router.poll() is None:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        if "stopping" in body["components"]:
            return body
        time.sleep(0.05)
    return None
