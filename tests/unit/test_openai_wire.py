"""The wire format: request validation, SSE parsing across chunk boundaries, stream reassembly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router import openai_wire as wire
from router.errors import InvalidJSON, InvalidRequest


def _req(**fields: object) -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


def test_latest_user_turn_is_what_gets_classified() -> None:
    chat = wire.parse_chat_request(json.dumps({"model": "auto", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]}).encode())
    assert chat.latest_user_text() == "second"


@pytest.mark.parametrize(("raw", "error", "param"), [
    (b"\xff\xfe", InvalidJSON, None),
    (b'"just a string"', InvalidRequest, None),
    (_req(n=True), InvalidRequest, "n"),
    (_req(max_tokens=1.5), InvalidRequest, "max_tokens"),
    (_req(tools={}), InvalidRequest, "tools"),
    (json.dumps({"model": "auto", "messages": [{"role": "user", "content": 5}]}).encode(), InvalidRequest,
     "messages[0].content"),
])
def test_invalid_requests_name_the_offending_field(raw: bytes, error: type, param: str | None) -> None:
    with pytest.raises(error) as exc:
        wire.parse_chat_request(raw)
    assert exc.value.param == param
    body = json.loads(exc.value.body())
    assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"


def _frames(*chunks: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


STREAM = _frames(
    {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hello "}}]},
    {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "world"}}]},
    {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c1", "created": 1, "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
)


@pytest.mark.parametrize("size", [1, 7, 64, len(STREAM)])
def test_stream_reassembles_whatever_the_chunking(size: int) -> None:
    decoder, assembler = wire.SSEDecoder(), wire.StreamAssembler()
    for i in range(0, len(STREAM), size):
        for payload in decoder.feed(STREAM[i:i + size]):
            assembler.add(payload)
    completion = assembler.completion()
    assert completion is not None
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hello world"}
    assert completion["usage"]["completion_tokens"] == 2


def _token(text: str) -> dict[str, object]:
    return {"token": text, "logprob": -0.5, "bytes": list(text.encode()), "top_logprobs": []}


def test_a_streams_logprobs_are_kept_in_order() -> None:
    """The stored answer carried `logprobs: null` whatever the chunks held: a client that asked for them got a cached
    answer without them. Content and refusal token lists are joined per choice, in order, as a non-streamed answer."""
    chunk = {"id": "c1", "created": 1, "model": "m"}
    stream = _frames(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "Hello "},
                               "logprobs": {"content": [_token("Hello"), _token(" ")], "refusal": None}}]},
        {**chunk, "choices": [{"index": 1, "delta": {"content": "No"},
                               "logprobs": {"content": None, "refusal": [_token("No")]}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "world"},
                               "logprobs": {"content": [_token("world")], "refusal": None}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"},
                              {"index": 1, "delta": {}, "finish_reason": "stop"}]},
    )
    assembler = wire.StreamAssembler()
    for payload in wire.SSEDecoder().feed(stream):
        assembler.add(payload)
    completion = assembler.completion()
    assert completion is not None
    first, second = completion["choices"]
    assert first["logprobs"] == {"content": [_token("Hello"), _token(" "), _token("world")], "refusal": None}
    assert second["logprobs"] == {"content": None, "refusal": [_token("No")]}
    plain = wire.StreamAssembler()
    for payload in wire.SSEDecoder().feed(STREAM):
        plain.add(payload)
    assert plain.completion()["choices"][0]["logprobs"] is None  # type: ignore[index]  # none asked, none sent


def test_a_cut_stream_is_not_a_completion() -> None:
    decoder, assembler = wire.SSEDecoder(), wire.StreamAssembler()
    for payload in decoder.feed(STREAM[: STREAM.index(b"finish_reason")]):
        assembler.add(payload)
    assert assembler.completion() is None


def test_replayed_stream_parses_back_to_the_same_answer() -> None:
    stored = {"id": "x", "created": 1, "model": "m", "object": "chat.completion",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"},
                           "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    fresh = wire.fresh_completion(stored)
    assert fresh["id"] != "x" and fresh["model"] == "m"  # the model that answered, as on the miss
    decoder, assembler = wire.SSEDecoder(), wire.StreamAssembler()
    for payload in decoder.feed(wire.completion_to_sse(fresh, include_usage=True)):
        assembler.add(payload)
    again = assembler.completion()
    assert again is not None and again["choices"][0]["message"]["content"] == "cached"
    assert again["id"] == fresh["id"]


def test_a_replayed_tool_call_reaches_the_sdk_whole() -> None:
    """A cache hit of a tool-call answer, replayed to a streaming client: the official SDK's stream accumulator must
    rebuild the same tool calls (the replay sent content only: finish_reason tool_calls with no call in it)."""
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    stored = {"id": "x", "created": 1, "model": "m", "object": "chat.completion",
              "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                           "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    state, decoder = ChatCompletionStreamState(), wire.SSEDecoder()
    for payload in decoder.feed(wire.completion_to_sse(wire.fresh_completion(stored), include_usage=False)):
        if payload != wire.DONE:
            state.handle_chunk(ChatCompletionChunk.model_validate_json(payload))
    choice = state.get_final_completion().choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None  # as stored: it was "" (trial8 10)
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
        ("call_1", "get_weather", '{"city": "Oslo"}')]


def _replayed_to_sdk(stored: dict[str, Any]) -> Any:
    """A stored answer replayed as SSE, as the official SDK's stream accumulator rebuilds it."""
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state, chunks = ChatCompletionStreamState(), []
    for payload in wire.SSEDecoder().feed(wire.completion_to_sse(wire.fresh_completion(stored), include_usage=False)):
        if payload != wire.DONE:
            chunks.append(ChatCompletionChunk.model_validate_json(payload))
            state.handle_chunk(chunks[-1])
    return state.get_final_completion(), chunks


