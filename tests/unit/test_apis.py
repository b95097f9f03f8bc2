"""Responses and Messages: parsing into the chat pipeline, answers to chat.completion, cache replays, errors."""

from __future__ import annotations

import json

import pytest

from router import apis, screening
from router.cache import keys
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


@pytest.mark.parametrize("items", [
    [{"type": "function_call_output", "call_id": "c1", "output": "3 failed, 9 passed"},
     {"type": "function_call_output", "call_id": "c2", "output": "ok"}],
    [{"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}],
    [{"type": "computer_call_output", "call_id": "c1",
      "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"}}],
])
def test_a_continuation_may_hold_tool_outputs_alone_and_they_are_screened_as_tool_results(
        items: list[dict]) -> None:  # type: ignore[type-arg]
    """Trial 12, finding 2: the Responses agent loop (`previous_response_id` and the tool outputs, no user message:
    OpenAI's own loop and the Agents SDK) was a 400 "'input' needs at least one user message": every agent died at
    its first tool call. Without a response to continue, such an input is still refused."""
    req = apis.parse("responses", json.dumps({"model": "auto", "previous_response_id": "resp_1",
                                              "input": items}).encode())
    assert req.stateful and not req.chat.has_user_turn
    screen = screening.screen(req.chat)
    outputs = [i["output"] for i in items if isinstance(i.get("output"), str)]
    assert [(o.label, o.text, o.asks) for o in screen.earlier] == [
        (f"tool result {n}", text, False) for n, text in enumerate(outputs, 1)]  # the jailbreak guard reads them
    assert screen.latest == (outputs[-1] if outputs else "") and screen.latest_tool  # not judged as a request
    with pytest.raises(InvalidRequest, match="at least one user message"):
        apis.parse("responses", json.dumps({"model": "auto", "input": items}).encode())


def test_an_anthropic_turn_of_tool_results_is_the_tools_output_not_the_users_words() -> None:
    """Trial 12, finding 6: the tool_result turn was the classified user turn (no text: the default category), so an
    agent's step left its conversation's category, and a tool result's PII read as a switch of category. It is read as
    chat reads a tool message: the category is the user's last own words', the result a tool result."""
    task = "Write a python function that merges two sorted lists."
    req = apis.parse("messages", json.dumps({"model": "auto", "max_tokens": 64, "messages": [
        {"role": "user", "content": task},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Uvicorn on 10.1.2.3"}]},
    ]}).encode())
    assert req.chat.latest_user_text() == task
    screen = screening.screen(req.chat)
    assert screen.latest == task and not screen.latest_tool
    assert [(o.label, o.text) for o in screen.earlier] == [("tool result 1", "Uvicorn on 10.1.2.3")]
    assert screen.user_turns() == []
    mixed = apis.parse("messages", json.dumps({"model": "auto", "max_tokens": 64, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "2 passed"},
                                     {"type": "text", "text": "now commit it"}]}]}).encode())
    assert mixed.chat.latest_user_text() == "now commit it"  # the user's own words beside it: a user turn


