"""Metrics: names follow Prometheus conventions, helpers move the right series, labels stay bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from router.observability.metrics import OTHER, BoundedLabel, RouterMetrics, cost_usd


@pytest.fixture()
def m() -> RouterMetrics:
    return RouterMetrics(CollectorRegistry())


def value(m: RouterMetrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_every_series_follows_naming_conventions(m: RouterMetrics) -> None:
    text = generate_latest(m.registry).decode()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE vsr_"))
    assert len(types) >= 12
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_ratio")), name
    helps = [line for line in text.splitlines() if line.startswith("# HELP vsr_")]
    assert len(helps) == len(types) and all(len(h.split(" ", 3)[3]) > 10 for h in helps)


def test_request_and_phase_helpers(m: RouterMetrics) -> None:
    m.record_request("qwen3-4b", "math", "upstream")
    m.record_request("qwen3-4b", "math", "upstream")
    m.record_request(None, "jailbreak", "blocked")
    m.observe_phase("total", 0.0025)
    assert value(m, "vsr_requests_total", model="qwen3-4b", category="math", path="upstream") == 2
    assert value(m, "vsr_requests_total", model="none", category="jailbreak", path="blocked") == 1
    assert value(m, "vsr_phase_duration_seconds_bucket", phase="total", le="0.003") == 1
    assert value(m, "vsr_phase_duration_seconds_bucket", phase="total", le="0.002") == 0
    # Phases are exported before their first observation, so rate() works from the first scrape.
    assert m.registry.get_sample_value("vsr_phase_duration_seconds_count", {"phase": "classify"}) == 0


def test_fixed_enums_reject_typos(m: RouterMetrics) -> None:
    with pytest.raises(ValueError, match="unknown label value"):
        m.record_request("a", "b", "upstreams")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.observe_phase("clasify", 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.record_cache("hits")  # type: ignore[arg-type]


def test_config_labels_are_closed_after_declaration(m: RouterMetrics) -> None:
    m.set_label_values("model", ["qwen3-4b", "gpt-oss-120b"])
    m.record_request("attacker-chosen-name", "math", "error")
    m.record_request("gpt-oss-120b", "math", "upstream")
    assert value(m, "vsr_requests_total", model=OTHER, category="math", path="error") == 1
    assert value(m, "vsr_requests_total", model="gpt-oss-120b", category="math", path="upstream") == 1


def test_undeclared_labels_are_capped() -> None:
    label = BoundedLabel(cap=3)
    assert [label(v) for v in ["a", "b", "c", "d", "a", ""]] == ["a", "b", "c", OTHER, "a", "none"]


def test_cache_usage_and_cost(m: RouterMetrics) -> None:
    m.record_cache("hit")
    m.record_cache("skipped_write", "streaming")
    m.set_cache_entries(42)
    m.record_usage("qwen3-4b", 1000, 500, cost_usd(1000, 500, prompt_per_1m=0.05, completion_per_1m=0.20))
    assert value(m, "vsr_cache_events_total", event="hit", reason="none") == 1
    assert value(m, "vsr_cache_events_total", event="skipped_write", reason="streaming") == 1
    assert value(m, "vsr_cache_entries") == 42
    assert value(m, "vsr_upstream_tokens_total", model="qwen3-4b", kind="prompt") == 1000
    assert value(m, "vsr_upstream_tokens_total", model="qwen3-4b", kind="completion") == 500
    assert value(m, "vsr_upstream_cost_usd_total", model="qwen3-4b") == pytest.approx(0.00015)


def test_signals_reload_and_dependencies(m: RouterMetrics) -> None:
    m.observe_confidence("math", 0.93)
    m.record_jailbreak_block("jailbreak")
    m.record_pii("EMAIL_ADDRESS", 2)
    m.record_config_reload(False)
    assert value(m, "vsr_config_last_reload_successful") == 0
    m.record_config_reload(True, now=1234.0)
    m.record_dependency_error("milvus")
    assert value(m, "vsr_classifier_confidence_ratio_bucket", category="math", le="0.95") == 1
    assert value(m, "vsr_classifier_confidence_ratio_bucket", category="math", le="0.9") == 0
    assert value(m, "vsr_jailbreak_blocks_total", category="jailbreak") == 1
    assert value(m, "vsr_pii_detections_total", type="EMAIL_ADDRESS") == 2
    assert value(m, "vsr_config_reloads_total", result="failed") == 1
    assert value(m, "vsr_config_reloads_total", result="ok") == 1
    assert value(m, "vsr_config_last_reload_successful") == 1
    assert value(m, "vsr_config_last_reload_success_timestamp_seconds") == 1234.0
    assert value(m, "vsr_dependency_errors_total", dependency="milvus") == 1


def test_envoys_refusals_and_fail_opens_are_exported_while_its_admin_port_answers() -> None:
    """Envoy counts router calls that failed (gRPC error) or timed out, and those of them it let through: the rest it
    refused. No stale value when Envoy's admin port does not answer: the series are absent, not frozen."""
    from prometheus_client import CollectorRegistry, generate_latest

    from router.observability import envoy_stats as es

    def down() -> dict[str, int]:
        raise ConnectionRefusedError("envoy admin")

    answering, silent = CollectorRegistry(), CollectorRegistry()
    answering.register(es.EnvoyRouterFailures(lambda: {es.STREAMS_FAILED: 5, es.MESSAGE_TIMEOUTS: 4,
                                                        es.FAILED_OPEN: 7, "http.x.other": 1}))
    silent.register(es.EnvoyRouterFailures(down))
    assert answering.get_sample_value("vsr_envoy_failed_open_total") == 7
    assert answering.get_sample_value("vsr_envoy_failed_closed_total") == 2
    assert b"vsr_envoy_failed" not in generate_latest(silent)


