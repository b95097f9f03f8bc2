"""The runtime holder: a reload never takes the request workers, and retired runtimes are closed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.stack import ROOT
from router import runtime as runtime_module
from router.config import RouterConfig, config_warnings
from router.observability.health import Readiness
from router.runtime import Runtime, RuntimeHolder, build_runtime


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["classifier"]["enabled"] = False
    raw["semantic_cache"] = {"enabled": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_a_slow_reload_leaves_request_workers_and_the_loop_free(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedding a large `examples:` set takes seconds; requests classified meanwhile must not wait."""
    release, started = threading.Event(), threading.Event()
    threads: list[str] = []

    def slow_build(cfg: RouterConfig) -> Runtime:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(5)
        return build_runtime(cfg)

    monkeypatch.setattr(runtime_module, "build_runtime", slow_build)
    holder = RuntimeHolder(config_file, Readiness())
    workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-worker")
    loop = asyncio.get_running_loop()
    reload = asyncio.create_task(holder.reload())
    await loop.run_in_executor(None, started.wait, 5)
    # A request's classification gets a worker at once, and the loop keeps turning.
    result = await asyncio.wait_for(loop.run_in_executor(workers, lambda: "classified"), timeout=1)
    assert result == "classified" and not reload.done()
    release.set()
    assert await reload
    assert threads == [t for t in threads if t.startswith("router-reload")]
    workers.shutdown()
    await holder.aclose()


async def test_a_replaced_runtime_is_closed_once_its_last_stream_ends(config_file: Path) -> None:
    closed: list[Any] = []
    holder = RuntimeHolder(config_file, Readiness())
    assert await holder.reload()
    first = holder.current
    assert first is not None

    async def close() -> None:
        closed.append(first)
    first.close = close  # type: ignore[method-assign]
    with holder.stream():
        assert await holder.reload()  # a new runtime; the old one still serves this stream
        await asyncio.sleep(0)
        assert closed == []
    await asyncio.sleep(0.01)
    assert closed == [first]
    await holder.aclose()


def _request(rt: Runtime) -> Any:
    from router.cache import build_cache_request
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    return build_cache_request(body, {"authorization": "Bearer k"}, "qwen3-4b", None, None, rt.cfg)


async def test_a_reload_that_keeps_the_cache_config_keeps_the_cache(config_file: Path) -> None:
    """A new connection per reload made every first lookup wait for it; an unchanged cache carries over."""
    raw = yaml.safe_load(config_file.read_text())
    raw["semantic_cache"] = {"enabled": True, "backend": "memory"}
    config_file.write_text(yaml.safe_dump(raw))
    holder = RuntimeHolder(config_file, Readiness())
    await holder.reload(first=True)
    first = holder.current
    assert first is not None and first.cache is not None
    config_file.write_text(yaml.safe_dump({**raw, "default_category": "math"}))  # an edit elsewhere
    await holder.reload()
    second = holder.current
    assert second is not first and second is not None and second.cache is first.cache
    await first.close()  # the retired runtime lets go (once, however often closed); the cache keeps serving
    await first.close()
    assert second.cache is not None and (await second.cache.stats())["entries"] == 0
    assert await second.cache.lookup(_request(second)) is None  # still open: a real round trip, a miss
    assert second.cache.counters["miss:no_candidate"] == 1
    raw["semantic_cache"]["max_entries"] = 10  # a cache edit builds a new cache
    config_file.write_text(yaml.safe_dump(raw))
    await holder.reload()
    assert holder.current is not None and holder.current.cache is not second.cache
    await holder.aclose()


async def test_the_first_config_applied_sets_the_applied_timestamp(config_file: Path) -> None:
    """README: vsr_config_last_reload_success_timestamp_seconds is when the running config was applied; it read 0
    (1970) from start until the first edit."""
    import time

    from router.observability.metrics import METRICS

    METRICS.last_reload_ts.set(0)
    before = time.time()
    holder = RuntimeHolder(config_file, Readiness())
    await holder.reload(first=True)
    applied = METRICS.registry.get_sample_value("vsr_config_last_reload_success_timestamp_seconds")
    assert applied is not None and applied >= before
    await holder.aclose()


@pytest.mark.parametrize("edit", ["model", "tenant_headers"])
async def test_an_edit_the_running_envoy_cannot_follow_is_rejected(config_file: Path, edit: str) -> None:
    """Envoy reads its clusters and the client headers it strips at start. Applied live, a new model was
    selected but Envoy sent its requests to the default model's server under the new name, and new tenant
    headers were trusted while Envoy let clients send them: one tenant read another's cached answers."""
    from router.config import ConfigError

    raw = yaml.safe_load(config_file.read_text())
    holder = RuntimeHolder(config_file, Readiness())
    await holder.reload(first=True)
    first = holder.current
    if edit == "model":
        raw["models"]["qwen3-8b"] = {"endpoints": [{"port": 8003}]}
        raw["categories"][-1]["model_scores"].insert(0, {"model": "qwen3-8b", "score": 0.95})
    else:
        raw["semantic_cache"] = {"enabled": False, "tenant_headers": ["x-tenant"]}
    config_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="changes Envoy's config") as rejected:
        await holder.reload()
    assert ("models, categories" if edit == "model" else "semantic_cache") in str(rejected.value)
    assert holder.current is first  # the running config keeps serving
    config = holder._readiness.snapshot()["components"]["config"]  # trial13 finding 9: it said `ok, <path>`
    assert config["ok"] and config["detail"].startswith(f"serving version {first.version}: the edit of {config_file} "
                                                        "is rejected: ")
    raw["categories"][-1]["model_scores"] = [{"model": "qwen3-4b", "score": 0.9}]  # the same chains: applied
    raw["models"].pop("qwen3-8b", None)
    raw["semantic_cache"] = {"enabled": False}
    config_file.write_text(yaml.safe_dump(raw))
    assert await holder.reload() and holder.current is not first
    assert holder._readiness.snapshot()["components"]["config"] == {"ok": True, "detail": str(config_file)}
    await holder.aclose()


