"""What the model server was asked and what its answer said, through real Envoy, the router, the ONNX encoder and a
real Milvus cache, with the official SDKs (trial8's findings): the client's reasoning setting reaches the model, a
cached answer serves only requests the server would have got alike, and a hit keeps the answer's reasoning, stop
sequence and logprobs.

Each test uses prompts of its own, so entries from one test never satisfy another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import openai
import pytest

from devstack.milvus_server import MilvusServer
from devstack.stack import Stack
from tests.integration.test_cache_e2e import milvus_cache_stack

pytestmark = pytest.mark.usefixtures("require_model")
BIG, SMALL = "gpt-oss-120b", "qwen3-4b"
API_KEY = "sk-fields"  # this module's cache tenant (tests/integration/conftest.py)
R = TypeVar("R")


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], milvus_server: MilvusServer | str) -> Stack:
    return milvus_cache_stack(make_stack, milvus_server, "fields")


def _until_hit(call: Callable[[], tuple[dict[str, str], R]]) -> R:
    """Writes are asynchronous (they never delay the answer): repeat until the stored answer serves the request."""
    for _ in range(100):
        headers, answer = call()
        if headers.get("x-vsr-cache-hit") == "true":
            return answer
        time.sleep(0.1)
    raise AssertionError("never a cache hit")


def _chat(oai: openai.OpenAI, model: str, text: str, **extra: Any) -> tuple[dict[str, str], dict[str, Any]]:
    raw = oai.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}],
                                                        extra_body=extra or None)
    return dict(raw.headers), raw.parse().model_dump()


def test_an_answer_is_served_only_to_requests_its_model_server_got_alike(oai: openai.OpenAI) -> None:
    """trial8 finding 2: `auto` sent a math prompt to gpt-oss-120b with `reasoning_effort: high`; the same prompt
    naming gpt-oss-120b (the server's default effort) got that answer from the cache. And qwen3-4b named (thinking
    on by default) stored an answer that `auto` (thinking switched off) was served."""
    proof = "Prove the theorem that the square of an odd number is odd (reasoning cache)."
    headers, first = _chat(oai, "auto", proof)
    assert first["x_demo"]["received"]["reasoning_effort"] == "high" and headers["x-vsr-selected-model"] == BIG
    _until_hit(lambda: _chat(oai, "auto", proof))
    headers, explicit = _chat(oai, BIG, proof)
    assert headers["x-vsr-cache-hit"] == "false" and "reasoning_effort" not in explicit["x_demo"]["received"]

    history = "Tell me about the history of the Byzantine empire and its emperors (reasoning cache)."
    _chat(oai, SMALL, history)
    _until_hit(lambda: _chat(oai, SMALL, history))
    headers, routed = _chat(oai, "auto", history)
    assert headers["x-vsr-selected-model"] == SMALL and headers["x-vsr-cache-hit"] == "false"
    assert routed["x_demo"]["received"]["chat_template_kwargs"] == {"enable_thinking": False}


def test_a_reasoning_setting_the_client_chose_reaches_the_model_as_sent(oai: openai.OpenAI) -> None:
    """trial8 finding 4: with `model: auto`, `reasoning_effort: low` reached gpt-oss as `high`, Responses
    `reasoning.effort: low` as `high`, `enable_thinking: true` reached qwen3 as false; the header said the category's."""
    headers, answer = _chat(oai, "auto", "Prove that sqrt(2) is irrational (effort).", reasoning_effort="low")
    assert answer["x_demo"]["received"]["reasoning_effort"] == "low"
    assert (headers["x-vsr-selected-model"], headers["x-vsr-selected-reasoning"]) == (BIG, "off")
    kwargs = {"enable_thinking": True, "custom": 1}
    headers, answer = _chat(oai, "auto", "Tell me about the French revolution (thinking).", chat_template_kwargs=kwargs)
    assert answer["x_demo"]["received"]["chat_template_kwargs"] == kwargs
    assert (headers["x-vsr-selected-model"], headers["x-vsr-selected-reasoning"]) == (SMALL, "on")
    raw = oai.responses.with_raw_response.create(model="auto", input="Prove that sqrt(3) is irrational (effort).",
                                                 reasoning={"effort": "low"}, store=False)
    assert (raw.parse().model_extra or {})["x_demo"]["received"]["reasoning"] == {"effort": "low"}
    assert raw.headers["x-vsr-selected-reasoning"] == "off"


def test_a_cached_stream_replays_its_reasoning(oai: openai.OpenAI) -> None:
    """trial8 finding 5: vLLM streams the thinking as `delta.reasoning_content`; the cache stored the content only, so
    a hit (streamed or JSON) had no reasoning though a non-streamed miss's JSON has it."""
    thought = "The user wants painters; Spain has many."
    messages: list[Any] = [{"role": "user", "content": "Name three famous painters from Spain (reasoning stream)."}]

    def stream() -> tuple[dict[str, str], str]:
        with oai.chat.completions.with_streaming_response.create(
                model="auto", messages=messages, stream=True, extra_headers={"x-demo-reasoning": thought}) as r:
            chunks = list(r.parse())
        return dict(r.headers), "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                                        for c in chunks if c.choices)

    headers, first = stream()
    assert headers["x-vsr-cache-hit"] == "false" and first == thought
    assert _until_hit(stream) == thought
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert raw.headers["x-vsr-cache-hit"] == "true"
    assert (raw.parse().choices[0].message.model_extra or {})["reasoning_content"] == thought