@pytest.mark.parametrize(("api", "body", "param"), [
    ("responses", {"model": "m"}, "input"),
    ("responses", {"model": "m", "input": [{"type": "function_call_output"}]}, "input"),
    ("messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     "messages[0].role"),
    # An unhashable part type or role was a 500 (TypeError) until 2026-12-02; a role that is no role went on as a
    # tool item, unscreened.
    ("responses", {"model": "m", "input": [{"role": "user", "content": [{"type": {"x": 1}, "text": "hi"}]}]},
     "input[0].content[0].type"),
    ("responses", {"model": "m", "input": [{"role": ["user"], "content": "hi"}]}, "input[0].role"),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": ["text"]}]}]},
     "messages[0].content[0].type"),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": ["user"], "content": "hi"}]},
     "messages[0].role"),
    # Instructions the router could not read went upstream unscreened until 2026-12-02 (review)
    ("responses", {"model": "m", "instructions": [{"role": "system", "content": "x"}], "input": "hi"}, "instructions"),
    ("messages", {"model": "m", "max_tokens": 5, "system": {"text": "x"}, "messages": [{"role": "user", "content": "hi"}]},
     "system"),
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
    completion = {"object": "chat.completion", "model": "m1", "choices": [{"index": 0, "message": {
                  "role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    return [json.loads(p) for p in SSEDecoder().feed(apis.render_hit(api, completion, "m2", stream=True))]


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_a_cache_replay_reassembles_into_the_same_answer(api: apis.Api) -> None:
    assembler = apis.assembler(api)
    for event in _replay(api):
        assembler.add(json.dumps(event).encode())
    completion = assembler.completion()
    assert completion is not None and completion["model"] == "m1"
    assert completion["choices"][0]["message"]["content"] == "Hello there"
    assert assembler.usage == apis.HIT_USAGE  # a hit spent no tokens, whatever its miss cost


def _events(api: apis.Api, completion: dict) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(p) for p in SSEDecoder().feed(apis.render_hit(api, completion, "m", stream=True))]


def test_an_anthropic_answer_that_stopped_on_a_stop_sequence_replays_it() -> None:
    """trial8 finding 6: an answer that ended on one of `stop_sequences` replayed as `end_turn`, `stop_sequence: null`:
    an app splitting on the matched delimiter saw a natural end. Kept from a JSON miss and from a streamed one."""
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [{"type": "text",
           "text": "1, 2, 3"}], "stop_reason": "stop_sequence", "stop_sequence": "4",
           "usage": {"input_tokens": 5, "output_tokens": 7}}
    streamed = apis.assembler("messages")
    for event in _events("messages", apis.to_completion("messages", msg) or {}):
        streamed.add(json.dumps(event).encode())
    for stored in (apis.to_completion("messages", msg), streamed.completion()):
        assert stored is not None
        hit = json.loads(apis.render_hit("messages", stored, "m", stream=False))
        assert (hit["stop_reason"], hit["stop_sequence"]) == ("stop_sequence", "4")
        delta = next(e for e in _events("messages", stored) if e["type"] == "message_delta")["delta"]
        assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "4"}
    natural = apis.to_completion("messages", {**msg, "stop_reason": "end_turn", "stop_sequence": None})
    assert natural is not None
    assert json.loads(apis.render_hit("messages", natural, "m", stream=False))["stop_sequence"] is None


def test_a_responses_answer_keeps_its_logprobs_and_annotations_on_a_hit() -> None:
    """trial8 finding 6: `output_text.logprobs` (asked with `include: ["message.output_text.logprobs"]`) and
    `annotations` (citations) came back as none and `[]` from the cache."""
    note = {"type": "url_citation", "url": "https://x", "start_index": 0, "end_index": 5, "title": "x"}
    logprobs = [{"token": "Paris", "logprob": -0.1, "bytes": [80], "top_logprobs": []}]
    resp = {"id": "resp_1", "object": "response", "status": "completed", "model": "m",
            "usage": {"input_tokens": 1, "output_tokens": 1},
            "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
                {"type": "output_text", "text": "Paris", "annotations": [note], "logprobs": logprobs}]}]}
    stored = apis.to_completion("responses", resp)
    assert stored is not None
    part = json.loads(apis.render_hit("responses", stored, "m", stream=False))["output"][0]["content"][0]
    assert (part["annotations"], part["logprobs"]) == ([note], logprobs)
    done = next(e for e in _events("responses", stored) if e["type"] == "response.output_text.done")
    assert done["logprobs"] == logprobs
    chat = json.loads(apis.render_hit("chat", stored, "m", stream=False))["choices"][0]  # chat terms for chat clients
    assert chat["message"]["annotations"] == [{"type": "url_citation", "url_citation": {
        "url": "https://x", "start_index": 0, "end_index": 5, "title": "x"}}]
    assert chat["logprobs"]["content"] == logprobs