def test_a_model_marked_down_by_envoy_shows_zero_healthy_replicas() -> None:
    """A frozen model server fails no request, so nothing the router counts moved while its requests went elsewhere:
    Envoy's healthy-replica gauge, mirrored per model, is how on call sees it marked down."""
    from prometheus_client import CollectorRegistry, generate_latest

    from router.observability import envoy_stats as es

    frozen, fine = es.membership("gpt-oss-120b"), es.membership("qwen3-4b")
    registry, silent = CollectorRegistry(), CollectorRegistry()
    registry.register(es.EnvoyModelHealth(lambda: {frozen[0]: 0, frozen[1]: 1, fine[0]: 2, fine[1]: 2},
                                          {"gpt-oss-120b": "gpt-oss-120b", "qwen3-4b": "qwen3-4b"}))
    def down() -> dict[str, int]:
        raise ConnectionRefusedError("envoy admin")

    silent.register(es.EnvoyModelHealth(down, {"gpt-oss-120b": "gpt-oss-120b"}))
    assert registry.get_sample_value("vsr_model_endpoints_healthy", {"model": "gpt-oss-120b"}) == 0
    assert registry.get_sample_value("vsr_model_endpoints", {"model": "gpt-oss-120b"}) == 1
    assert registry.get_sample_value("vsr_model_endpoints_healthy", {"model": "qwen3-4b"}) == 2
    assert b'vsr_model_endpoints_healthy{' not in generate_latest(silent)  # no stale value without Envoy


def test_requests_refused_because_envoy_was_full_are_not_the_router_being_unavailable() -> None:
    """A request past envoy.max_requests gets no router stream, which Envoy counts as a failed router call: it was in
    vsr_envoy_failed_closed_total, and SemanticRouterUnavailable fired on plain overload. Now it is counted apart."""
    from prometheus_client import CollectorRegistry

    from router.observability import envoy_stats as es

    active, pending, heap = es.OVERFLOWS
    registry = CollectorRegistry()
    registry.register(es.EnvoyRouterFailures(lambda: {es.STREAMS_FAILED: 10, es.MESSAGE_TIMEOUTS: 1, es.FAILED_OPEN: 0,
                                                      active: 6, pending: 2, heap: 3}))
    assert registry.get_sample_value("vsr_envoy_failed_closed_total") == 3  # 11 failed calls, 8 of them overflows
    assert registry.get_sample_value("vsr_envoy_overloaded_total", {"limit": "max_requests"}) == 8
    assert registry.get_sample_value("vsr_envoy_overloaded_total", {"limit": "max_heap_mb"}) == 3