def test_an_anthropic_stop_sequence_is_replayed_from_the_cache(claude: anthropic.Anthropic) -> None:
    """trial8 finding 6: an answer that ended on one of `stop_sequences` replayed as `end_turn`, `stop_sequence: null`:
    an app splitting on the matched delimiter saw a natural end."""
    ask: dict[str, Any] = {"model": "auto", "max_tokens": 64, "stop_sequences": ["answering"],
                           "messages": [{"role": "user", "content": "Count from one to ten, please (stop)."}]}

    def message() -> tuple[dict[str, str], tuple[str | None, str | None, str]]:
        raw = claude.messages.with_raw_response.create(**ask)
        m = raw.parse()
        return dict(raw.headers), (m.stop_reason, m.stop_sequence, m.content[0].text)  # type: ignore[union-attr]

    headers, first = message()
    assert headers["x-vsr-cache-hit"] == "false" and first[:2] == ("stop_sequence", "answering")
    assert _until_hit(message) == first
    with claude.messages.stream(**ask) as s:
        final = s.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "answering")


def test_responses_logprobs_are_replayed_from_the_cache(oai: openai.OpenAI) -> None:
    """trial8 finding 6: `output_text.logprobs` asked with `include` came back as none from the cache."""
    def response() -> tuple[dict[str, str], list[tuple[str, float]]]:
        raw = oai.responses.with_raw_response.create(
            model="auto", input="Name a famous painter from Spain (logprobs).", store=False,
            include=["message.output_text.logprobs"])
        part = raw.parse().output[0].content[0]  # type: ignore[union-attr]
        return dict(raw.headers), [(t.token, t.logprob) for t in part.logprobs or []]  # type: ignore[union-attr]

    headers, first = response()
    assert headers["x-vsr-cache-hit"] == "false" and first
    assert _until_hit(response) == first


def test_the_reasoning_header_says_only_what_the_model_server_is_sent(oai: openai.OpenAI,
                                                                      claude: anthropic.Anthropic) -> None:
    """trial8 finding 10: `x-vsr-selected-reasoning` followed the category for an `auto` Messages request and for a
    Responses request to qwen3 (neither body carries the router's switch), and said `off` for an explicit model the
    client set nothing for (the server's default applies: qwen3 thinks). It is absent where nothing was sent."""
    raw = claude.messages.with_raw_response.create(
        model="auto", max_tokens=64, messages=[{"role": "user", "content": "Prove that 7 is prime (header)."}])
    received = (raw.parse().model_extra or {})["x_demo"]["received"]
    assert raw.headers["x-vsr-selected-model"] == BIG and not {"reasoning", "thinking"} & received.keys()
    assert "x-vsr-selected-reasoning" not in raw.headers
    history = "Tell me about the history of the Ottoman empire (header)."
    resp = oai.responses.with_raw_response.create(model="auto", input=history, store=False)
    assert resp.headers["x-vsr-selected-model"] == SMALL and "x-vsr-selected-reasoning" not in resp.headers
    assert "reasoning" not in (resp.parse().model_extra or {})["x_demo"]["received"]
    headers, answer = _chat(oai, SMALL, history)
    assert "chat_template_kwargs" not in answer["x_demo"]["received"] and "x-vsr-selected-reasoning" not in headers
    headers, _ = _chat(oai, "auto", history)  # the router's switch: said
    assert (headers["x-vsr-selected-model"], headers["x-vsr-selected-reasoning"]) == (SMALL, "off")


def test_a_responses_hit_repeats_its_own_requests_parameters(oai: openai.OpenAI) -> None:
    """trial8 finding 10: a Responses hit said `tools: []`, `tool_choice: "auto"` whatever was sent and repeated no
    `instructions`, `temperature`, `max_output_tokens`, `text`, `reasoning`, `metadata`."""
    tool: Any = {"type": "function", "name": "weather", "description": "The weather in a city", "strict": True,
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                                "additionalProperties": False}}
    ask: dict[str, Any] = {"model": "auto", "input": "Prove that 11 is prime (echo).", "store": False,
                           "instructions": "Be brief.", "temperature": 0.3, "max_output_tokens": 99,
                           "text": {"format": {"type": "text"}, "verbosity": "low"}, "tools": [tool],
                           "tool_choice": "none"}

    def response(**extra: Any) -> tuple[dict[str, str], Any]:
        raw = oai.responses.with_raw_response.create(**ask, **extra)
        return dict(raw.headers), raw.parse()

    response(metadata={"ticket": "1"})
    hit = _until_hit(lambda: response(metadata={"ticket": "2"}))  # metadata does not split the cache: this request's
    assert (hit.instructions, hit.temperature, hit.max_output_tokens, hit.tool_choice, hit.metadata) == (
        "Be brief.", 0.3, 99, "none", {"ticket": "2"})
    assert [t.name for t in hit.tools] == ["weather"] and hit.text.verbosity == "low"
    assert hit.reasoning.effort == "high"  # what gpt-oss was sent for a math prompt (the router's switch)


def test_an_embeddings_answer_names_its_model(oai: openai.OpenAI) -> None:
    """trial8 finding 10: `/v1/embeddings` answers carried no `x-vsr-selected-model`."""
    raw = oai.embeddings.with_raw_response.create(model="auto", input="hello")
    assert (raw.headers["x-vsr-selected-model"], raw.headers["x-demo-upstream"]) == (SMALL, SMALL)
    assert "x-vsr-selected-category" not in raw.headers  # nothing was classified
