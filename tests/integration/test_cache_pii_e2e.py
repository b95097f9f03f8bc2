"""Requests holding PII never reach the cache store, through real Envoy, the router process, the ONNX encoder and
the PII validators, and embedded Milvus Lite (what `make run` uses).

A prompt with an SSN was stored in Milvus (its text and the answer) and its repeat served from there. Hot answers
are off, so a repeat that is not answered by the model would have come from Milvus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devstack.stack import Stack
from tests.integration.test_cache_e2e import _client, _metric, _request_lines, eventually_hit

pytestmark = pytest.mark.usefixtures("require_model")
SSN_PROMPT = "My social security number is 536-22-1234. Which tax form do I file as a freelancer?"
CONVERSATIONS = {  # the SSN in the classified turn, or in an earlier user turn of the same conversation
    "latest turn": [{"role": "user", "content": SSN_PROMPT}],
    "earlier turn": [{"role": "user", "content": SSN_PROMPT}, {"role": "assistant", "content": "Form 1040."},
                     {"role": "user", "content": "And by which date is it due?"}],
}


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    db = tmp_path_factory.mktemp("lite") / "cache.db"

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        cfg["semantic_cache"] = {"enabled": True, "uri": str(db), "hot_answers": 0}

    return make_stack(overrides)


@pytest.mark.parametrize("where", CONVERSATIONS)
def test_a_conversation_with_an_ssn_is_answered_by_the_model_each_time(stack: Stack, where: str) -> None:
    client = _client(stack)
    messages = CONVERSATIONS[where]
    skipped = 'vsr_cache_events_total{event="skipped_write",reason="pii"}'
    before = _metric(stack, skipped)
    ids = []
    for attempt in range(2):
        calls = stack.upstream_requests()
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        assert raw.parse().choices[0].message.content
        assert raw.headers.get("x-vsr-cache-hit") != "true" and stack.upstream_requests() == calls + 1
        assert raw.headers["x-vsr-selected-model"] == "qwen3-4b"  # gpt-oss-120b's pii_policy refuses US_SSN
        ids.append(raw.headers["x-request-id"])
        if attempt == 0:  # a PII-free prompt sent after it is still stored and served: the SSN's write, queued
            eventually_hit(client, f"Which tax form does a freelancer file? ({where})")  # before, would have landed
    assert _metric(stack, skipped) - before == 2
    lines = _request_lines(stack, ids)
    assert [(lines[i]["cache"], lines[i]["pii_types"]) for i in ids] == [("skip:pii", ["US_SSN"])] * 2
    assert "536-22-1234" not in (stack.workdir / "router.log").read_text()

