"""A real Milvus 2.3.5 standalone server (PyPI `milvus`) for tests, benchmarks and .ci/run.

Milvus binds its gRPC and metrics ports to every interface with no setting to change that, so
it is only ever started inside a network namespace whose sole interface is loopback: the
processes that talk to it (pytest, the router, Envoy) must run in that namespace too. From a
shell, enter it for the whole run:

    ip netns add vsr-test 2>/dev/null; ip netns exec vsr-test ip link set lo up
    ip netns exec vsr-test .venv/bin/python -m pytest tests/integration

Inside pytest, the `milvus_server` fixture starts one server per session (or reuses the one
named by VSR_MILVUS_URI) and skips with the command above when the namespace is not isolated;
VSR_REQUIRE_MILVUS=1 (set by .ci/run) turns that skip into a failure. From a shell:

    python -m devstack.milvus_server start --dir var/milvus-ci   # prints the URI, exits when healthy
    python -m devstack.milvus_server stop --dir var/milvus-ci

One server per namespace: the embedded etcd's peer port (2380) is fixed. Every start uses a fresh data directory (a restart on a used one once crashed with a stale etcd
session); the 56 MB of unpacked binaries are hard-linked from one cache to skip the lzma step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETNS_HINT = "ip netns add vsr-test; ip netns exec vsr-test ip link set lo up; ip netns exec vsr-test <command>"
DEFAULT_PORT = 19530
START_TIMEOUT_S = 120.0


def network_is_isolated() -> bool:
    """True when loopback is the only interface, so ports bound to 0.0.0.0 reach nobody else."""
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def _serve(data_dir: Path, port: int) -> None:
    """The `milvus-server` wrapper, with two fixes: the proxy gets exactly `port`, and its free-port
    probe sets SO_REUSEADDR, else a port left in TIME_WAIT by the previous server (60 s) looks taken
    and Milvus silently moves to the next one."""
    import milvus

    def try_bind(_: object, candidate: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", candidate))
            return sock
        except OSError:
            sock.close()
            return None

    milvus.MilvusServerConfig.try_bind_port = try_bind  # type: ignore[method-assign]
    server = milvus.MilvusServer(wait_for_started=False)
    server.set_base_dir(str(data_dir))
    server.config.update(proxy_port=port)
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.start()
    proc = server.server_proc
    while proc is not None and proc.poll() is None:  # exits when the binary dies, unlike `wait()`
        time.sleep(0.2)
    server.stop()


def _prime_binaries(data_dir: Path) -> None:
    """Hard-link cached binaries (and the md5 markers the wrapper checks) into a new data dir."""
    import milvus

    cache = ROOT / "var" / "milvus-bin"
    if not (cache / "milvus").exists():
        milvus._initialize_data_files(str(cache.parent / "milvus-bin-build"))
        shutil.rmtree(cache, ignore_errors=True)
        (cache.parent / "milvus-bin-build" / "bin").rename(cache)
        shutil.rmtree(cache.parent / "milvus-bin-build", ignore_errors=True)
    target = data_dir / "bin"
    target.mkdir(parents=True, exist_ok=True)
    for item in cache.iterdir():
        dest = target / item.name
        if not dest.exists():
            os.link(item, dest)


class MilvusServer:
    """One `milvus-server` wrapper process and its data directory."""

    def __init__(self, base_dir: Path, port: int = DEFAULT_PORT):
        self.base_dir = base_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir: Path | None = None
        self._used: list[Path] = []  # every start gets a fresh dir; all are removed at the end

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start on a fresh data dir and block until it answers a gRPC call."""
        if not network_is_isolated():
            raise RuntimeError(f"refusing to start Milvus outside an isolated network namespace: {NETNS_HINT}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.base_dir))
        self._used.append(self.data_dir)
        _prime_binaries(self.data_dir)
        log = open(self.data_dir / "wrapper.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.milvus_server", "_serve", "--dir", str(self.data_dir),
             "--port", str(self.port)], cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"milvus-server died while starting; see {self.data_dir}/logs")
            if _accepts(self.port) and _serves(self.uri):
                return
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"Milvus not healthy after {START_TIMEOUT_S:.0f} s; see {self.data_dir}/logs")

    def stop(self) -> None:
        """SIGINT to the wrapper (it stops the binary in 1-3 s); SIGTERM to the binary itself can hang."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _reap_group(self.proc.pid)
        self.proc = None

    def remove_data(self) -> None:
        for path in self._used:
            shutil.rmtree(path, ignore_errors=True)
        self._used.clear()


def _reap_group(pgid: int, timeout_s: float = 15.0) -> None:
    """The wrapper can exit before the milvus binary it started: wait for its whole group, then kill."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _serves(uri: str) -> bool:
    """A real call: /healthz was seen to stay not-OK for minutes on a loaded machine while serving. A server still
    starting answers with MilvusException or, on a loaded machine, a raw gRPC error (DEADLINE_EXCEEDED): both
    mean "not yet", not "give up"."""
    import grpc
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        client = MilvusClient(uri, timeout=3)
        client.list_collections(timeout=3)
        client.close()
        return True
    except (MilvusException, grpc.RpcError):
        return False


def _pidfile(base: Path) -> Path:
    return base / "wrapper.pid"


def main(argv: list[str] | None = None) -> int:
    """`start` leaves the server running (pid in DIR/wrapper.pid) and prints its URI; `stop` ends it."""
    parser = argparse.ArgumentParser(prog="python -m devstack.milvus_server")
    parser.add_argument("action", choices=["start", "stop", "_serve"])
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "milvus-ci")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if args.action == "_serve":
        _serve(args.dir, args.port)
        return 0
    if args.action == "start":
        server = MilvusServer(args.dir, args.port)
        server.start()
        assert server.proc is not None
        _pidfile(args.dir).write_text(str(server.proc.pid))
        print(server.uri)
        return 0
    pidfile = _pidfile(args.dir)
    if not pidfile.exists():
        return 0
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGINT)
        for _ in range(300):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pidfile.unlink()
    shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
