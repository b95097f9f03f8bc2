"""The ext_proc session's gateway behaviour without Envoy: fallback headers, affinity header, API formats."""

from __future__ import annotations

import json
from typing import Any

import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from structlog.testing import capture_logs

from devstack.stack import ROOT
from router.config import parse_config
from router.extproc.encoder_queue import EncoderQueue
from router.extproc.server import _record
from router.extproc.session import StreamSession
from router.runtime import Runtime, build_runtime
from tests.unit.test_extproc_session import body, header_message, set_headers

EXECUTOR = EncoderQueue()
MATH = "Prove that the sum of two even integers is even."


def _runtime() -> Runtime:
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["classifier"]["enabled"] = False
    raw["semantic_cache"] = {"enabled": True, "backend": "memory"}
    return build_runtime(parse_config(raw, "test"))


async def _route(session: StreamSession, path: str, payload: dict[str, Any]) -> pb.ProcessingResponse:
    await session.handle(header_message({":path": path, ":method": "POST", "authorization": "Bearer sk-a"}))
    return await session.handle(body(payload))


async def test_a_fallback_answer_is_reported_and_never_cached() -> None:
    rt = _runtime()
    session = StreamSession(rt, EXECUTOR)
    await _route(session, "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": MATH}]})
    assert session.request.cache_key is not None
    resp = await session.handle(header_message({":status": "200", "content-type": "application/json",
                                          "x-vsr-upstream-model": "qwen3-4b", "x-envoy-attempt-count": "2"},
                                         "response_headers"))
    out = set_headers(resp)
    assert out["x-vsr-fallback-from"] == "gpt-oss-120b" and out["x-vsr-attempts"] == "2"
    assert session.request.cache_key is None  # the key names gpt-oss-120b: a qwen3-4b answer must not fill it
    assert (session.response.answered_by, session.response.attempts) == ("qwen3-4b", 2)
    with capture_logs() as logs:
        _record(session)
    line = next(x for x in logs if x["event"] == "request")  # an operator's trial: the line named only gpt-oss-120b
    assert (line["model"], line["answered_by"], line["attempts"]) == ("gpt-oss-120b", "qwen3-4b", 2)


async def test_anthropic_requests_get_anthropic_errors_and_their_body_keeps_its_shape() -> None:
    rt = _runtime()
    bad = await _route(StreamSession(rt, EXECUTOR), "/v1/messages",
                       {"model": "gpt-9", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert bad.immediate_response.status.code == 404
    assert json.loads(bad.immediate_response.body)["error"]["type"] == "not_found_error"
    routed = await _route(StreamSession(rt, EXECUTOR), "/v1/messages",
                          {"model": "auto", "max_tokens": 5, "system": "s", "messages": [{"role": "user", "content": MATH}]})
    sent = json.loads(routed.request_body.response.body_mutation.body)
    assert sent == {"model": "gpt-oss-120b", "max_tokens": 5, "system": "s",
                    "messages": [{"role": "user", "content": MATH}]}  # only the model changes
    assert set_headers(routed)["x-vsr-routed-model"] == "gpt-oss-120b"
    assert "x-vsr-routed-category" not in set_headers(routed)  # a retry rewrites only the model of such a body


async def test_tenants_an_auth_filter_names_never_share_a_session() -> None:
    """Behind an auth filter that names the tenant in a header and forwards no API key (Envoy's jwt_authn drops the
    token by default), affinity keyed every tenant's sessions alike: tenant b's `x-session-id: s1` followed tenant
    a's conversation to its model (and `x-vsr-affinity: sticky` told b how a's had gone)."""
    rt = _runtime()

    async def turn(tenant: str, text: str) -> StreamSession:
        session = StreamSession(rt, EXECUTOR)
        await session.handle(header_message({":path": "/v1/chat/completions", ":method": "POST",
                                             "x-authz-tenant-id": tenant, "x-session-id": "s1"}))
        await session.handle(body({"model": "auto", "messages": [{"role": "user", "content": text}]}))
        return session

    assert (await turn("a", MATH)).request.affinity == "new"
    assert (await turn("a", "ok")).request.affinity == "sticky"  # a's own session keeps its model
    other = await turn("b", "ok")
    assert other.request.affinity == "none" and other.request.decision is not None
    assert other.request.decision.model == rt.cfg.default_model
