"""An agent's long session: texts each screened once stay screened however long the conversation grows."""

from __future__ import annotations

import json
from typing import Any

from router.classifier.pii_rules import STRUCTURED_TYPES
from router.extproc.screen import MAX_EARLIER_PASSES, REST_SCAN_FACTOR
from router.extproc.session import StreamSession
from tests.unit.test_extproc_session import EXECUTOR, MATH, config, runtime, send

SOURCE = "def handler(event):\n    return {'status': event.get('status', 200)}\n" * 90  # ~6 KB of code


def agent(steps: int, result: str = SOURCE, args: str = '{"path": "app.py"}') -> dict[str, Any]:
    """A coding agent's history: a question, then `steps` tool calls each answered with `result`."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Integrate x^2 from 0 to 1, then fix app.py."}]
    for i in range(steps):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "read_file", "arguments": args}}
        messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": f"# step {i}\n{result}"}]
    return {"model": "auto", "messages": messages}


async def test_a_session_past_max_scan_chars_of_texts_each_screened_is_not_unscreened() -> None:
    """Once the whole conversation passed classifier.max_scan_chars (~20 steps of 6 KB) every structured type counted
    as unscreened, though the classifier's pass had run the exact validators on each tool result: a PII-free agent
    session left gpt-oss-120b at step 22 for good (trial 12) and its cache turned off."""
    rt = runtime(MATH, cache=True)
    payload = agent(30)
    assert sum(len(m["content"] or "") for m in payload["messages"]) > rt.cfg.classifier.max_scan_chars
    session = StreamSession(rt, EXECUTOR)
    await send(session, payload)
    assert session.request.signal.unscreened == frozenset()
    assert session.request.decision is not None and session.request.decision.model == "gpt-oss-120b"


async def test_structured_pii_in_a_tool_calls_arguments_is_still_found() -> None:
    """The classifier's passes read user turns and tool results; the rest (tool calls, assistant turns, a system
    prompt) is scanned by the exact validators alone, as before."""
    session = StreamSession(runtime(MATH), EXECUTOR)
    await send(session, agent(3, args=json.dumps({"to": "ssn 536-22-1234"})))
    assert session.request.signal.pii_types == {"US_SSN"} and session.request.signal.unscreened == frozenset()


async def test_a_rest_past_its_bound_is_unscreened_for_the_structured_types() -> None:
    """The rest costs bounded work: past REST_SCAN_FACTOR x max_scan_chars of it the structured types are unscreened."""
    rt = runtime(MATH)
    piece = "y " * (rt.cfg.classifier.max_scan_chars // 4)  # each within max_scan_chars, all of them past the bound
    session = StreamSession(rt, EXECUTOR)
    await send(session, agent(2 * REST_SCAN_FACTOR + 1, args=json.dumps({"text": piece})))
    assert session.request.signal.unscreened == frozenset(STRUCTURED_TYPES)


async def test_an_earlier_turn_no_pass_read_is_still_scanned_for_structured_pii() -> None:
    """Under on_failure: open, the earlier turns past MAX_EARLIER_PASSES get no pass: the exact validators still read
    them (they read the whole conversation before the classifier's passes did)."""
    rt = runtime(MATH, config(lambda raw: raw["classifier"].update(on_failure="open")))
    messages: list[dict[str, Any]] = []
    for i in range(MAX_EARLIER_PASSES + 3):
        messages += [{"role": "user", "content": f"Question {i} about integrals"}, {"role": "assistant", "content": "Ok"}]
    messages[-2]["content"] = "My social security number is 536-22-1234."
    messages.append({"role": "user", "content": "And x^3?"})
    session = StreamSession(rt, EXECUTOR)
    await send(session, {"model": "auto", "messages": messages})
    assert "US_SSN" in session.request.signal.pii_types
