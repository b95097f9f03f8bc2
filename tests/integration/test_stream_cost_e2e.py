"""Which streamed answers pass through the router, chunk by chunk (issue 13): real Envoy, router, ONNX encoder and
Milvus server, the official openai SDK streaming; the demo upstream writes one SSE event per token (`max_tokens`).

Each streamed chunk the router reads is an ext_proc round trip (~0.35 ms of its CPU). It reads a stream only to
store the answer in the cache or to count its usage; any other stream goes from the model to the client by Envoy
alone. Envoy's access log says, per request, which ext_proc calls it made (`sb:` the response body's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from devstack.demo_upstream import DemoModel
from devstack.milvus_server import MilvusServer
from devstack.stack import Stack
from tests.integration.test_cache_e2e import milvus_cache_stack
from tests.integration.test_observability import log_line

pytestmark = pytest.mark.usefixtures("require_model")
TOKENS = 200


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], milvus_server: MilvusServer | str) -> Stack:
    return milvus_cache_stack(make_stack, milvus_server, "stream_cost")


def stream(stack: Stack, text: str, **kw: Any) -> tuple[list[Any], dict[str, str]]:
    """One streamed answer of TOKENS events through the openai SDK: its chunks and the response headers."""
    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-stream-cost", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
            model="auto", stream=True, max_tokens=TOKENS, messages=[{"role": "user", "content": text}],
            **kw) as response:
        return list(response.parse()), dict(response.headers)


def content(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def body_calls(stack: Stack, request_id: str) -> int:
    """Response-body messages Envoy sent the router for one request (`sb:COUNT:...` in its access log's ext_proc)."""
    line = log_line(stack.workdir / "envoy.log", request_id)
    assert line is not None, f"no access log line for {request_id}"
    calls = line["ext_proc"].split(",")
    return sum(int(c.split(":")[1]) for c in calls if c.startswith("sb:"))


def tokens_counted(stack: Stack) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vsr_upstream_tokens_total{") and 'kind="completion"' in line)


def test_a_stream_with_nothing_to_store_or_count_reaches_the_client_without_the_router(stack: Stack) -> None:
    """`no-store`, no include_usage: all TOKENS chunks arrive, in order and whole, and not one of them went through
    the router (the old code made a round trip to the router for each), which still logs the request, not cut."""
    chunks, headers = stream(stack, "Describe the water cycle in detail.",
                             extra_headers={"x-vsr-cache-control": "no-store"})
    model = headers["x-vsr-selected-model"]
    expected = DemoModel(model).answer_text({"messages": [{"content": "Describe the water cycle in detail."}],
                                             "max_tokens": TOKENS})
    assert content(chunks) == expected and len(expected.split()) == TOKENS
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == TOKENS
    assert chunks[-1].choices[0].finish_reason == "length" and {c.model for c in chunks} == {model}
    assert body_calls(stack, headers["x-request-id"]) == 0
    line = log_line(stack.workdir / "router.log", headers["x-request-id"])
    assert line is not None
    assert line["status"] == 200 and line["cache"] == "skip:no_store" and "answer_cut" not in line


def test_the_router_reads_the_streams_it_stores_or_counts_and_only_those(stack: Stack) -> None:
    """A cacheable stream is read chunk by chunk, stored, and a hit replays it identical; a stream asking for usage
    is read and its tokens counted; the same question with neither goes by the router."""
    text = "Explain how a bicycle gear system works."
    first, headers = stream(stack, text)
    assert headers["x-vsr-cache-hit"] == "false" and body_calls(stack, headers["x-request-id"]) > 0
    for _ in range(50):  # the write leaves the request path: allow it a moment to land
        replay, again = stream(stack, text)
        if again.get("x-vsr-cache-hit") == "true":
            break
        time.sleep(0.1)
    assert again.get("x-vsr-cache-hit") == "true"
    assert content(replay) == content(first) and len(content(first).split()) == TOKENS
    assert {c.model for c in replay} == {c.model for c in first} != {"auto"}
    assert [c.choices[0].finish_reason for c in replay if c.choices][-1] == "length"

    before = tokens_counted(stack)
    _, headers = stream(stack, text, extra_headers={"x-vsr-cache-control": "no-store"},
                        stream_options={"include_usage": True})
    assert body_calls(stack, headers["x-request-id"]) > 0 and tokens_counted(stack) - before == TOKENS

    _, headers = stream(stack, text, extra_headers={"x-vsr-cache-control": "no-store"})
    assert body_calls(stack, headers["x-request-id"]) == 0
