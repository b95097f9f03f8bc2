"""OpenAI Responses and Anthropic Messages through the real stack with the official SDKs: classified, routed,
cached and answered in their own formats; completions and embeddings routed by their explicit model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from devstack.stack import Stack

MATH = "Prove the theorem that the sum of two even numbers is even."  # keyword rule -> math -> gpt-oss-120b
BIG, SMALL = "gpt-oss-120b", "qwen3-4b"
API_KEY = "sk-responses"  # this module's cache tenant (tests/integration/conftest.py)


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    def cached(cfg: dict[str, Any]) -> None:
        cfg["semantic_cache"] = {"enabled": True, "backend": "memory"}

    return make_stack(cached)


def test_responses_are_classified_routed_and_cached(oai: openai.OpenAI) -> None:
    question = MATH + " (responses)"
    raw = oai.responses.with_raw_response.create(model="auto", input=question, instructions="Be brief.", store=False)
    first = raw.parse()
    assert raw.headers["x-vsr-selected-model"] == BIG and raw.headers["x-vsr-selected-category"] == "math"
    assert first.model == BIG
    assert first.output_text == "This is gpt-oss-120b answering a 13-word question."
    assert first.model_extra and first.model_extra["x_demo"]["received"] == {
        "model": BIG, "reasoning": {"effort": "high"}}
    assert raw.headers["x-vsr-cache-hit"] == "false"
    again = oai.responses.with_raw_response.create(model="auto", input=question, instructions="Be brief.",
                                                   store=False)
    assert again.headers["x-vsr-cache-hit"] == "true"
    hit = again.parse()
    assert hit.output_text == first.output_text and hit.status == "completed"
    assert hit.model == first.model == BIG  # the model that answered, as on the miss: not the `auto` asked for


def test_responses_stream_in_their_own_events_and_replay_from_the_cache(oai: openai.OpenAI) -> None:
    question = MATH + " (responses, streamed)"
    for expect_hit in ("false", "true"):
        with oai.responses.with_streaming_response.create(model="auto", input=question, stream=True,
                                                          store=False) as r:
            assert r.headers["x-vsr-cache-hit"] == expect_hit
            events = list(r.parse())
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "This is gpt-oss-120b answering a 14-word question."
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == text
        assert {e.response.model for e in events if e.type in ("response.created", "response.completed")} == {BIG}


def test_a_chat_cache_hit_names_the_model_that_answered(oai: openai.OpenAI) -> None:
    """A hit said `auto` where its miss said gpt-oss-120b: a client booking cost by `response.model` miscounted."""
    messages: list[Any] = [{"role": "user", "content": MATH + " (chat)"}]
    for expect_hit in ("false", "true"):
        raw = oai.chat.completions.with_raw_response.create(model="auto", messages=messages)
        assert raw.headers["x-vsr-cache-hit"] == expect_hit and raw.parse().model == BIG
    streamed: list[Any] = [{"role": "user", "content": MATH + " (chat, streamed)"}]
    for expect_hit in ("false", "true"):
        with oai.chat.completions.with_streaming_response.create(model="auto", messages=streamed,
                                                                 stream=True) as r:
            assert r.headers["x-vsr-cache-hit"] == expect_hit
            assert {chunk.model for chunk in r.parse()} == {BIG}


def test_a_cache_hit_reports_zero_usage_in_every_api(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    """The answer is stored from a stream that asked no usage, so it holds none: its hits said `usage: null` (JSON)
    and sent no usage chunk to a stream that asked for one. A hit spent no tokens: zero, never missing."""
    messages: list[Any] = [{"role": "user", "content": MATH + " (stored without usage)"}]
    with oai.chat.completions.with_streaming_response.create(model="auto", messages=messages, stream=True) as r:
        assert r.headers["x-vsr-cache-hit"] == "false" and all(c.usage is None for c in r.parse())
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert raw.headers["x-vsr-cache-hit"] == "true"
    usage = raw.parse().usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 0, 0)
    with oai.chat.completions.with_streaming_response.create(
            model="auto", messages=messages, stream=True, stream_options={"include_usage": True}) as r:
        assert r.headers["x-vsr-cache-hit"] == "true"
        chunks = list(r.parse())
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0
    assert all(c.usage is None and c.choices for c in chunks[:-1])
    for expect_hit in ("false", "true"):
        resp = oai.responses.with_raw_response.create(model="auto", input=MATH + " (usage)", store=False)
        assert resp.headers["x-vsr-cache-hit"] == expect_hit
    assert (u := resp.parse().usage) is not None and (u.input_tokens, u.output_tokens, u.total_tokens) == (0, 0, 0)
    question = [{"role": "user", "content": MATH + " (usage)"}]
    claude.messages.create(model="auto", max_tokens=64, messages=question)  # type: ignore[arg-type]
    with claude.messages.stream(model="auto", max_tokens=64, messages=question) as stream:  # type: ignore[arg-type]
        assert stream.response.headers["x-vsr-cache-hit"] == "true"
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.output_tokens) == (0, 0)


def skipped(headers: Any) -> str | None:
    """Why the cache skipped a request, as its answer says: `x-vsr-cache-hit: false` with `x-vsr-cache-skip` (both
    were absent, so a skip looked like a router without a cache)."""
    assert headers["x-vsr-cache-hit"] == "false"
    return headers.get("x-vsr-cache-skip")


def test_cache_control_opts_out_and_an_unknown_directive_is_refused(
        oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    """The standard `Cache-Control: no-cache` / `no-store` were ignored (a cached answer served all the same), and so
    was an `x-vsr-cache-control` value the router does not know: the client believed it had opted out."""
    messages: list[Any] = [{"role": "user", "content": MATH + " (cache control)"}]
    oai.chat.completions.create(model="auto", messages=messages)  # stored
    served = oai.chat.completions.with_raw_response.create(model="auto", messages=messages)
    assert served.headers["x-vsr-cache-hit"] == "true"
    fresh = oai.chat.completions.with_raw_response.create(model="auto", messages=messages,
                                                          extra_headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-vsr-cache-hit"] == "false" and fresh.headers["x-demo-upstream"] == BIG
    untouched = oai.chat.completions.with_raw_response.create(model="auto", messages=messages,
                                                              extra_headers={"Cache-Control": "no-store"})
    assert skipped(untouched.headers) == "no_store" and untouched.headers["x-demo-upstream"] == BIG
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="auto", messages=messages, extra_headers={"x-vsr-cache-control": "nocache"})
    assert "accepted: no-store, no-cache" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="auto", max_tokens=64, messages=messages,
                               extra_headers={"x-vsr-cache-control": "nocache"})
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "accepted: no-store, no-cache" in bad.value.body["error"]["message"]  # type: ignore[index]


def test_a_cache_directive_on_a_repeated_header_line_is_not_lost(stack: Stack) -> None:
    """Envoy hands the router each line of a repeated header, and the router kept only the last: `nocache` then
    `no-store` was a 200 (the unknown value ignored, the client believing it had opted out), and `no-store` then
    `no-cache` stored the answer its client had said not to store. The lines are one comma-separated list (RFC 9110)."""
    url, body = f"{stack.base_url}/chat/completions", {"model": "auto", "messages": [
        {"role": "user", "content": MATH + " (repeated header lines)"}]}
    refused = httpx.post(url, json=body, timeout=10, headers=[
        ("x-vsr-cache-control", "nocache"), ("x-vsr-cache-control", "no-store")])
    assert refused.status_code == 400 and "unknown value 'nocache'" in refused.json()["error"]["message"]
    key = ("authorization", "Bearer sk-repeated")
    untouched = httpx.post(url, json=body, timeout=10, headers=[
        key, ("x-vsr-cache-control", "no-store"), ("x-vsr-cache-control", "no-cache")])
    assert untouched.status_code == 200 and skipped(untouched.headers) == "no_store"  # neither read nor stored


def test_a_responses_request_that_depends_on_server_state_is_routed_but_never_cached(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="auto", input=MATH, previous_response_id="resp_earlier")
    assert raw.headers["x-vsr-selected-model"] == BIG
    assert skipped(raw.headers) == "stateful"
    assert raw.parse().model_extra["x_demo"]["received"]["previous_response_id"] == "resp_earlier"
    stored = oai.responses.with_raw_response.create(model="auto", input=MATH)  # store defaults to true
    assert skipped(stored.headers) == "stateful"


def test_a_continued_response_goes_to_the_model_that_holds_its_state(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="auto", input=MATH + " (stateful)")
    assert first.model == BIG
    follow = oai.responses.with_raw_response.create(model="auto", input="ok", previous_response_id=first.id)
    assert (follow.headers["x-vsr-selected-model"], follow.headers["x-vsr-affinity"]) == (BIG, "sticky")
    stored = httpx.get(f"{oai.base_url}responses/{first.id}", headers={"authorization": f"Bearer {API_KEY}"})
    assert stored.headers["x-demo-upstream"] == BIG  # retrieval goes to the server that holds it
    assert httpx.get(f"{oai.base_url}responses/resp_unknown").headers["x-demo-upstream"] == SMALL
    with oai.responses.with_streaming_response.create(model="auto", input=MATH + " (stateful, streamed)",
                                                      stream=True) as r:
        events = list(r.parse())
    streamed_id = next(e for e in events if e.type == "response.completed").response.id
    follow = oai.responses.with_raw_response.create(model="auto", input="ok", previous_response_id=streamed_id)
    assert follow.headers["x-vsr-selected-model"] == BIG
    # an id the router has no record of (another Pod's, or older than its pin) goes on, whoever asks: a 404 locked its
    # owner out of its own conversation
    unknown = oai.responses.with_raw_response.create(model="auto", input="ok", previous_response_id="resp_unknown")
    assert unknown.headers["x-vsr-selected-model"] == SMALL  # "ok" on its own words
    assert unknown.parse().model_extra["x_demo"]["received"]["previous_response_id"] == "resp_unknown"
    asked = httpx.get(f"{oai.base_url}responses/resp_unknown", headers={"authorization": f"Bearer {API_KEY}"})
    assert asked.headers["x-demo-upstream"] == SMALL  # its server's own answer, not the router's


def test_a_stored_response_is_served_to_the_caller_that_created_it_alone(oai: openai.OpenAI, stack: Stack) -> None:
    """Its affinity pin was keyed by (caller, id): another tenant who learnt the id found no pin and was passed through
    to the default model unread, whose server read it out, deleted it or continued it for them. Now another caller
    (another key, or none) gets OpenAI's 404 for an id that does not exist; its creator is served as before."""
    other = openai.OpenAI(base_url=stack.base_url, api_key="sk-responses-other-tenant", max_retries=0)
    mine = oai.responses.create(model="auto", input="tell me something nice about my grandmother", store=True)
    assert mine.model == SMALL  # kept by the default model's server, where another caller's calls went
    calls: list[Callable[[], object]] = [
        lambda: other.responses.retrieve(mine.id),
        lambda: other.responses.delete(mine.id),
        lambda: other.responses.create(model="auto", input="and what did I ask?", previous_response_id=mine.id),
        lambda: other.responses.create(model=SMALL, input="and what did I ask?", previous_response_id=mine.id)]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.response.json() == {"error": {
            "message": f"No response found with id '{mine.id}'.", "type": "invalid_request_error", "param": None,
            "code": None}}
        assert "x-demo-upstream" not in refused.value.response.headers  # no model server saw it
    anonymous = httpx.get(f"{stack.base_url}/responses/{mine.id}")
    assert anonymous.status_code == 404 and "x-demo-upstream" not in anonymous.headers
    assert oai.responses.retrieve(mine.id).output_text == mine.output_text  # still there, served to its creator
    follow = oai.responses.create(model="auto", input="and then?", previous_response_id=mine.id)
    assert follow.model == SMALL
    oai.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError) as gone:
        oai.responses.retrieve(mine.id)
    assert gone.value.response.headers["x-demo-upstream"] == SMALL  # its server's answer: deleted by its creator
    metrics = httpx.get(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/metrics", timeout=5).text
    assert "vsr_stored_response_refusals_total 5.0" in metrics
    log = (stack.workdir / "router.log").read_text()
    assert '"error": "response_not_owned"' in log and mine.id not in log  # logged, the id never


def test_anthropic_messages_are_classified_routed_and_cached(claude: anthropic.Anthropic) -> None:
    question = MATH + " (messages)"
    raw = claude.messages.with_raw_response.create(model="auto", max_tokens=64, system="Be brief.",
                                                   messages=[{"role": "user", "content": question}])
    first = raw.parse()
    assert raw.headers["x-vsr-selected-model"] == BIG and raw.headers["x-vsr-cache-hit"] == "false"
    assert first.model == BIG and first.content[0].text == "This is gpt-oss-120b answering a 13-word question."
    again = claude.messages.with_raw_response.create(model="auto", max_tokens=64, system="Be brief.",
                                                     messages=[{"role": "user", "content": question}])
    assert again.headers["x-vsr-cache-hit"] == "true"
    hit = again.parse()
    assert hit.content[0].text == first.content[0].text and hit.stop_reason == "end_turn"
    assert hit.model == first.model == BIG
    assert (hit.usage.input_tokens, hit.usage.output_tokens) == (0, 0)  # a hit spent no tokens


def test_anthropic_streams_in_its_own_events_and_replays_from_the_cache(claude: anthropic.Anthropic) -> None:
    question = MATH + " (messages, streamed)"
    for expect_hit in ("false", "true"):
        with claude.messages.stream(model="auto", max_tokens=64,
                                    messages=[{"role": "user", "content": question}]) as stream:
            assert stream.response.headers["x-vsr-cache-hit"] == expect_hit
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "This is gpt-oss-120b answering a 14-word question."
        assert final.stop_reason == "end_turn" and final.content[0].text == text
        assert final.model == BIG  # from message_start


def test_anthropic_clients_get_anthropic_errors(claude: anthropic.Anthropic, stack: Stack) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        claude.messages.create(model="claude-9", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    r = httpx.post(f"{stack.base_url}/messages", json={"model": "auto", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": "'max_tokens' is required and must be a positive integer"}}


def test_instructions_the_router_cannot_read_are_refused(oai: openai.OpenAI, claude: anthropic.Anthropic,
                                                         stack: Stack) -> None:
    """A Responses `instructions` list or an Anthropic `system` object went upstream read by no screen."""
    before = stack.upstream_requests()
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model="auto", input="hi", store=False,
                             instructions=[{"role": "system", "content": "x"}])  # type: ignore[arg-type]
    assert err.value.param == "instructions"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="auto", max_tokens=10, system={"text": "x"},  # type: ignore[arg-type]
                               messages=[{"role": "user", "content": "hi"}])
    assert "'system' must be" in bad.value.body["error"]["message"]  # type: ignore[index]
    assert stack.upstream_requests() == before


def test_count_tokens_is_refused_by_the_router_in_anthropics_shape(claude: anthropic.Anthropic) -> None:
    """It passed through to the default model, whose server answered a plain-text 404 the SDK could not parse."""
    with pytest.raises(anthropic.NotFoundError) as err:
        claude.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body == {"type": "error", "error": {
        "type": "not_found_error",
        "message": "This router does not count tokens: /v1/messages/count_tokens is not served"}}
    assert "x-demo-upstream" not in err.value.response.headers  # no model server was asked


def test_a_fallback_rewrites_the_model_of_a_responses_body(stack: Stack) -> None:
    r = httpx.post(f"{stack.base_url}/responses", headers={"x-demo-fault": f"{BIG}=503"}, timeout=10,
                   json={"model": "auto", "input": MATH + " (fallback)"})
    assert r.status_code == 200 and r.headers["x-vsr-upstream-model"] == SMALL
    assert r.json()["x_demo"]["received"]["model"] == SMALL


def test_completions_and_embeddings_go_to_their_explicit_model(oai: openai.OpenAI) -> None:
    emb = oai.embeddings.with_raw_response.create(model=BIG, input="hello")
    assert emb.headers["x-demo-upstream"] == BIG
    auto = oai.completions.with_raw_response.create(model="auto", prompt="hello")
    assert auto.headers["x-demo-upstream"] == SMALL  # auto on these paths: the default model
    assert auto.parse().model_extra["x_demo"]["received"]["model"] == SMALL
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="nope", input="hello")
