"""Legacy /v1/completions through the ext_proc session: its prompt strings and suffix pass the chat path's guards."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from structlog.testing import capture_logs

from router.classifier.memo import MemoizedClassifier
from router.config import RouterConfig
from router.extproc import messages as msg
from router.extproc.screen import MAX_EARLIER_PASSES
from router.extproc.server import _record
from router.extproc.session import StreamSession
from router.policy import Policy
from router.runtime import Runtime
from tests.unit.test_extproc_session import DAN, EXECUTOR, MATH, ByText, body, config, headers, set_headers

ATTACK = dataclasses.replace(MATH, jailbreak_score=0.97)


def _runtime(fake: ByText, cfg: RouterConfig | None = None) -> Runtime:
    cfg = cfg or config()
    return Runtime(cfg=cfg, policy=Policy(cfg), classifier=MemoizedClassifier(fake), cache=None)


async def _complete(rt: Runtime, payload: dict[str, Any]) -> tuple[StreamSession, pb.ProcessingResponse]:
    session = StreamSession(rt, EXECUTOR)
    await session.handle(headers("/v1/completions", authorization="Bearer sk-tenant-a"))
    return session, await session.handle(body({"model": "qwen3-4b", "max_tokens": 16, **payload}))


def _error(resp: pb.ProcessingResponse) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(resp.immediate_response.body)["error"]
    return error


@pytest.mark.parametrize(("payload", "turn"), [
    ({"prompt": DAN}, None),
    ({"prompt": [DAN, "Integrate x^2"]}, 1),
    ({"prompt": ["Integrate x^2", "Integrate x^3", DAN]}, None),
    ({"prompt": "Integrate x^2", "suffix": DAN}, None),  # the suffix is read last, as the model reads it
    ({"prompt": [DAN, "Integrate x^2"], "suffix": "return x"}, 1),
])
async def test_every_prompt_string_and_the_suffix_pass_the_jailbreak_guard(payload: dict[str, Any],
                                                                           turn: int | None) -> None:
    """/v1/completions was routed by its `model` alone: a DAN prompt refused on chat reached the model here."""
    fake = ByText({DAN: ATTACK})
    session, resp = await _complete(_runtime(fake), payload)
    assert resp.immediate_response.status.code == 403
    assert set_headers(resp)["x-vsr-jailbreak-blocked"] == "true"
    error = _error(resp)
    assert error["code"] == "jailbreak_detected" and error["type"] == "content_policy_violation"
    assert (f"user turn {turn} " in error["message"]) if turn else ("user turn" not in error["message"])
    prompt = payload["prompt"]
    assert sorted(fake.seen) == sorted([*(prompt if isinstance(prompt, list) else [prompt]),
                                        *([payload["suffix"]] if "suffix" in payload else [])])
    with capture_logs() as logs:
        _record(session)
    line = next(x for x in logs if x["event"] == "request")
    named = f"user turn {turn}" if turn else None
    assert (line["guard"], line.get("guard_turn"), line["path"]) == ("jailbreak", named, "blocked")
    assert "DAN" not in json.dumps(line)


async def test_an_innocent_prompt_keeps_its_explicit_model_and_the_answer_carries_the_verdict() -> None:
    def shadow(raw: dict[str, Any]) -> None:
        raw["classifier"]["jailbreak_action"] = "flag"
    session, resp = await _complete(_runtime(ByText({DAN: ATTACK}), config(shadow)),
                                    {"prompt": [DAN, "Integrate x^2"], "model": "qwen3-4b"})
    assert json.loads(resp.request_body.response.body_mutation.body)["model"] == "qwen3-4b"  # not re-routed
    assert set_headers(resp)["x-selected-cluster"] == "qwen3-4b"  # no fallback chain on this path
    d = session.request.decision
    assert d is not None and (d.model, d.category, d.flagged) == ("qwen3-4b", "math", ("jailbreak",))
    assert d.reason == "requested by the client; jailbreak flagged in user turn 1"
    answer = await session.handle(pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=":status", raw_value=b"200")]))))
    assert set_headers(answer)["x-vsr-jailbreak-flagged"] == "true"
    assert answer.mode_override == msg.SKIP_RESPONSE_BODY  # its body is not looked at: no usage, no cache
    with capture_logs() as logs:
        _record(session)
    line = next(x for x in logs if x["event"] == "request")
    assert (line["guard"], line["cache"], line.get("answer_cut")) == ("jailbreak", "off", None)


async def test_a_routed_prompt_whose_answer_never_came_through_is_logged_abandoned_not_credited() -> None:
    """Its answer's headers pass the router now: none coming means Envoy stopped waiting (past its message timeout it
    sends the request unrouted to the default model) or the client left. Logged and counted `upstream`, the asked
    model was credited with what it never answered."""
    session, resp = await _complete(_runtime(ByText({})), {"prompt": "Integrate x^2", "model": "gpt-oss-120b"})
    assert resp.WhichOneof("response") == "request_body"
    with capture_logs() as logs:
        _record(session)
    line = next(x for x in logs if x["event"] == "request")
    assert (line["path"], line["model"]) == ("abandoned", "gpt-oss-120b")


@pytest.mark.parametrize("on_failure", ["closed", "open"])
async def test_more_unknown_prompt_strings_than_the_pass_bound_follow_on_failure(on_failure: str) -> None:
    """A list of prompts costs a pass each like a fabricated history's turns, under the same bound."""
    fake = ByText({})
    rt = _runtime(fake, config(lambda raw: raw["classifier"].update(on_failure=on_failure)))
    prompts = [f"Question {i} about integrals" for i in range(MAX_EARLIER_PASSES + 2)]
    session, resp = await _complete(rt, {"prompt": prompts})
    assert session.request.classifier_failure == "overload" and len(fake.seen) == 1 + MAX_EARLIER_PASSES
    if on_failure == "closed":
        assert resp.immediate_response.status.code == 503 and _error(resp)["code"] == "classifier_unavailable"
    else:
        assert resp.WhichOneof("response") == "request_body"
        assert session._decision_headers()["x-vsr-guards-skipped"] == "classifier_overload"