def test_envoys_counts_never_go_backwards_when_envoy_restarts_and_the_router_does_not() -> None:
    """The series mirrored Envoy's own counters, which restart from 0 with Envoy: trial 14 read 3, then 0, in a router
    that had not restarted (Prometheus takes that for a reset of the router). Now Envoy's increases are added up:
    after a restart (its uptime or a counter went back) the new counts add to the old ones."""
    from prometheus_client import CollectorRegistry

    from router.observability import envoy_stats as es

    reads = iter([
        {es.STREAMS_FAILED: 3, es.MESSAGE_TIMEOUTS: 0, es.FAILED_OPEN: 0, es.UPTIME: 100},
        {es.STREAMS_FAILED: 0, es.MESSAGE_TIMEOUTS: 0, es.FAILED_OPEN: 0, es.UPTIME: 2},  # Envoy restarted
        {es.STREAMS_FAILED: 2, es.MESSAGE_TIMEOUTS: 1, es.FAILED_OPEN: 0, es.UPTIME: 20},
        {es.STREAMS_FAILED: 4, es.MESSAGE_TIMEOUTS: 1, es.FAILED_OPEN: 0, es.UPTIME: 3},  # again, already past its old 3
        {es.STREAMS_FAILED: 6, es.MESSAGE_TIMEOUTS: 0, es.FAILED_OPEN: 1},  # again, told by a counter that dropped
    ])
    registry = CollectorRegistry()
    registry.register(es.EnvoyRouterFailures(lambda: next(reads)))
    seen = [registry.get_sample_value("vsr_envoy_failed_closed_total") for _ in range(5)]
    assert seen == [3, 3, 6, 11, 16]


def test_event_counters_are_exported_at_zero_from_the_start_under_router_workers(tmp_path: Path) -> None:
    """README, Metrics: with workers (the default) the supervisor exports what the workers wrote, and a labelled counter
    nobody had touched was not exported at all (not even its HELP): an alert on vsr_jailbreak_blocks_total or
    vsr_fallbacks_total saw no series until the first event. A worker declares its config's names at start."""
    worker = ("from router.observability.metrics import RouterMetrics\n"
              "m = RouterMetrics()\n"
              "m.set_label_values('model', ['qwen3-4b', 'gpt-oss-120b'])\n"
              "m.set_label_values('category', ['math'])\n")
    subprocess.run([sys.executable, "-c", worker], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
                   cwd=Path(__file__).resolve().parents[2], check=True)
    supervisor = CollectorRegistry()
    MultiProcessCollector(supervisor, path=str(tmp_path))  # type: ignore[no-untyped-call]
    zero = {("vsr_upstream_retries_total", ("qwen3-4b",)), ("vsr_answers_cut_total", ("gpt-oss-120b",)),
            ("vsr_fallbacks_total", ("gpt-oss-120b", "qwen3-4b")), ("vsr_jailbreak_blocks_total", ("math",))}
    exported = {(s.name, tuple(s.labels.values())): s.value for family in supervisor.collect() for s in family.samples}
    assert {key: exported.get(key) for key in zero} == dict.fromkeys(zero, 0.0)


def test_router_memory_counts_the_processes_below_the_router() -> None:
    """With router workers the dashboard read the supervisor's own RSS (162 MB while its workers held 590 MB):
    vsr_router_resident_memory_bytes adds every process below the router's, as the container's limit does. Run in a
    process of its own, whose only child holds 300 MB (pytest's process has other children: Envoy, Milvus)."""
    held = 300 << 20
    script = f"""
import subprocess, sys
from prometheus_client import CollectorRegistry
from router.observability.metrics import RouterMetrics
m = RouterMetrics(CollectorRegistry())
child = subprocess.Popen([sys.executable, "-c", "import sys; x = b'x' * {held}; print(flush=True); sys.stdin.read()"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
child.stdout.readline()  # the child's memory is written, so resident
print(m.registry.get_sample_value("vsr_router_resident_memory_bytes"),
      m.registry.get_sample_value("process_resident_memory_bytes"))
child.kill()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    tree, own = (float(x) for x in out.stdout.split())
    assert own < held <= tree