def _assembled(*chunks: dict[str, Any]) -> dict[str, Any] | None:
    assembler = wire.StreamAssembler()
    for payload in wire.SSEDecoder().feed(_frames(*chunks)):
        assembler.add(payload)
    return assembler.completion()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "created": 1, "model": "m", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_streamed_answer_keeps_its_reasoning_as_the_json_answer_does(field: str) -> None:
    """trial8 finding 5: vLLM's reasoning parser streams the thinking as `delta.reasoning_content` (`reasoning` in newer
    versions); the stored answer dropped it, so a hit had no reasoning though a non-streamed miss's JSON has it."""
    stored = _assembled(_chunk({"role": "assistant", field: "Let me think. "}), _chunk({field: "2+2=4."}),
                        _chunk({"content": "4"}), _chunk({}, "stop"))
    assert stored is not None
    assert stored["choices"][0]["message"] == {"role": "assistant", "content": "4", field: "Let me think. 2+2=4."}
    _, chunks = _replayed_to_sdk(stored)
    assert "".join(getattr(c.choices[0].delta, field, None) or "" for c in chunks if c.choices) == "Let me think. 2+2=4."


def test_a_streamed_legacy_function_call_is_kept_whole() -> None:
    """trial8 finding 5: a streamed `delta.function_call` (`functions=...`) was stored as `content: ""`,
    `finish_reason: function_call` and no call: a hit gave the app's function loop nothing to call."""
    stored = _assembled(_chunk({"role": "assistant", "content": None,
                                "function_call": {"name": "get_weather", "arguments": ""}}),
                        _chunk({"function_call": {"arguments": '{"city":'}}),
                        _chunk({"function_call": {"arguments": '"Paris"}'}}), _chunk({}, "function_call"))
    assert stored is not None
    assert stored["choices"][0]["message"]["function_call"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    final, _ = _replayed_to_sdk(stored)
    call = final.choices[0].message.function_call
    assert (final.choices[0].finish_reason, call.name, call.arguments) == ("function_call", "get_weather",
                                                                           '{"city":"Paris"}')


@pytest.mark.parametrize("first", [{"content": None}, {"content": ""}, {}])
def test_a_streamed_function_call_is_stored_with_null_content_as_the_json_answer_has_it(first: dict[str, Any]) -> None:
    """trial8 finding 10: the stream's function call was stored (and replayed) with `content: ""` where the
    non-streamed answer says null; an empty answer without a call keeps its "" (as vLLM's JSON has it)."""
    stored = _assembled(_chunk({"role": "assistant", **first, "function_call": {"name": "f", "arguments": "{}"}}),
                        _chunk({}, "function_call"))
    assert stored is not None and stored["choices"][0]["message"]["content"] is None
    final, _ = _replayed_to_sdk(stored)
    assert final.choices[0].message.content is None
    empty = _assembled(_chunk({"role": "assistant", "content": ""}), _chunk({}, "stop"))
    assert empty is not None and empty["choices"][0]["message"]["content"] == ""


def test_an_sse_replay_keeps_the_system_fingerprint() -> None:
    """trial8 finding 6: the JSON replay kept `system_fingerprint`, the SSE replay's chunks had none."""
    stored = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "system_fingerprint": "fp_1",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    _, chunks = _replayed_to_sdk(stored)
    assert chunks and all(c.system_fingerprint == "fp_1" for c in chunks)


def test_the_model_list_is_the_same_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """trial8 finding 10: `created` was the time of each call, so every listing showed the models as new."""
    first = wire.models_list(["auto", "m"])
    monkeypatch.setattr(wire.time, "time", lambda: 4_000_000_000.0)
    assert wire.models_list(["auto", "m"]) == first
    assert wire.model_object("m") == json.loads(first)["data"][1]


@pytest.mark.parametrize("raw", [
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "auto", "messages": [{"role": "user", "content": "\\udc00 lone low surrogate"}]}',
    b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}',
])
def test_hostile_json_is_refused_before_any_work(raw: bytes) -> None:
    with pytest.raises(InvalidJSON):
        wire.parse_chat_request(raw)


