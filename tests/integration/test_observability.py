"""Operations through the real stack: metrics after real requests through Envoy, probes and gRPC health,
an invalid config at start, hot reload by file edit and by SIGHUP with traffic flowing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import grpc
import httpx
import openai
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import ROOT, Stack, derive_config

MATH = "Compute the integral of x squared from zero to one."  # keyword rule -> math -> gpt-oss-120b
CHAT = "What should I cook for dinner tonight?"  # default category `other` -> qwen3-4b


def scrape(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def chat(stack: Stack, content: str, model: str = "auto") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=10)


def until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_metrics_move_with_the_right_labels_after_requests_through_envoy(stack: Stack) -> None:
    before = scrape(stack)
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)
    prompt_tokens = completion_tokens = 0
    for _ in range(3):
        completion = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": MATH}]
        )
        assert completion.usage is not None
        prompt_tokens += completion.usage.prompt_tokens
        completion_tokens += completion.usage.completion_tokens
    with client.chat.completions.create(model="auto", stream=True, stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": MATH}]) as stream:  # fmt: skip
        usage = [c.usage for c in stream if c.usage][-1]
    prompt_tokens += usage.prompt_tokens
    completion_tokens += usage.completion_tokens
    assert chat(stack, CHAT, model="qwen3-4b").status_code == 200
    assert (
        httpx.post(f"{stack.base_url}/chat/completions", content=b"{not json", timeout=10).status_code == 400
    )
    after = scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    routed = {"model": "gpt-oss-120b", "category": "math", "path": "upstream"}
    assert delta("vsr_requests_total", **routed) == 4
    assert delta("vsr_requests_total", model="qwen3-4b", category="other", path="upstream") == 1
    assert delta("vsr_requests_total", model="none", category="none", path="error") == 1
    assert delta("vsr_phase_duration_seconds_count", phase="total") == 6
    assert delta("vsr_phase_duration_seconds_bucket", phase="total", le="+Inf") == 6
    assert 0 < delta("vsr_phase_duration_seconds_sum", phase="total") < 6 * 0.5
    assert delta("vsr_upstream_tokens_total", model="gpt-oss-120b", kind="prompt") == prompt_tokens
    assert delta("vsr_upstream_tokens_total", model="gpt-oss-120b", kind="completion") == completion_tokens
    price = stack.cfg.models["gpt-oss-120b"].pricing
    expected = (prompt_tokens * price.prompt_per_1m + completion_tokens * price.completion_per_1m) / 1e6
    assert delta("vsr_upstream_cost_usd_total", model="gpt-oss-120b") == pytest.approx(expected)


def test_legacy_completions_answers_count_their_usage_and_cost(stack: Stack) -> None:
    """/v1/completions answers were not counted: tokens and cost from their `usage`, streamed too when asked."""
    before = scrape(stack)
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)
    answer = client.completions.create(model="qwen3-4b", prompt="Say hello to the team")
    assert answer.usage is not None
    with client.completions.create(model="qwen3-4b", prompt="Say hi", stream=True,
                                   stream_options={"include_usage": True}) as stream:
        usage = [c.usage for c in stream if c.usage][-1]
    with client.completions.create(model="qwen3-4b", prompt="Not counted", stream=True) as unasked:
        assert all(c.usage is None for c in unasked)  # no usage in the stream: nothing to count
    after = scrape(stack)
    prompt = answer.usage.prompt_tokens + usage.prompt_tokens
    completion = answer.usage.completion_tokens + usage.completion_tokens

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("vsr_upstream_tokens_total", model="qwen3-4b", kind="prompt") == prompt
    assert delta("vsr_upstream_tokens_total", model="qwen3-4b", kind="completion") == completion
    price = stack.cfg.models["qwen3-4b"].pricing
    expected = (prompt * price.prompt_per_1m + completion * price.completion_per_1m) / 1e6
    assert delta("vsr_upstream_cost_usd_total", model="qwen3-4b") == pytest.approx(expected)


def test_probes_and_grpc_health_say_ready(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.cfg.server.metrics_port}"
    assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    ready = httpx.get(base + "/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["components"]["cache"] == {"ok": True, "detail": "disabled"}
    # no cache, no cache backend to call down: the series read 0 and SemanticRouterCacheDegraded would fire
    assert "vsr_cache_backend_up" not in httpx.get(base + "/metrics", timeout=5).text
    with grpc.insecure_channel(f"{stack.cfg.server.host}:{stack.cfg.server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.ext_proc.v3.ExternalProcessor"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture()
def router_process(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "router.log").open("ab")

    def start(config: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "router.cli", "serve", "--config", str(config)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, "the router must exit cleanly on SIGTERM"
    log.close()


def test_readyz_is_not_ready_while_the_config_is_invalid_at_start_then_recovers(
    tmp_path: Path, router_process: Callable[[Path], subprocess.Popen[bytes]]
) -> None:
    good = derive_config(tmp_path)
    valid_text = good.read_text()
    good.write_text(valid_text.replace("default_model: qwen3-4b", "default_model: no-such-model"))
    proc = router_process(good)
    base = f"http://127.0.0.1:{yaml.safe_load(valid_text)['server']['metrics_port']}"

    def readyz() -> httpx.Response | None:
        try:
            return httpx.get(base + "/readyz", timeout=2)
        except httpx.TransportError:
            return None

    assert until(lambda: readyz() is not None), "the metrics port never came up"
    first = readyz()
    assert first is not None and first.status_code == 503
    assert first.json()["components"]["config"]["ok"] is False
    assert "default_model" in first.json()["components"]["config"]["detail"]
    assert proc.poll() is None, "an invalid config at start must not kill the router"
    good.write_text(valid_text)
    assert until(lambda: (r := readyz()) is not None and r.status_code == 200), "never became ready"
    metrics = httpx.get(base + "/metrics", timeout=2).text
    assert 'vsr_config_reloads_total{result="ok"} 1.0' in metrics


def route_of(stack: Stack, content: str) -> str:
    response = chat(stack, content)
    assert response.status_code == 200, response.text
    return response.json()["x_demo"]["upstream"]  # type: ignore[no-any-return]


def prefer(cfg: dict[str, Any], category: str, model: str) -> None:
    """Make `model` the top-scored model for `category`."""
    for cat in cfg["categories"]:
        if cat["name"] == category:
            cat["model_scores"] = [{"model": model, "score": 1.0}]


class Traffic:
    """Requests sent back to back while the config changes: every one of them must succeed."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.statuses, self._stop = stack, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.statuses.append(chat(self.stack, CHAT).status_code)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_config_edits_apply_live_and_invalid_edits_are_rejected(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    path = stack.config_path
    cfg = yaml.safe_load(path.read_text())
    assert route_of(stack, CHAT) == "qwen3-4b"
    with Traffic(stack) as traffic:
        prefer(cfg, "other", "gpt-oss-120b")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert until(lambda: route_of(stack, CHAT) == "gpt-oss-120b"), "valid edit never took effect"
        failed_before = sample(scrape(stack), "vsr_config_reloads_total", result="failed")
        path.write_text(path.read_text().replace("default_model: qwen3-4b", "default_model: 42b-unknown"))
        assert until(
            lambda: sample(scrape(stack), "vsr_config_reloads_total", result="failed") > failed_before
        )
        assert route_of(stack, CHAT) == "gpt-oss-120b"  # the previous valid config keeps serving
        assert sample(scrape(stack), "vsr_config_last_reload_successful") == 0
    assert len(traffic.statuses) > 5 and set(traffic.statuses) == {200}
    ready = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz", timeout=5)
    assert ready.status_code == 200  # a rejected edit does not take a serving router out of rotation


