"""A long history the router has not seen: a 503 to retry while a retry gets further, a 400 when none could."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.affinity import MemoryPins
from router.classifier.memo import MemoizedClassifier
from router.extproc.screen import MAX_EARLIER_PASSES
from router.extproc.session import StreamSession
from router.policy import Policy
from router.runtime import Runtime
from router.signals import Classification
from tests.unit.test_extproc_session import EXECUTOR, ByText, body, config, headers, long_history, send


def _runtime(on_failure: str = "closed") -> tuple[Runtime, ByText]:
    cfg = config(lambda raw: raw["classifier"].update(on_failure=on_failure))
    fake = ByText({})
    return Runtime(cfg=cfg, policy=Policy(cfg), classifier=MemoizedClassifier(fake), cache=None), fake


def _request(turns: int) -> dict[str, Any]:
    return {"model": "auto", "messages": [*long_history(turns), {"role": "user", "content": "And x^3?"}]}


async def test_a_caller_nothing_is_remembered_for_gets_a_400_not_a_503_retried_for_ever() -> None:
    """No identity and no client address (an Envoy not asked for it): the passes were spent and forgotten, and
    every retry of the 503 started again at the first turn."""
    rt, fake = _runtime()
    for _ in range(2):
        session = StreamSession(rt, EXECUTOR)
        await session.handle(headers())  # no API key, no source.address
        resp = await session.handle(body(_request(MAX_EARLIER_PASSES + 1)))
        assert resp.immediate_response.status.code == 400
        error = json.loads(resp.immediate_response.body)["error"]
        assert error["code"] == "too_many_unscreened_turns" and error["param"] == "messages"
        assert f"{MAX_EARLIER_PASSES + 1} earlier turns and tool results" in error["message"]
    assert fake.seen == ["And x^3?"] * 2  # no pass on an earlier turn: none would have been remembered


@pytest.mark.parametrize("on_failure", ["closed", "open"])
async def test_within_the_bound_or_failing_open_the_forgetful_caller_is_served(on_failure: str) -> None:
    rt, _ = _runtime(on_failure)
    session = StreamSession(rt, EXECUTOR)
    await session.handle(headers())
    turns = MAX_EARLIER_PASSES if on_failure == "closed" else MAX_EARLIER_PASSES + 5
    resp = await session.handle(body(_request(turns)))
    assert resp.WhichOneof("response") == "request_body"


async def test_the_503_says_how_many_turns_remain_and_that_a_retry_goes_on() -> None:
    rt, _ = _runtime()
    remaining = []
    for _ in range(3):
        resp = await send(StreamSession(rt, EXECUTOR), _request(2 * MAX_EARLIER_PASSES + 3))
        if resp.WhichOneof("response") == "request_body":
            break
        assert resp.immediate_response.status.code == 503
        remaining.append(json.loads(resp.immediate_response.body)["error"]["message"])
    assert len(remaining) == 2, remaining
    assert f"{MAX_EARLIER_PASSES + 3} remain, retry to go on" in remaining[0]
    assert "3 remain, retry to go on" in remaining[1]


async def test_affinity_reads_what_the_screen_classified_and_costs_no_pass_of_its_own() -> None:
    """Affinity looks for the conversation's first decisive turn among the earlier user turns: it classified each
    one the screen had not (past the bound under on_failure: open, one more pass each until the deadline, then a
    warning each), where the screen's results or nothing are all it needs."""
    cfg = config(lambda raw: raw["classifier"].update(on_failure="open"))
    history = long_history(MAX_EARLIER_PASSES + 5)
    chatter = Classification("other", 0.9)  # the default category's: no turn of the history decides one
    fake = ByText({m["content"]: chatter for m in history if m["role"] == "user"})
    rt = Runtime(cfg=cfg, policy=Policy(cfg), classifier=MemoizedClassifier(fake), cache=None, affinity=MemoryPins())
    resp = await send(StreamSession(rt, EXECUTOR), _request(MAX_EARLIER_PASSES + 5))
    assert resp.WhichOneof("response") == "request_body"
    assert len(fake.seen) == 1 + MAX_EARLIER_PASSES  # the latest turn, and the bound's worth of earlier ones


async def test_more_texts_to_screen_than_messages_allowed_is_a_400_not_retries_by_the_hundred() -> None:
    """An adversarial trial: one Anthropic-style user turn of 55k tool_result blocks passed the 2,048-message limit
    (blocks are not messages) and got a 503 it needed ~860 retries to get through."""
    from router.chat_schema import MAX_ITEMS

    rt, fake = _runtime()
    results = [{"type": "tool_result", "tool_use_id": f"c{i}", "content": f"result {i}"} for i in range(MAX_ITEMS + 1)]
    session = StreamSession(rt, EXECUTOR)
    await session.handle(headers("/v1/messages", authorization="Bearer sk-a"))
    resp = await session.handle(body({"model": "auto", "max_tokens": 16, "messages": [
        {"role": "user", "content": "Run them"}, {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": [*results, {"type": "text", "text": "And now?"}]}]}))
    assert resp.immediate_response.status.code == 400, resp
    error = json.loads(resp.immediate_response.body)["error"]
    assert error["type"] == "invalid_request_error" and f"at most {MAX_ITEMS}" in error["message"], error
    assert fake.seen == ["And now?"]  # the latest turn only: refused before any pass on the others
