"""Reload: real file edits and a real SIGHUP drive the runtime's reload; verdicts are counted."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from router.config import ConfigError
from router.observability.metrics import RouterMetrics
from router.observability.reload import ConfigWatcher, baseline


class FakeRuntime:
    """Stands in for the runtime holder: accepts files whose text starts with 'valid'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.applied: list[str] = []
        self.calls = 0

    async def reload(self) -> bool:
        self.calls += 1
        text = self.path.read_text()
        if text.startswith("boom"):
            raise RuntimeError("bug in runtime build")
        if text.startswith("unbuildable"):  # the holder logs runtime_build_failed and keeps the old runtime
            return False
        if not text.startswith("valid"):
            raise ConfigError(str(self.path), [("models", "field required")])
        self.applied.append(text)
        return True


Setup = tuple[Path, "FakeRuntime", ConfigWatcher, RouterMetrics]


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    path = tmp_path / "config.yaml"
    path.write_text("valid v1")
    metrics = RouterMetrics(CollectorRegistry())
    runtime = FakeRuntime(path)
    watcher = ConfigWatcher(path, runtime.reload, interval_s=0.05, settle_s=0.01, metrics=metrics)
    return path, runtime, watcher, metrics


def reloads(metrics: RouterMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("vsr_config_reloads_total", {"result": result}) or 0.0


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # make the edit visible even on filesystems with coarse mtimes
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


async def test_valid_change_applies_and_unchanged_content_does_not(setup: Setup) -> None:
    path, runtime, watcher, metrics = setup
    assert await watcher.check() is None  # nothing changed since start
    rewrite(path, "valid v2")
    assert await watcher.check() is True
    assert runtime.applied == ["valid v2"] and reloads(metrics, "ok") == 1
    rewrite(path, "valid v2")  # touched, same bytes: no reload
    assert await watcher.check() is None and runtime.calls == 1


async def test_invalid_change_is_rejected_once_and_counted(setup: Setup) -> None:
    path, runtime, watcher, metrics = setup
    rewrite(path, "models: [")
    assert await watcher.check() is False
    assert await watcher.check() is None  # the same bad bytes are not retried every second
    assert reloads(metrics, "failed") == 1
    assert metrics.registry.get_sample_value("vsr_config_last_reload_successful") == 0
    rewrite(path, "boom")
    assert await watcher.check() is False and reloads(metrics, "failed") == 2
    rewrite(path, "valid v3")
    assert await watcher.check() is True and runtime.applied == ["valid v3"]
    assert metrics.registry.get_sample_value("vsr_config_last_reload_successful") == 1


async def test_a_reload_whose_runtime_cannot_be_built_is_a_warning_like_an_invalid_file(setup: Setup) -> None:
    """Operators alert on warnings: a rejected edit must not hide at info level because the file itself parsed."""
    path, _, watcher, metrics = setup
    rewrite(path, "unbuildable")
    with capture_logs() as logs:
        assert await watcher.check() is False
    assert [(e["event"], e["log_level"]) for e in logs] == [("config_reload_rejected", "warning")]
    assert "runtime build failed" in logs[0]["reason"] and reloads(metrics, "failed") == 1


async def test_atomic_symlink_swap_like_a_configmap(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "config.yaml").write_text("valid v1")
    (tmp_path / "..data").symlink_to("v1")
    link = tmp_path / "config.yaml"
    link.symlink_to("..data/config.yaml")
    runtime = FakeRuntime(link)
    watcher = ConfigWatcher(link, runtime.reload, metrics=RouterMetrics(CollectorRegistry()), settle_s=0.01)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "config.yaml").write_text("valid v2 from the new ConfigMap")
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert await watcher.check() is True and runtime.applied == ["valid v2 from the new ConfigMap"]


async def test_sighup_forces_a_reload_through_the_running_watcher(setup: Setup) -> None:
    path, runtime, watcher, metrics = setup
    watcher.install_sighup()
    task = asyncio.create_task(watcher.run())
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if runtime.calls:
                break
            await asyncio.sleep(0.02)
        assert runtime.applied == ["valid v1"] and reloads(metrics, "ok") == 1
        rewrite(path, "valid v2")  # and the polling loop picks up edits by itself
        for _ in range(100):
            if len(runtime.applied) == 2:
                break
            await asyncio.sleep(0.02)
        assert runtime.applied == ["valid v1", "valid v2"]
    finally:
        task.cancel()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


async def test_an_edit_made_between_the_first_load_and_the_watchers_start_is_reloaded(tmp_path: Path) -> None:
    """A worker whose first load failed on a broken file, fixed before its watcher started, must still reload."""
    path = tmp_path / "config.yaml"
    path.write_text("broken v1")
    before = baseline(path)  # taken before the first load, as serve() does
    runtime = FakeRuntime(path)
    with pytest.raises(ConfigError):
        await runtime.reload()  # the first load fails
    rewrite(path, "valid v2")  # the fix lands while the process is still starting
    watcher = ConfigWatcher(path, runtime.reload, settle_s=0.01, metrics=RouterMetrics(CollectorRegistry()),
                            started_from=before)
    assert await watcher.check() is True
    assert runtime.applied == ["valid v2"]


async def test_a_worker_that_does_not_count_reloads_still_reports_its_verdict(setup: Setup) -> None:
    """With router workers one counts the Pod's reloads (each counting its own read one edit as N reloads) and logs
    why an edit is rejected (N workers wrote the same reason N times); the others still set the gauge, whose worst
    live worker the Pod shows."""
    path, runtime, _, metrics = setup
    other = ConfigWatcher(path, runtime.reload, settle_s=0.01, metrics=metrics, speaks_for_pod=False)
    rewrite(path, "models: [")
    with capture_logs() as lines:
        assert await other.check() is False
    assert [line for line in lines if line["event"] == "config_reload_rejected"] == []  # worker 0 says why, once
    assert reloads(metrics, "failed") == 0
    assert metrics.registry.get_sample_value("vsr_config_last_reload_successful") == 0