def test_sighup_reloads_when_file_watching_is_off(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(lambda cfg: cfg["observability"].update(watch_config=False))
    cfg = yaml.safe_load(stack.config_path.read_text())
    prefer(cfg, "other", "gpt-oss-120b")
    stack.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    time.sleep(2.5)  # more than two polling intervals: nothing may happen without the signal
    assert route_of(stack, CHAT) == "qwen3-4b"
    stack.procs["router"].send_signal(signal.SIGHUP)
    assert until(lambda: route_of(stack, CHAT) == "gpt-oss-120b"), "SIGHUP did not reload"
    assert sample(scrape(stack), "vsr_config_reloads_total", result="ok") >= 1


def test_an_edit_envoy_cannot_follow_is_rejected_so_clients_never_pick_their_tenant(
        make_stack: Callable[..., Stack]) -> None:
    """Walkthrough: after a live edit to `tenant_headers: [x-tenant]` (as for a new auth filter) the router
    trusted x-tenant while the running Envoy still stripped only x-authz-tenant-id, so a client with its own key
    sent `x-tenant: victim` and was served the victim's cached answer. Envoy reads its config at start only."""
    def cached(cfg: dict[str, Any]) -> None:
        cfg["semantic_cache"] = {"enabled": True, "backend": "memory"}
        cfg["observability"]["watch_interval_s"] = 0.2

    stack = make_stack(cached)

    def ask(key: str, text: str) -> bool:
        r = httpx.post(f"{stack.base_url}/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {key}", "x-tenant": "victim"},
                       json={"model": "auto", "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200
        return r.headers.get("x-vsr-cache-hit") == "true"

    def reloads() -> tuple[float, float]:
        now = scrape(stack)
        return sample(now, "vsr_config_reloads_total", result="ok"), sample(now, "vsr_config_reloads_total",
                                                                             result="failed")

    before = reloads()
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["semantic_cache"]["tenant_headers"] = ["x-tenant"]
    stack.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert until(lambda: reloads() != before), "the edit was never reloaded"
    text = "Which ocean is the deepest on this planet?"
    ask("sk-victim", text)
    assert until(lambda: ask("sk-victim", text)), "the victim's answer was never stored"
    assert not ask("sk-attacker", text)
    assert reloads()[1] == before[1] + 1  # rejected, and counted so (the reload-failed alert fires)


def log_line(path: Path, request_id: str, timeout: float = 15.0) -> dict[str, Any] | None:
    """The JSON line of `path` that names `request_id` (Envoy writes its access log out every 10 s, its
    --file-flush-interval-msec default)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if request_id in line and line.startswith("{"):
                return dict(json.loads(line))
        time.sleep(0.2)
    return None


def test_envoys_access_log_shares_the_request_id_and_shows_requests_the_router_never_decided(stack: Stack) -> None:
    """On call: "requests to the big model all go to the small one" (or "clients get 503s"). When the router misses
    Envoy's message timeout (frozen, restarting, overloaded) the router logs nothing and counts nothing for that
    request, and Envoy wrote no access log. Now Envoy logs one JSON line per request with the same request id, the
    route the router chose (none: the router never decided), Envoy's reason and the ext_proc calls."""
    routed = chat(stack, MATH)
    rid = routed.headers["x-request-id"]
    envoy_line = log_line(stack.workdir / "envoy.log", rid)
    router_line = log_line(stack.workdir / "router.log", rid)
    assert envoy_line is not None and router_line is not None
    assert envoy_line["status"] == 200 and envoy_line["selected_model"] == router_line["model"] == "gpt-oss-120b"
    assert envoy_line["routed_to"] and envoy_line["path"] == "/v1/chat/completions"
    assert "Compute" not in json.dumps(envoy_line)  # never the prompt

    router = stack.procs["router"]
    router.send_signal(signal.SIGSTOP)
    try:
        refused = chat(stack, MATH)  # past envoy.message_timeout_ms: refused, not sent on
    finally:
        router.send_signal(signal.SIGCONT)
    assert refused.status_code == 503 and "x-vsr-selected-model" not in refused.headers
    line = log_line(stack.workdir / "envoy.log", refused.headers["x-request-id"])
    assert line is not None and line["routed_to"] is None and line["selected_model"] is None
    assert line["status"] == 503 and line["upstream_host"] is None  # Envoy's own reply: no model got it
    assert line["details"] == "ext_proc_error_per-message_timeout_exceeded"
    assert line["ext_proc"].startswith("rh:")  # the request-headers call, its latency (us) and gRPC status


@pytest.mark.parametrize("allow", [False, True], ids=["fail-closed", "fail-open"])
def test_requests_the_router_did_not_answer_are_refused_or_sent_on_and_counted_on_its_metrics(
        make_stack: Callable[..., Stack], allow: bool) -> None:
    """A router frozen past envoy.message_timeout_ms (as a flood can make it): Envoy sent the request on unrouted
    and unguarded, counted on Envoy's admin port only (which the shipped monitoring never scrapes; now
    vsr_envoy_failed_open_total). By default Envoy now refuses it: a 503 `router_unavailable` with Retry-After, no
    model reached, counted as vsr_envoy_failed_closed_total. `failure_mode_allow: true` keeps the old choice."""
    stack = make_stack(lambda cfg: cfg["envoy"].update(failure_mode_allow=allow))
    before, upstream_before = scrape(stack), stack.upstream_requests()
    router = stack.procs["router"]
    router.send_signal(signal.SIGSTOP)
    try:
        answer = chat(stack, MATH)
    finally:
        router.send_signal(signal.SIGCONT)
    assert "x-vsr-selected-model" not in answer.headers  # never routed
    if allow:
        assert answer.status_code == 200 and stack.upstream_requests() == upstream_before + 1
    else:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "router_unavailable"
        assert stack.upstream_requests() == upstream_before
    counted = "vsr_envoy_failed_open_total" if allow else "vsr_envoy_failed_closed_total"
    other = "vsr_envoy_failed_closed_total" if allow else "vsr_envoy_failed_open_total"
    assert until(lambda: sample(scrape(stack), counted) == sample(before, counted) + 1)
    assert sample(scrape(stack), other) == sample(before, other)
    # Envoy restarts, the router does not: the count mirrored Envoy's, which restart at 0 (trial 14: 3, then 0)
    stack._stop("envoy")
    stack.start_envoy()
    assert until(lambda: sample(scrape(stack), counted) == sample(before, counted) + 1)  # main: 0 from then on


def test_a_decision_envoy_stopped_waiting_for_is_not_counted_as_routed(make_stack: Callable[..., Stack]) -> None:
    """Envoy's message timeout ran out while the router decided (here a 12 MB prompt against a 100 ms timeout):
    Envoy refused the request (or, with failure_mode_allow, sent it on unrouted to the default model), but the
    router logged and counted it as routed to its choice (`path: upstream`, `model: gpt-oss-120b`), so the metrics
    said the big model got it; and where Envoy's cancel reached the router before its decision, the router logged
    and counted nothing at all. Now the line and vsr_requests_total say `abandoned`, with the model if decided."""
    def slow_body(cfg: dict[str, Any]) -> None:
        cfg["envoy"]["message_timeout_ms"] = 100
        cfg["server"]["max_body_bytes"] = 16 << 20

    stack = make_stack(slow_body)
    big = MATH + " padding words" * 850_000
    for _ in range(10):  # a busy machine may miss 100 ms on the request headers already: then nothing is decided
        before = scrape(stack)
        answer = chat(stack, big)
        assert answer.status_code == 503 and "x-vsr-selected-model" not in answer.headers  # Envoy gave up: refused
        # A 12 MB body is parsed and screened in a thread: ~0.2 s idle, seconds while a Milvus server starts beside
        # (a clean-clone CI run missed 5 tries of 3 s each).
        line = log_line(stack.workdir / "router.log", answer.headers["x-request-id"], timeout=8)
        if line is not None:
            break
    assert line is not None, ("the router never received a body within 10 tries", answer.text[:300],
                              stack.procs["router"].poll(), (stack.workdir / "router.log").read_text()[-2000:])
    after = scrape(stack)
    assert line["path"] == "abandoned" and line["model"] in ("gpt-oss-120b", None), line  # None: cancelled undecided
    routed = ("vsr_requests_total", frozenset({"model": "gpt-oss-120b", "category": "math", "path": "upstream"}.items()))
    assert after.get(routed, 0.0) == before.get(routed, 0.0)
    abandoned = {"model": line["model"] or "none", "category": line["category"] or "none", "path": "abandoned"}
    assert sample(after, "vsr_requests_total", **abandoned) == sample(before, "vsr_requests_total", **abandoned) + 1
