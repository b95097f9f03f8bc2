"""Through the real Envoy and router processes with the official openai client."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import openai
import pytest

from devstack.stack import Stack

MATH = "Prove the theorem that the sum of two even numbers is even."
CHAT = "What should I cook for dinner tonight?"


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture(scope="module")
def http(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, timeout=10)


def _upstream(completion: openai.types.chat.ChatCompletion) -> dict:
    """What the demo upstream says about itself: which model answered and the body it received."""
    return completion.model_extra["x_demo"]


def test_auto_routes_by_category_and_switches_reasoning_on(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": MATH}])
    completion = raw.parse()
    assert _upstream(completion)["upstream"] == "gpt-oss-120b"
    assert _upstream(completion)["received"]["reasoning_effort"] == "high"
    assert raw.headers["x-vsr-selected-model"] == "gpt-oss-120b"
    assert raw.headers["x-vsr-selected-category"] == "math"
    assert raw.headers["x-vsr-selected-reasoning"] == "on"


def test_auto_default_category_goes_to_small_model_with_thinking_off(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": CHAT}])
    completion = raw.parse()
    assert _upstream(completion)["upstream"] == "qwen3-4b"
    assert _upstream(completion)["received"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert raw.headers["x-vsr-selected-reasoning"] == "off"


def test_streaming_answer_comes_from_the_chosen_upstream(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
            model="auto", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": MATH}]) as response:
        assert response.headers["x-vsr-selected-model"] == "gpt-oss-120b"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is gpt-oss-120b answering a 12-word question."
    assert {c.model for c in chunks} == {"gpt-oss-120b"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_explicit_model_passes_through_untouched(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-oss-120b", messages=[{"role": "user", "content": CHAT}])
    received = _upstream(raw.parse())["received"]
    assert received == {"model": "gpt-oss-120b"}
    assert raw.headers["x-vsr-selected-model"] == "gpt-oss-120b"


def test_unknown_model_is_a_404_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": CHAT}])
    assert err.value.code == "model_not_found"
    assert "gpt-9" in err.value.message


def test_models_list_is_answered_by_the_router(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["auto", "qwen3-4b", "gpt-oss-120b"]


def test_request_id_is_kept_end_to_end(http: httpx.Client) -> None:
    r = http.post("/chat/completions", headers={"x-request-id": "req-42"},
                  json={"model": "auto", "messages": [{"role": "user", "content": CHAT}]})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42"


def test_clients_cannot_choose_their_cache_tenant(client: openai.OpenAI) -> None:
    """Identity headers only an auth filter may set are stripped before the router sees them."""
    completion = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": CHAT}],
                                                extra_headers={"x-authz-tenant-id": "someone-else"})
    assert "identity_headers" not in _upstream(completion)["received"]


def test_upstream_errors_reach_the_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": CHAT}],
                                       extra_headers={"x-demo-status": "500"})


def test_other_paths_are_refused_by_the_router(http: httpx.Client) -> None:
    """They passed through to the default model unread (vLLM generates speech on this one)."""
    r = http.post("/audio/speech", json={"model": "x", "input": "hello"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unsupported_path")
    assert "x-demo-upstream" not in r.headers  # no model server saw it


def test_clients_cannot_choose_the_upstream_cluster(http: httpx.Client) -> None:
    """Only the router sets the selection header: a client-sent one steered pass-through paths (a stored response
    this router does not know goes to the default model) to any model."""
    r = http.get("/responses/resp_unknown", headers={"x-selected-cluster": "gpt-oss-120b"})
    assert r.headers["x-demo-upstream"] == "qwen3-4b"


BAD_INPUT = [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_request"),
    (b'{"model": "auto"}', 400, "invalid_request"),
    (b'{"model": "auto", "messages": []}', 400, "invalid_request"),
    (b'{"model": "auto", "messages": ["hi"]}', 400, "invalid_request"),
    (b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "invalid_request"),
    (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', 400, "invalid_request"),
    (b'{"model": "auto", "temperature": "hot", "messages": [{"role": "user", "content": "hi"}]}',
     400, "invalid_request"),
    (b'{"model": "auto", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}',
     400, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_INPUT)
def test_bad_input_gets_an_openai_error_and_the_router_keeps_serving(
        http: httpx.Client, body: bytes, status: int, code: str) -> None:
    r = http.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    ok = http.post("/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": CHAT}]})
    assert ok.status_code == 200


def test_oversized_body_is_413(http: httpx.Client, stack: Stack) -> None:
    big = "x" * (stack.cfg.server.max_body_bytes + 1)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": big}]})
    r = http.post("/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unsupported_method_is_405(http: httpx.Client, method: str) -> None:
    r = http.request(method, "/chat/completions")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_router_down_refuses_the_request_with_an_openai_error_and_forwards_nothing(
        make_stack: Callable[..., Stack]) -> None:
    """Envoy sent it on to the default model, unrouted and past every guard (jailbreak, PII), as soon as the router
    did not answer: a flood that slows the router past envoy.message_timeout_ms let requests through unscreened.
    Now Envoy fails closed, and says so the way the router's own 503 does: the SDK raises a clear error (and
    would retry it after Retry-After)."""
    stack = make_stack()
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)
    stack.stop_router()
    before = stack.upstream_requests()
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": MATH}])
    error = refused.value
    assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
    assert error.code == "router_unavailable" and error.type == "server_error"
    assert "router" in error.message
    assert stack.upstream_requests() == before  # never reached a model


def test_router_down_with_failure_mode_allow_fails_open_to_the_default_model(make_stack: Callable[..., Stack]) -> None:
    """The operator's other choice: availability over the guards."""
    stack = make_stack(lambda cfg: cfg["envoy"].update(failure_mode_allow=True))
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0)
    stack.stop_router()
    completion = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": MATH}])
    assert _upstream(completion)["upstream"] == "qwen3-4b"  # unrouted: the default model answers
