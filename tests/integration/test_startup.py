"""Start-up as an operator sees it: one clear line and exit 1 when the router cannot start, and a
serving router that has loaded nothing from the offline tools (no training code, no torch)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import ROOT, derive_config


def serve(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", "serve", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_line_exit(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("semantic-router: cannot start:") and expected in last
    assert "Traceback" not in result.stderr


def test_busy_ext_proc_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = derive_config(tmp_path)
    port = int(__import__("yaml").safe_load(config.read_text())["server"]["port"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert_one_line_exit(serve(config), f"ext_proc port 127.0.0.1:{port}")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_another_router_serves_is_busy_too(tmp_path: Path, workers: int) -> None:
    """grpc binds with SO_REUSEPORT unless told not to, so a second router (a second `make run`, an old one left
    running) shared a running router's port and Envoy's streams were split between two configs."""
    def second(cfg: dict[str, Any]) -> None:
        cfg["server"]["workers"] = workers

    config = derive_config(tmp_path, second)
    port = int(__import__("yaml").safe_load(config.read_text())["server"]["port"])
    with socket.socket() as router:  # what a running router's (or worker's) listener looks like
        router.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        router.bind(("127.0.0.1", port))
        router.listen()
        assert_one_line_exit(serve(config, timeout=30), f"ext_proc port 127.0.0.1:{port}")


def test_missing_model_is_one_line_and_exit_1(tmp_path: Path) -> None:
    def enable(cfg: dict[str, Any]) -> None:
        cfg["classifier"].update(enabled=True, model_dir=str(tmp_path / "no-model"))
    assert_one_line_exit(serve(derive_config(tmp_path, enable)), "python -m offline build")


@pytest.mark.parametrize("broken", ["model_int8.onnx", "tokenizer.json"])
def test_a_corrupt_model_file_is_one_line_and_exit_1(require_model: None, tmp_path: Path, broken: str) -> None:
    """A truncated or corrupt model file left the router running unready forever (/readyz 503, a
    runtime_build_failed line), although no config edit can fix it: now it ends like a missing model."""
    import shutil

    model_dir = tmp_path / "minilm"
    shutil.copytree(ROOT / "models" / "minilm", model_dir)
    damaged = model_dir / broken
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    def enable(cfg: dict[str, Any]) -> None:
        cfg["classifier"].update(enabled=True, model_dir=str(model_dir))
    assert_one_line_exit(serve(derive_config(tmp_path, enable), timeout=30), "cannot be loaded")


def test_unreadable_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    assert_one_line_exit(serve(tmp_path / "missing.yaml"), "cannot read config file")


def test_serving_router_never_imports_offline_or_dev_code(require_model: None, tmp_path: Path) -> None:
    """The real start-up (classifier and cache on), then a look at what the process imported."""
    def full(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        cfg["semantic_cache"] = {"enabled": True, "backend": "memory"}
    config = derive_config(tmp_path, full)
    script = textwrap.dedent(f"""
        import asyncio, os, socket, sys
        from pathlib import Path
        from router.extproc.server import serve
        from router.config import load_config

        async def main():
            task = asyncio.create_task(serve(Path({str(config)!r})))
            port = load_config({str(config)!r}).server.port
            while True:
                await asyncio.sleep(0.1)
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert not task.done(), task.exception()
            roots = {{name.split(".")[0] for name in sys.modules}}
            print(sorted(roots & {{"offline", "devstack", "tests", "torch", "transformers", "garak", "faker",
                                   "matplotlib", "sklearn"}}), flush=True)
            os._exit(0)  # the answer is printed; no need for a graceful stop
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture(autouse=True)
def _no_secret_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSR_CACHE_HMAC_SECRET", "test-secret")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_lite_file_in_a_read_only_directory_serves_uncached(tmp_path: Path, workers: int) -> None:
    """A read-only root filesystem with the cache's `uri` outside the writable var/: the supervisor (workers) died
    with an OSError traceback, against the cache's policy (serve uncached, log the error, count it), and
    milvus_lite printed 'Exception ignored ... Read-only file system' tracebacks around the JSON logs."""
    import os
    import shutil
    import signal
    import time

    import httpx

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a read-only mount")
    read_only = tmp_path / "ro"
    read_only.mkdir()

    def lite_there(cfg: dict[str, Any]) -> None:
        cfg["server"]["workers"] = workers
        cfg["semantic_cache"] = {"enabled": True, "uri": str(read_only / "cache.db"), "probe_idle_s": 0.5}
        cfg["observability"]["cache_probe_interval_s"] = 0.5
    config = derive_config(tmp_path, lite_there)
    metrics_port = int(__import__("yaml").safe_load(config.read_text())["server"]["metrics_port"])
    command = (f"mount -t tmpfs -o ro tmpfs {read_only} && exec {sys.executable} -m router.cli serve "
               f"--config {config}")
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", command], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 60, None
        while status != 200 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                status = httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2).status_code
            except httpx.HTTPError:
                pass
        assert status == 200 and proc.poll() is None  # serving, uncached
        time.sleep(2)  # a few cache probes
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Read-only file system" in stderr  # the reason is logged


@pytest.mark.parametrize("workers", [1, 2])
def test_a_config_that_is_not_utf8_waits_for_a_fix_saying_why(tmp_path: Path, workers: int) -> None:
    """A Latin-1 `é` in the file at start: `serve` died with a UnicodeDecodeError traceback (exit 1). Like any invalid
    file it now keeps the probes up on the file's own ports, says why in /readyz, and serves once the file is fixed."""
    import signal
    import time

    import httpx
    import yaml

    config = derive_config(tmp_path, lambda cfg: cfg["server"].update(workers=workers))
    good = config.read_text()
    config.write_bytes(good.replace("\n", "\n# caf\u00e9\n", 1).encode("latin-1"))
    url = f"http://127.0.0.1:{yaml.safe_load(good)['server']['metrics_port']}/readyz"
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(config)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)

    def poll(status: int, needle: str = "") -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(url, timeout=2)
                if r.status_code == status and needle in r.text:
                    return r.text
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"no {status} with {needle!r} from {url}; exit code {proc.poll()}")

    try:
        poll(503, f"{config}: <root>: not UTF-8: byte 0xe9 on line 2")
        config.write_text(good)
        poll(200)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