def test_a_responses_hit_repeats_the_parameters_of_its_own_request() -> None:
    """trial8 finding 10: a Responses hit said `tools: []`, `tool_choice: "auto"` whatever was sent and repeated no
    `instructions`, `temperature`, `max_output_tokens`, `text`, `reasoning`, `metadata`, as OpenAI's answers do. The
    entry may be another request's (`metadata` does not split the cache): this request's values are the ones told."""
    tool = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}, "strict": True}
    sent = {"model": "m", "input": "hi", "instructions": "Be brief.", "temperature": 0.3, "max_output_tokens": 99,
            "text": {"format": {"type": "text"}, "verbosity": "low"}, "reasoning": {"effort": "high"},
            "metadata": {"ticket": "42"}, "tools": [tool], "tool_choice": "none", "store": False}
    stored = {"object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {
              "role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
    hit = json.loads(apis.render_hit("responses", stored, "m", stream=False, request=sent))
    assert {k: hit.get(k) for k in sent if k not in ("model", "input")} == {k: v for k, v in sent.items()
                                                                            if k not in ("model", "input")}
    streamed = apis.render_hit("responses", stored, "m", stream=True, request=sent)
    completed = json.loads(list(SSEDecoder().feed(streamed))[-1])["response"]
    assert (completed["instructions"], completed["tools"]) == ("Be brief.", [tool])
    bare = json.loads(apis.render_hit("responses", stored, "m", stream=False, request={"model": "m", "input": "hi"}))
    assert (bare["tools"], bare["tool_choice"], bare["parallel_tool_calls"]) == ([], "auto", True)
    assert "instructions" not in bare and "temperature" not in bare


def test_a_hit_reports_zero_usage_even_when_its_answer_was_stored_without_any() -> None:
    """An answer stored from a stream without `include_usage` has no usage: its hits said `usage: null` (JSON) and
    sent no usage chunk to a client that asked for one."""
    stored = {"object": "chat.completion", "model": "m1", "choices": [{"index": 0, "message": {
              "role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert json.loads(apis.render_hit("chat", stored, "m2", stream=False))["usage"] == zero
    sse = apis.render_hit("chat", stored, "m2", stream=True, include_usage=True)
    chunks = [json.loads(p) for p in SSEDecoder().feed(sse) if p != b"[DONE]"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == zero
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI streams it with include_usage
    assert json.loads(apis.render_hit("responses", stored, "m2", stream=False))["usage"]["total_tokens"] == 0
    assert json.loads(apis.render_hit("messages", stored, "m2", stream=False))["usage"] == {
        "input_tokens": 0, "output_tokens": 0}


def test_only_finished_text_answers_are_cacheable() -> None:
    tool = {"object": "response", "status": "completed", "output": [{"type": "function_call"}],
            "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert "choices" not in (apis.to_completion("responses", tool) or {})
    cut = {"type": "message", "stop_reason": "tool_use", "content": [{"type": "tool_use"}], "usage": {}}
    assert "choices" not in (apis.to_completion("messages", cut) or {})
    failed = apis.assembler("responses")
    failed.add(b'{"type": "error", "message": "boom"}')
    assert failed.completion() is None


def _key_parts(api: apis.Api, body: dict) -> tuple[str, object]:  # type: ignore[type-arg]
    """What the cache keys a request by besides namespace and model: context fingerprint, latest turn."""
    chat = apis.parse(api, json.dumps(body).encode()).chat
    return keys.context_fingerprint(chat.body), keys.latest_user_text(chat.messages)


def _image(data: str) -> dict:  # type: ignore[type-arg]
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


MESSAGES = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "Tell me a joke"}]}
RESPONSES = {"model": "auto", "store": False, "input": "Plan a trip to Rome"}


def test_an_image_or_a_tool_result_in_the_latest_turn_keeps_it_out_of_the_cache() -> None:
    """The text alone was the key: a hit answered a question about one picture (or one tool result) for another."""
    for content in ([_image("cat"), {"type": "text", "text": "What animal is this?"}],
                    [{"type": "tool_result", "tool_use_id": "t1", "content": "18 C"},
                     {"type": "text", "text": "Should I wear a coat?"}]):
        _, latest = _key_parts("messages", {**MESSAGES, "messages": [{"role": "user", "content": content}]})
        assert latest is keys.SkipReason.NON_TEXT_CONTENT
    _, latest = _key_parts("responses", {**RESPONSES, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What animal is this?"}, {"type": "input_image", "image_url": "data:,cat"}]}]})
    assert latest is keys.SkipReason.NON_TEXT_CONTENT


def test_images_and_tool_results_earlier_in_the_conversation_split_the_cache() -> None:
    def turns(data: str, result: str) -> dict:  # type: ignore[type-arg]
        return {**MESSAGES, "messages": [
            {"role": "user", "content": [_image(data), {"type": "text", "text": "What animal is this?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "zoo", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result}]},
            {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Is it dangerous?"}]}
    base = _key_parts("messages", turns("cat", "a cat"))
    assert _key_parts("messages", turns("tiger", "a cat"))[0] != base[0]
    assert _key_parts("messages", turns("cat", "a tiger"))[0] != base[0]
    assert base[1] == "Is it dangerous?"  # a text turn after them is still cached


@pytest.mark.parametrize(("api", "base", "changed"), [
    ("messages", MESSAGES, {"top_k": 1}),
    ("messages", MESSAGES, {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
    ("messages", MESSAGES, {"tool_choice": {"type": "any"}}),
    ("responses", RESPONSES, {"reasoning": {"effort": "high"}}),
    ("responses", RESPONSES, {"tool_choice": "required"}),
    ("responses", RESPONSES, {"text": {"verbosity": "high"}}),
    ("responses", RESPONSES, {"prompt": {"id": "pmpt_1", "variables": {"city": "Oslo"}}}),
])
def test_every_field_that_may_change_the_answer_splits_the_cache(api: apis.Api, base: dict,  # type: ignore[type-arg]
                                                                 changed: dict) -> None:  # type: ignore[type-arg]
    """Only a few fields were mapped into the key: effort, thinking, top_k, ... shared one cached answer."""
    assert _key_parts(api, {**base, **changed})[0] != _key_parts(api, base)[0]


@pytest.mark.parametrize(("api", "base", "changed"), [
    ("messages", MESSAGES, {"stream": True, "metadata": {"user_id": "u1"}, "service_tier": "auto"}),
    ("responses", RESPONSES, {"stream": True, "metadata": {"k": "v"}, "user": "u1"}),
])
def test_fields_that_do_not_change_the_answer_still_share_it(api: apis.Api, base: dict,  # type: ignore[type-arg]
                                                             changed: dict) -> None:  # type: ignore[type-arg]
    assert _key_parts(api, {**base, **changed}) == _key_parts(api, base)


def test_a_responses_function_output_is_keyed_and_an_answer_after_it_is_not_cached() -> None:
    def body(output: str, then: str | None) -> dict:  # type: ignore[type-arg]
        items = [{"role": "user", "content": "Weather in Oslo?"},
                 {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                 {"type": "function_call_output", "call_id": "c1", "output": output}]
        return {**RESPONSES, "input": items + ([{"role": "user", "content": then}] if then else [])}
    assert _key_parts("responses", body("18 C", None))[1] is keys.SkipReason.NOT_USER_TURN
    assert _key_parts("responses", body("18 C", "Coat?"))[0] != _key_parts("responses", body("35 C", "Coat?"))[0]


def test_a_completions_prompt_becomes_one_user_turn_per_string_then_the_suffix() -> None:
    chat = apis.completions_turns({"model": "auto", "prompt": ["a", "b"], "suffix": "c"}, "qwen3-4b")
    assert chat.model == "qwen3-4b" and chat.latest_user_text() == "c"
    assert [(o.label, o.text) for o in screening.screen(chat).earlier] == [("user turn 1", "a"), ("user turn 2", "b")]
    single = apis.completions_turns({"prompt": "a", "suffix": ""}, "m")
    assert single.latest_user_text() == "a" and screening.screen(single).earlier == ()


@pytest.mark.parametrize(("body", "param", "words"), [
    ({}, "prompt", "required"),
    ({"prompt": []}, "prompt", "required"),
    ({"prompt": {"text": "a"}}, "prompt", "required"),
    ({"prompt": [1, 2]}, "prompt", "token ids"),
    ({"prompt": ["a", [1, 2]]}, "prompt", "token ids"),
    ({"prompt": "a", "prompt_embeds": "AAAA"}, "prompt_embeds", "cannot be screened"),
    ({"prompt": "a", "suffix": 3}, "suffix", "must be a string"),
])
def test_a_completions_prompt_the_guards_cannot_read_is_refused(body: dict, param: str,  # type: ignore[type-arg]
                                                                 words: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        apis.completions_turns(body, "m")
    assert err.value.param == param and words in err.value.message


@pytest.mark.parametrize(("api", "body", "param"), [
    ("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}] * 2049}, "messages"),
    ("responses", {"model": "m", "input": [{"role": "user", "content": "hi"}] * 2049}, "input"),
    ("messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}] * 2049}, "messages"),
])
def test_more_turns_than_openai_accepts_are_a_400_naming_the_limit(api: apis.Api, body: dict,  # type: ignore[type-arg]
                                                                   param: str) -> None:
    """A body of 100k tiny messages was parsed, validated and keyed on the event loop (2.2 s) before any limit."""
    with pytest.raises(InvalidRequest) as err:
        apis.parse(api, json.dumps(body).encode())
    assert err.value.param == param and "2048" in err.value.message
    ok = {**body, param: body[param][:2048]}
    assert apis.parse(api, json.dumps(ok).encode()).chat.messages


def test_a_completions_prompt_list_is_bounded_alike() -> None:
    with pytest.raises(InvalidRequest) as err:
        apis.completions_turns({"model": "m", "prompt": ["hi"] * 2049}, "m")
    assert err.value.param == "prompt" and "2048" in err.value.message


@pytest.mark.parametrize(("api", "answer", "why"), [
    ("responses", {"object": "response", "status": "completed", "output": [
        {"type": "function_call", "call_id": "c1", "name": "bash", "arguments": "{}"}]}, "tool_calls"),
    ("responses", {"object": "response", "status": "completed", "output": [
        {"type": "reasoning", "summary": []}, {"type": "message", "content": []}]}, "not_text"),
    ("responses", {"object": "response", "status": "incomplete", "output": [{"type": "message", "content": []}]},
     "incomplete"),
    ("messages", {"type": "message", "stop_reason": "tool_use", "content": [
        {"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]},
     "tool_calls"),
    ("messages", {"type": "message", "stop_reason": "end_turn", "content": [
        {"type": "thinking", "thinking": "..."}, {"type": "text", "text": "4"}]}, "not_text"),
    ("messages", None, "incomplete"),
])
def test_why_an_answer_is_not_stored(api: apis.Api, answer: dict | None, why: str) -> None:  # type: ignore[type-arg]
    """What the request line's `cache_unstored` says of a miss whose answer the cache did not take."""
    completion = apis.to_completion(api, answer)
    assert not (completion and completion.get("choices")) and apis.unstored(api, answer) == why
