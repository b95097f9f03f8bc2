"""Router workers without processes: how many, what Envoy is told, how workers find the shared Lite child,
and what the supervisor's /readyz says about its workers' reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from router.cache.lite import SHARED_LITE_ENV, LiteProcess, LiteUnavailable, SharedLite, lite_for
from router.config import ConfigError, parse_config
from router.envoy_config import EXT_PROC_CLUSTER, envoy_config
from router.extproc.slot import WorkerSlot, available_cpus, planned_workers, read_state
from router.extproc.workers import Worker, WorkersView, _port_free

ROOT = Path(__file__).resolve().parents[2]


def _shipped(**server: object) -> dict[str, object]:
    data = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    data["server"].update(server)
    return data


def test_auto_is_the_cpus_available_capped_by_a_cgroup_quota(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "missing") == cpus
    (tmp_path / "max").write_text("max 100000\n")
    assert available_cpus(tmp_path / "max") == cpus
    (tmp_path / "half").write_text("50000 100000\n")
    assert available_cpus(tmp_path / "half") == 1  # never below one
    (tmp_path / "many").write_text("6400000 100000\n")
    assert available_cpus(tmp_path / "many") == cpus  # never above the affinity mask


def test_planned_workers_reads_the_server_section_even_of_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_shipped(workers=3)))
    assert planned_workers(path) == 3
    broken = _shipped(workers=2)
    broken["default_category"] = ["not", "a", "name"]
    path.write_text(yaml.safe_dump(broken))
    assert planned_workers(path) == 2
    assert planned_workers(tmp_path / "missing.yaml") == 1  # the single router then says why it cannot start
    path.write_text(yaml.safe_dump(_shipped(workers="auto")))
    assert planned_workers(path) == available_cpus()


def test_workers_must_be_auto_or_a_positive_count() -> None:
    for bad in (0, "many", -1):
        with pytest.raises(ConfigError, match="server.workers"):
            parse_config(_shipped(workers=bad), "test")


def test_envoy_opens_several_ext_proc_connections_only_for_workers() -> None:
    def h2(workers: object) -> dict[str, object]:
        clusters = envoy_config(parse_config(_shipped(workers=workers), "test"))["static_resources"]["clusters"]
        cluster = next(c for c in clusters if c["name"] == EXT_PROC_CLUSTER)
        return dict(cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])

    single = h2(1)
    assert single["explicit_http_config"] == {"http2_protocol_options": {}} and "common_http_protocol_options" not in single
    spread = h2("auto")
    assert spread["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"] > 0  # type: ignore[index]
    assert spread["common_http_protocol_options"]["max_connection_duration"]  # type: ignore[index]


def test_a_worker_uses_the_supervisors_lite_child_by_its_uri_file(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db, uri_file, socket = tmp_path / "cache.db", tmp_path / "lite.uri", tmp_path / "lite.sock"
    monkeypatch.setenv(SHARED_LITE_ENV, json.dumps({str(db): str(uri_file)}))
    lite = lite_for(db)
    assert isinstance(lite, SharedLite)
    with pytest.raises(LiteUnavailable):  # not started yet: the store backs off and retries
        lite.ensure_running()
    uri_file.write_text(f"unix:{socket}")
    with pytest.raises(LiteUnavailable):  # a stale URI whose socket is gone
        lite.ensure_running()
    socket.touch()
    assert lite.ensure_running() == f"unix:{socket}"
    lite.release()  # a worker never stops the supervisor's child
    other = lite_for(tmp_path / "other.db")  # a file the supervisor does not own: this process's own child
    assert isinstance(other, LiteProcess)
    other.release()


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def two_workers(tmp_path: Path, grace_s: float = 10.0) -> tuple[list[Worker], WorkersView]:
    """Two workers with pids 1000 and 1001 that have not reported yet, and the supervisor's view of them."""
    workers = [Worker(i, tmp_path / f"worker-{i}.json") for i in range(2)]
    for i, w in enumerate(workers):
        w.proc = FakeProc(1000 + i)  # type: ignore[assignment]
    (tmp_path / "metrics").mkdir()
    return workers, WorkersView(workers, tmp_path / "metrics", stale_after_s=15, split_grace_s=grace_s)