@pytest.mark.parametrize("number", [b"1" + b"0" * 5000, b"-" + b"9" * 4301])
def test_an_integer_longer_than_python_converts_is_invalid_json(number: bytes) -> None:
    """json.loads raises a plain ValueError past sys.get_int_max_str_digits() (4300): the router answered 500."""
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": ' + number + b"}"
    with pytest.raises(InvalidJSON):
        wire.load_object(raw)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
def test_numbers_json_cannot_hold_are_invalid_json(number: bytes) -> None:
    """Python's parser takes NaN and Infinity (not JSON) and reads 1e999 as infinity; the router forwarded them
    (`temperature: NaN` passes a model server's `< 0` check)."""
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": ' + number + b"}"
    with pytest.raises(InvalidJSON):
        wire.load_object(raw)


def test_depth_counts_brackets_outside_strings_only() -> None:
    from router.chat_schema import MAX_DEPTH, json_depth
    text = json.dumps({"a": "[" * 1000 + '\\"{' * 100, "b": [[[]]]}).encode()
    assert json_depth(text) <= 4
    assert json_depth(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)) == MAX_DEPTH + 1


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "user", "content": [{"type": "text", "text": 5}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": "http://x"}]}, "messages[0].content[0].image_url"),
    ({"role": "user", "content": [{"type": "x"}]}, "messages[0].content[0].type"),
    ({"role": ["user"], "content": "hi"}, "messages[0].role"),  # unhashable: a 500 until 2026-12-02
    ({"role": {"x": 1}, "content": "hi"}, "messages[0].role"),
    ({"role": "user", "content": [{"type": {"x": 1}}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": [{"type": ["text"], "text": "hi"}]}, "messages[0].content[0].type"),
    ({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": None}, "messages[0].content"),
    ({"role": "tool", "content": "42"}, "messages[0].tool_call_id"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
     "messages[0].tool_calls[0].function.arguments"),
])
def test_ill_typed_parts_and_messages_are_refused(message: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        wire.parse_chat_request(json.dumps({"model": "auto", "messages": [message]}).encode())
    assert exc.value.param == param


@pytest.mark.parametrize(("fields", "param"), [
    ({"tools": [1]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools[0].function.name"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"stop": [1]}, "stop"),
    ({"response_format": {"type": 1}}, "response_format.type"),
])
def test_ill_typed_tools_and_options_are_refused(fields: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        wire.parse_chat_request(_req(**fields))
    assert exc.value.param == param


def test_a_system_prompt_alone_is_valid_and_has_no_user_turn() -> None:
    chat = wire.parse_chat_request(json.dumps({"model": "auto", "messages": [
        {"role": "system", "content": "You are terse."}]}).encode())
    assert not chat.has_user_turn and chat.latest_user_text() == "You are terse."


def test_bounded_keeps_head_and_tail() -> None:
    assert wire.bounded("abc", 10) == "abc"
    out = wire.bounded("H" + "x" * 100 + "T", 10)
    assert out.startswith("H") and out.endswith("T") and len(out) == 11


def test_a_streamed_refusal_is_stored_and_replayed_with_its_text() -> None:
    """A model's streamed refusal (`delta.refusal`, content empty) was reassembled without its text, so its cached
    replay reached the official SDK as an empty answer: the refusal must survive the store and the replay."""
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    upstream = _frames(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "refusal": ""}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"refusal": "I can't help "}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"refusal": "with that."}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    assembler = wire.StreamAssembler()
    for payload in wire.SSEDecoder().feed(upstream):
        assembler.add(payload)
    stored = assembler.completion()
    assert stored is not None and stored["choices"][0]["message"]["refusal"] == "I can't help with that."
    state = ChatCompletionStreamState()
    for payload in wire.SSEDecoder().feed(wire.completion_to_sse(wire.fresh_completion(stored), include_usage=False)):
        if payload != wire.DONE:
            state.handle_chunk(ChatCompletionChunk.model_validate_json(payload))
    assert state.get_final_completion().choices[0].message.refusal == "I can't help with that."