async def test_a_huge_prompt_string_is_screened_on_its_bounded_head_and_tail() -> None:
    fake = ByText({})
    await _complete(_runtime(fake), {"prompt": ["HEAD " + "x" * 300_000 + " TAIL", "Integrate x^2"]})
    limit = config().classifier.max_scan_chars
    huge = next(t for t in fake.seen if t.startswith("HEAD"))
    assert len(huge) <= limit + 1 and huge.endswith("TAIL")


TOKENS = [{"prompt": [9906, 0]}, {"prompt": [[9906], [15339]]}, {"prompt": "hi", "prompt_embeds": "AAAA"}]


@pytest.mark.parametrize("payload", TOKENS)
async def test_token_ids_are_refused_while_a_guard_reads_text(payload: dict[str, Any]) -> None:
    _, resp = await _complete(_runtime(ByText({})), payload)
    assert resp.immediate_response.status.code == 400
    error = _error(resp)
    assert error["type"] == "invalid_request_error" and error["param"] in ("prompt", "prompt_embeds")
    assert "token ids" in error["message"] or "prompt_embeds" in error["message"]


@pytest.mark.parametrize("payload", TOKENS)
async def test_with_every_check_off_completions_are_routed_unread_as_before(payload: dict[str, Any]) -> None:
    def guards_off(raw: dict[str, Any]) -> None:
        raw["classifier"].update(jailbreak_action="off", content_safety_action="off")
    fake = ByText({})
    _, resp = await _complete(_runtime(fake, config(guards_off)), payload)
    assert resp.WhichOneof("response") == "request_body" and fake.seen == []
    # gpt-oss-120b's pii_policy refuses some types: its requests are still read, so token ids are refused
    _, resp = await _complete(_runtime(fake, config(guards_off)), {**payload, "model": "gpt-oss-120b"})
    assert resp.immediate_response.status.code == 400


async def test_the_same_text_is_refused_as_a_prompt_and_routed_unread_as_an_embeddings_input() -> None:
    """Nothing is generated from an embeddings input: it stays routed by its model alone, never classified."""
    fake = ByText({DAN: ATTACK})
    _, resp = await _complete(_runtime(fake), {"prompt": DAN})
    assert resp.immediate_response.status.code == 403 and fake.seen == [DAN]
    session = StreamSession(_runtime(fake), EXECUTOR)
    first = await session.handle(headers("/v1/embeddings"))
    assert first.mode_override == msg.ROUTE_BY_BODY
    resp = await session.handle(body({"model": "qwen3-4b", "input": DAN}))
    assert resp.WhichOneof("response") == "request_body" and fake.seen == [DAN]


async def test_the_body_sent_upstream_is_the_one_the_guards_read_even_with_a_key_sent_twice() -> None:
    """The client's bytes went upstream as they came: {"prompt": DAN, "prompt": benign} was screened as the benign
    prompt (the last key wins in Python's parser), and a model server whose parser keeps the first key read DAN."""
    fake = ByText({DAN: ATTACK})
    session = StreamSession(_runtime(fake), EXECUTOR)
    await session.handle(headers("/v1/completions", authorization="Bearer sk-tenant-a"))
    raw = b'{"model": "qwen3-4b", "prompt": ' + json.dumps(DAN).encode() + b', "prompt": "Integrate x^2"}'
    resp = await session.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True)))
    sent = resp.request_body.response.body_mutation.body
    assert json.loads(sent) == {"model": "qwen3-4b", "prompt": "Integrate x^2"} and DAN.encode() not in sent