def test_readyz_is_ready_while_one_worker_serves_and_lists_them_all(tmp_path: Path) -> None:
    workers, view = two_workers(tmp_path)
    assert view.snapshot()["ready"] is False  # nobody reported yet
    exported = {family.name for family in view.registry.collect()}
    assert {"python_info", "process_resident_memory_bytes", "vsr_workers"} <= exported  # README's list, as one router

    def report(w: Worker, pid: int, ready: bool, beat: float) -> None:
        WorkerSlot(w.state_file).write({"pid": pid, "ready": ready, "serving": True, "streams": 7,
                                        "components": {"config": {"ok": ready, "detail": "x"}}, "beat": beat})

    report(workers[0], 1000, True, time.time())
    report(workers[1], 999, True, time.time())  # a previous life's report does not count
    snap = view.snapshot()
    assert snap["ready"] is True and snap["workers_ready"] == 1
    assert [w["ready"] for w in snap["workers"]] == [True, False] and snap["workers"][0]["streams"] == 7
    report(workers[0], 1000, True, time.time() - 60)  # a stale heartbeat: that loop is stuck
    assert view.snapshot()["ready"] is False
    assert read_state(tmp_path / "nothing.json") is None


def _serving(workers: list[Worker], versions: list[str]) -> None:
    for i, (w, version) in enumerate(zip(workers, versions, strict=True)):
        WorkerSlot(w.state_file).write({"pid": 1000 + i, "ready": True, "serving": True, "streams": 0, "beat": time.time(),
                                        "config_version": version, "components": {"config": {"ok": True, "detail": ""}}})