async def test_a_reload_that_changes_a_start_only_key_applies_the_rest_and_says_a_restart_is_needed(
        config_file: Path) -> None:
    """trial13 finding 7: `server.workers: 2 -> 3` was logged `config_applied` and nothing else, and two workers
    served on. The warning names the keys, and repeats on later reloads until a restart applies them."""
    from structlog.testing import capture_logs

    raw = yaml.safe_load(config_file.read_text())
    holder = RuntimeHolder(config_file, Readiness())
    await holder.reload(first=True)
    raw["server"]["workers"] = 3
    raw["observability"]["log_level"] = "debug"
    raw["routing"]["score_margin"] = 0.5
    config_file.write_text(yaml.safe_dump(raw))
    with capture_logs() as lines:
        assert await holder.reload()
        raw["routing"]["score_margin"] = 0.25
        config_file.write_text(yaml.safe_dump(raw))
        assert await holder.reload()
    assert holder.current is not None and holder.current.cfg.routing.score_margin == 0.25  # the rest applied
    needed = [line for line in lines if line["event"] == "config_restart_needed"]
    assert [line["keys"] for line in needed] == [["server.workers", "observability.log_level"]] * 2
    await holder.aclose()


async def test_a_setting_that_cannot_act_is_logged_at_start_and_on_each_reload(config_file: Path) -> None:
    """What `validate` warns of, the router says in its log too (trial13 finding 8a: a category's `block` under a
    fleet-wide `flag` served flagged requests, and nothing said the `block` could not act)."""
    from structlog.testing import capture_logs

    raw = yaml.safe_load(config_file.read_text())
    raw["classifier"]["jailbreak_action"] = "flag"
    raw["categories"][0]["jailbreak_action"] = "block"
    config_file.write_text(yaml.safe_dump(raw))
    holder = RuntimeHolder(config_file, Readiness())
    with capture_logs() as lines:
        await holder.reload(first=True)
        raw["routing"]["score_margin"] = 0.5
        config_file.write_text(yaml.safe_dump(raw))
        assert await holder.reload()
    warned = [line["warning"] for line in lines if line["event"] == "config_warning"]
    assert [w for w in warned if "jailbreak_action" in w] == [
        ("categories.0.jailbreak_action: block cannot act: classifier.jailbreak_action is flag, and a category's own "
        "action applies only under block")] * 2
    await holder.aclose()


async def test_only_the_worker_that_speaks_for_the_pod_logs_the_configs_warnings(config_file: Path) -> None:
    """N router workers wrote each config_warning and config_restart_needed N times at every start and reload (trial
    14): the file is the same in each, so one worker says it. Every worker still logs that it applied a version."""
    from structlog.testing import capture_logs

    raw = yaml.safe_load(config_file.read_text())
    raw["classifier"]["jailbreak_action"] = "flag"
    raw["categories"][0]["jailbreak_action"] = "block"
    config_file.write_text(yaml.safe_dump(raw))
    holders = [RuntimeHolder(config_file, Readiness(), speaks_for_pod=pod) for pod in (True, False)]
    with capture_logs() as lines:
        for holder in holders:
            await holder.reload(first=True)
        raw["server"]["workers"] = 5
        config_file.write_text(yaml.safe_dump(raw))
        for holder in holders:
            assert await holder.reload()
    events = [line["event"] for line in lines if line["event"].startswith("config_")]
    assert holders[0].current is not None
    warnings = len(config_warnings(holders[0].current.cfg))  # the jailbreak_action one among them
    assert events.count("config_applied") == 4
    assert events.count("config_restart_needed") == 1 and events.count("config_warning") == 2 * warnings  # start, reload
    for holder in holders:
        await holder.aclose()


async def test_a_reload_that_fails_half_way_leaves_no_cache_backend_behind(config_file: Path, tmp_path: Path) -> None:
    """A reload to a new cache whose pair model is missing failed after the backend was made: the Milvus Lite child of
    the new file (or a server connection and its threads) stayed on, owned by no runtime, once per such edit."""
    from router.cache import lite

    holder = RuntimeHolder(config_file, Readiness())
    assert await holder.reload(first=True)
    raw = yaml.safe_load(config_file.read_text())
    db = tmp_path / "new" / "cache.db"
    raw["semantic_cache"] = {"enabled": True, "uri": str(db), "pair_model_dir": str(tmp_path / "no-pair-model")}
    config_file.write_text(yaml.safe_dump(raw))
    assert not await holder.reload()  # rejected; the old runtime serves on
    assert db.absolute() not in lite._SHARED
    await holder.aclose()
