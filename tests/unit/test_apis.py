"""Responses and Messages: parsing into the chat pipeline, answers to chat.completion, cache replays, errors."""

from __future__ import annotations

import json

import pytest

from router import apis
from router.errors import InvalidRequest, ModelNotFound
from router.openai_wire import SSEDecoder


def test_a_responses_request_is_normalised_for_the_classifier_and_the_cache() -> None:
    req = apis.parse("responses", json.dumps({
        "model": "auto", "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.2, "store": False,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "first"}]},
                  {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
                  {"type": "message", "role": "user", "content": "second"}]}).encode())
    assert req.chat.latest_user_text() == "second"
    assert req.chat.messages[0] == {"role": "system", "content": "Be brief."}
    assert req.chat.body["max_tokens"] == 50 and req.chat.body["temperature"] == 0.2
    assert not req.stateful
    assert apis.parse("responses", b'{"model":"m","input":"hi","store":false,"previous_response_id":"r1"}').stateful
    assert apis.parse("responses", b'{"model":"m","input":"hi"}').stateful  # store defaults to true


def test_tool_items_mark_the_request_so_the_cache_treats_it_as_a_tool_call() -> None:
    req = apis.parse("responses", json.dumps({"model": "m", "input": [
        {"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "c", "output": "{}"}]}).encode())
    assert req.chat.body["tools"]


@pytest.mark.parametrize(("api", "body", "param"), [
    ("responses", {"model": "m"}, "input"),
    ("responses", {"model": "m", "input": [{"type": "function_call_output"}]}, "input"),
    ("messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages[0].role"),
])
def test_invalid_requests_name_the_field(api: apis.Api, body: dict, param: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidRequest) as err:
        apis.parse(api, json.dumps(body).encode())
    assert err.value.param == param


def test_anthropic_errors_have_anthropics_shape() -> None:
    body = json.loads(apis.error_body("messages", ModelNotFound("no such model")))
    assert body == {"type": "error", "error": {"type": "not_found_error", "message": "no such model"}}
    assert "error" in json.loads(apis.error_body("responses", ModelNotFound("x")))


def _replay(api: apis.Api) -> list[dict]:  # type: ignore[type-arg]
    completion = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
                  "content": "Hello there"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    return [json.loads(p) for p in SSEDecoder().feed(apis.render_hit(api, completion, "auto", stream=True))]


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_a_cache_replay_reassembles_into_the_same_answer(api: apis.Api) -> None:
    assembler = apis.assembler(api)
    for event in _replay(api):
        assembler.add(json.dumps(event).encode())
    completion = assembler.completion()
    assert completion is not None
    assert completion["choices"][0]["message"]["content"] == "Hello there"
    assert assembler.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_only_finished_text_answers_are_cacheable() -> None:
    tool = {"object": "response", "status": "completed", "output": [{"type": "function_call"}],
            "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert "choices" not in (apis.to_completion("responses", tool) or {})
    cut = {"type": "message", "stop_reason": "tool_use", "content": [{"type": "tool_use"}], "usage": {}}
    assert "choices" not in (apis.to_completion("messages", cut) or {})
    failed = apis.assembler("responses")
    failed.add(b'{"type": "error", "message": "boom"}')
    assert failed.completion() is None