def test_readyz_is_not_ready_while_workers_serve_different_configs(tmp_path: Path) -> None:
    """A replaced worker that served another config than its sibling (trial 4) left /readyz at 200."""
    workers, view = two_workers(tmp_path, grace_s=0.0)  # the split has outlasted a reload's rollout
    _serving(workers, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    snap = view.snapshot()
    assert snap["ready"] is False and snap["workers_ready"] == 2
    assert snap["components"]["workers"] == {"ok": False,
                                             "detail": "workers serve different configs: aaaaaaaaaaaa, bbbbbbbbbbbb"}
    _serving(workers, ["aaaaaaaaaaaa"] * 2)
    assert view.snapshot()["ready"] is True


def test_a_reload_reaching_one_worker_before_the_other_keeps_the_pod_ready(tmp_path: Path) -> None:
    """Each worker applies an edit on its own poll: /readyz said 503 for the ~0.2 s between them on every valid
    reload. A split shorter than the grace is a reload rolling out: ready, and /readyz says so."""
    workers, view = two_workers(tmp_path)
    _serving(workers, ["aaaaaaaaaaaa"] * 2)
    assert view.snapshot()["ready"] is True
    _serving(workers, ["bbbbbbbbbbbb", "aaaaaaaaaaaa"])  # the first worker has applied the edit
    snap = view.snapshot()
    assert snap["ready"] is True
    assert snap["components"]["workers"] == {"ok": True,
                                             "detail": "workers applying a reload: aaaaaaaaaaaa, bbbbbbbbbbbb"}
    _serving(workers, ["bbbbbbbbbbbb"] * 2)
    assert view.snapshot()["ready"] is True and "workers" not in view.snapshot()["components"]


def test_an_operators_metrics_dir_that_does_not_exist_yet_does_not_stop_the_cli(tmp_path: Path) -> None:
    """The Kubernetes manifest sets PROMETHEUS_MULTIPROC_DIR on an empty /tmp: prometheus-client must not open
    files there before the supervisor has created the directory (the image check caught a crash at import)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "not-yet")}
    env.pop("VSR_WORKER_STATE", None)
    done = subprocess.run([sys.executable, "-m", "router.cli", "validate", str(ROOT / "config" / "config.yaml")],
                          check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OK" in done.stdout


def test_the_port_probe_refuses_a_listening_port_but_not_one_a_stopped_router_left_in_time_wait() -> None:
    """The supervisor's probe must not refuse a restart for the minute the kernel keeps closed connections."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not _port_free("127.0.0.1", port)
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert _port_free("127.0.0.1", port)


def test_a_lite_child_that_cannot_start_is_retried_with_a_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Lite file in a read-only directory: the supervisor tried (and logged an error) every 0.2 s tick."""
    from router.extproc.workers import LiteSupervisor

    attempts: list[float] = []

    def refuse(_: LiteProcess) -> str:
        attempts.append(time.monotonic())
        raise LiteUnavailable("cannot start Milvus Lite on x.db: Read-only file system")

    monkeypatch.setattr(LiteProcess, "ensure_running", refuse)
    lite = LiteSupervisor("/nonexistent/x.db")
    lite.start()
    time.sleep(2.2)
    lite.stop()
    assert 3 <= len(attempts) <= 4, attempts  # at 0, 0.5, 1.5 s (then 3.5 s): not 11 ticks


def test_only_the_first_worker_counts_config_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker reloads the same file; each counting it made one edit read as N reloads on the Pod's /metrics."""
    monkeypatch.setenv("VSR_WORKER_STATE", str(tmp_path / "worker-1.json"))
    counted = []
    for index in ("0", "1"):
        monkeypatch.setenv("VSR_WORKER_INDEX", index)
        slot = WorkerSlot.from_env()
        assert slot is not None and slot.index == int(index)
        counted.append(slot.speaks_for_pod)
    assert counted == [True, False]


def _gauge(metrics_dir: Path, pid: int, name: str, value: float, labels: dict[str, str] | None = None) -> None:
    """What a worker's `livemin` gauge writes to its file (prometheus-client's multiprocess format)."""
    f = MmapedDict(str(metrics_dir / f"gauge_livemin_{pid}.db"))
    f.write_value(mmap_key(name, name, list(labels or {}), list((labels or {}).values()), "h"), value, 0.0)
    f.close()


def _exported(view: WorkersView, name: str) -> dict[str, float]:
    return {json.dumps(s.labels, sort_keys=True): s.value
            for family in view.registry.collect() for s in family.samples if s.name == name}


def test_a_starting_replacement_worker_does_not_mark_the_pods_cache_down(tmp_path: Path) -> None:
    """Trial 14: while a killed worker's replacement loaded its models, its initial 0s took the Pod's
    `vsr_cache_backend_up` and `vsr_component_ready{component="cache"}` (the worst live worker) to 0 for 2-4 s,
    though its sibling served from an untouched cache. A worker counts from its first ready report."""
    workers, view = two_workers(tmp_path)
    metrics_dir, cache = tmp_path / "metrics", {"component": "cache"}
    for pid, up in ((1000, 1.0), (1001, 0.0)):  # 1001 starting: its gauges at their initial 0
        _gauge(metrics_dir, pid, "vsr_cache_backend_up", up)
        _gauge(metrics_dir, pid, "vsr_component_ready", up, cache)
    assert _exported(view, "vsr_cache_backend_up") == {"{}": 0.0}  # nobody ready yet: a Pod starting shows its 0s
    WorkerSlot(workers[0].state_file).write({"pid": 1000, "ready": True, "serving": True, "beat": time.time()})
    assert _exported(view, "vsr_cache_backend_up") == {"{}": 1.0}
    assert _exported(view, "vsr_component_ready") == {json.dumps(cache): 1.0}
    WorkerSlot(workers[1].state_file).write({"pid": 1001, "ready": True, "serving": True, "beat": time.time()})
    _gauge(metrics_dir, 1001, "vsr_cache_backend_up", 0.0)  # ready, then its cache failed: that counts
    assert _exported(view, "vsr_cache_backend_up") == {"{}": 0.0}
    WorkerSlot(workers[1].state_file).write({"pid": 1001, "ready": False, "serving": True, "beat": time.time()})
    assert _exported(view, "vsr_cache_backend_up") == {"{}": 0.0}  # and still counts once it is no longer ready
