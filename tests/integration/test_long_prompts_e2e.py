"""Long prompts do not starve short ones (issue 13): through the real Envoy and router with the real ONNX encoder.

A new-user trial ran 16 clients, 4 of them sending prompts of 60k-240k characters, and 54 of 1,709 short requests
were refused 503 `classifier_unavailable`: in arrival order, each short pass waited behind the long passes queued
for the worker's one encoder thread and ran out of `classifier.timeout_ms`. Here 6 clients send 140k-character
prompts (two windows and whole-text scans each) while 6 send short chat prompts, all new (the classification memo
cannot answer them), on one router worker: every short request must be classified and answered, and every long one
must end in an answer or the counted `on_failure` refusal, never in Envoy's timeout. (As many long clients as short
ones: on main a short pass waits behind up to 6 long ones, over its deadline even on an idle machine; with 12 short
clients the short passes alone queued ~150 ms deep on a loaded one, which left the test little room.)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import h11
import openai
import pytest

from devstack.stack import Stack
from tests.integration.test_overload_e2e import failures

pytestmark = pytest.mark.usefixtures("require_model")
API_KEY = "sk-long-prompts"

LONG_CLIENTS, SHORT_CLIENTS, SHORT_REQUESTS = 6, 6, 12
PARAGRAPH = ("The committee reviewed the quarterly figures for the northern warehouses, noted that deliveries "
             "arrived later in winter than in summer, and asked the planning team to compare routes, staffing and "
             "the cost of keeping spare stock near the busiest stores before the next meeting.\n\n")


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(lambda cfg: cfg["classifier"].update(enabled=True, on_failure="closed"))


async def _post(client: aiohttp.ClientSession, stack: Stack, text: str) -> tuple[int, dict[str, str], Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    async with client.post(f"{stack.base_url}/chat/completions", json=body) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def _mixed_load(stack: Stack) -> tuple[list[tuple[int, dict[str, str], Any]], Counter[str]]:
    """Short clients send SHORT_REQUESTS each while the long clients keep sending; (short answers, long outcomes)."""
    run, shorts_done = uuid.uuid4().hex[:8], asyncio.Event()
    long_outcomes: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as client:

        async def long_client(i: int) -> None:
            n = 0
            while not shorts_done.is_set():
                n += 1
                text = f"Report {run}-{i}-{n}.\n\n" + PARAGRAPH * 560 + f"Summarise report {run}-{i}-{n}."
                status, headers, answer = await _post(client, stack, text)
                if status == 200:
                    assert "x-vsr-guards-skipped" not in headers and answer["x_demo"]["upstream"]
                    long_outcomes["answered"] += 1
                else:  # on_failure: closed
                    assert status == 503 and answer["error"]["code"] == "classifier_unavailable", answer
                    long_outcomes["refused"] += 1

        async def short_client(i: int) -> list[tuple[int, dict[str, str], Any]]:
            return [await _post(client, stack, f"How do I convert {n + 3} miles to kilometres, trip {run}-{i}?")
                    for n in range(SHORT_REQUESTS)]

        longs = [asyncio.create_task(long_client(i)) for i in range(LONG_CLIENTS)]
        await asyncio.sleep(1.0)  # the long passes are queued before the short clients start
        shorts = await asyncio.gather(*(short_client(i) for i in range(SHORT_CLIENTS)))
        shorts_done.set()
        await asyncio.gather(*longs)
    return [answer for client_answers in shorts for answer in client_answers], long_outcomes


def test_short_prompts_are_classified_while_long_prompts_keep_the_encoder_busy(stack: Stack) -> None:
    assert len(PARAGRAPH * 560) > stack.cfg.classifier.max_scan_chars  # the longest text the classifier reads
    before = failures(stack)
    shorts, longs = asyncio.run(_mixed_load(stack))
    refused = [(status, answer) for status, _, answer in shorts if status != 200]
    assert not refused, f"{len(refused)} of {len(shorts)} short requests refused: {refused[0]}"
    for _, headers, answer in shorts:
        assert "x-vsr-guards-skipped" not in headers and headers["x-vsr-selected-category"]
        assert answer["x_demo"]["upstream"] == headers["x-vsr-selected-model"]
    assert sum((failures(stack) - before).values()) == longs["refused"]  # every refusal counted, all of them long


def _agent_step(oai: openai.OpenAI, source: str) -> dict[str, str]:
    """A coding agent's step: the user's task, the agent's read_file call, the file as the tool's result."""
    call = {"id": "call_1", "type": "function", "function": {"name": "read_file",
                                                             "arguments": json.dumps({"path": "h11/_connection.py"})}}
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=[
        {"role": "user", "content": "Find the bug in our HTTP connection state machine and fix the Python code."},
        {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": "call_1", "content": source},
    ])
    return dict(raw.headers)


def _source() -> str:
    """20 KB of a real Python module (h11's connection state machine), cut at a line: no personal data in it."""
    text = Path(h11.__file__).with_name("_connection.py").read_text()
    return text[: text.rfind("\n", 0, 20_000) + 1]


def test_a_coding_agents_long_pii_free_source_file_keeps_the_request_on_the_big_model(
        stack: Stack, oai: openai.OpenAI) -> None:
    """Trial 12: a tool result past ~2,048 tokens was unscreened for STREET_ADDRESS, which gpt-oss-120b's pii_policy
    refuses, so every agent session that read a file of 8-10 KB or more left it (49 of 89 real tool outputs). The PII
    head now reads such a middle around the places an address may stand: code holds none worth a window here."""
    source = _source()
    assert len(source) > 16_000
    headers = _agent_step(oai, source)
    assert headers["x-vsr-selected-model"] == "gpt-oss-120b", headers.get("x-vsr-decision-reason")
    assert "unscreened" not in headers.get("x-vsr-decision-reason", "")


def test_an_address_in_the_middle_of_a_long_tool_result_still_keeps_the_request_off_the_big_model(
        stack: Stack, oai: openai.OpenAI) -> None:
    source = _source()
    middle = source.find("\n", len(source) // 2) + 1
    shipped = source[:middle] + "# Ship the replacement board to 742 Evergreen Terrace, Springfield, IL 62704.\n"
    headers = _agent_step(oai, shipped + source[middle:])
    assert headers["x-vsr-selected-model"] == "qwen3-4b"
    assert "STREET_ADDRESS" in headers["x-vsr-decision-reason"]
