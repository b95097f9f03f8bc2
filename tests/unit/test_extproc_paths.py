"""Which paths and request framings the header phase lets on to a model: an allow-list, refused in the API's shape."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router import apis, screening
from router.affinity import MemoryPins
from router.extproc.session import INLINE_BODY_BYTES, StreamSession
from router.runtime import Runtime, build_runtime
from tests.unit.test_extproc_session import EXECUTOR, MATH, body, config, headers, runtime, send, set_headers


def _guards_off(raw: dict[str, Any]) -> None:
    raw["classifier"].update(jailbreak_action="off", content_safety_action="off")
    for model in raw["models"].values():
        model.pop("pii_policy", None)


async def _answer(req: pb.ProcessingRequest, guards: bool = True) -> pb.ProcessingResponse:
    return await StreamSession(runtime(MATH, None if guards else config(_guards_off)), EXECUTOR).handle(req)


def _error(resp: pb.ProcessingResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(resp.immediate_response.body)
    return body


UNKNOWN = ["/generate", "/v1/realtime", "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/chat/completions/",
           "/V1/Chat/Completions", "/v1/chat/completions/batch", "/invocations", "/inference/v1/generate",
           "/v1/responses/", "/v1/responses/resp_1/other", "/generate?x=1", "/", "/v1/completions/"]


@pytest.mark.parametrize("guards", [True, False])
@pytest.mark.parametrize("path", UNKNOWN)
async def test_an_unknown_path_is_a_404_from_the_router_never_passed_through(path: str, guards: bool) -> None:
    """Every path but the chat-like APIs passed through to the default model unread: vLLM generates on /invocations,
    its batch and token-id endpoints, a server that ignores case or a trailing slash on the chat path itself."""
    resp = await _answer(headers(path), guards)
    assert resp.immediate_response.status.code == 404, resp
    error = _error(resp)["error"]
    assert error["code"] == "unsupported_path" and error["type"] == "invalid_request_error"
    assert path.split("?")[0] in error["message"] and "POST /v1/chat/completions" in error["message"]


async def test_an_unknown_path_under_messages_is_refused_in_anthropics_shape() -> None:
    body = _error(await _answer(headers("/v1/messages/batches")))
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("path", "method"), [
    ("/v1/chat/completions?api-version=2024-10-21", "POST"), ("/v1/embeddings", "POST"), ("/v1/completions", "POST"),
    ("/v1/responses/resp_1", "GET"), ("/v1/responses/resp_1", "DELETE"), ("/v1/responses/resp_1/input_items", "GET"),
    ("/v1/responses/resp_1/cancel", "POST"), ("/v1/models", "GET"), ("/v1/models/qwen3-4b", "GET")])
async def test_the_served_paths_still_go_on(path: str, method: str) -> None:
    resp = await _answer(headers(path, method))
    which = resp.WhichOneof("response")
    assert which == "request_headers" or resp.immediate_response.status.code == 200, resp


@pytest.mark.parametrize(("path", "method"), [
    ("/v1/responses/resp_1", "POST"), ("/v1/responses/resp_1", "PUT"), ("/v1/responses/resp_1/input_items", "POST"),
    ("/v1/responses/resp_1/cancel", "GET")])
async def test_a_stored_response_call_on_another_method_is_a_405(path: str, method: str) -> None:
    """An adversarial trial: a POST with a prompt to /v1/responses/{id} passed through to the default model
    unscreened (the path was served, its method never checked)."""
    resp = await _answer(headers(path, method))
    assert resp.immediate_response.status.code == 405, resp
    assert _error(resp)["error"]["code"] == "method_not_allowed"


async def _stored_by(rt: Runtime, key: str) -> str:
    """A Responses answer (store defaults to true) the default model's server keeps, created by the caller of `key`."""
    session = StreamSession(rt, EXECUTOR)
    await session.handle(headers("/v1/responses", authorization=f"Bearer {key}"))
    await session.handle(body({"model": "qwen3-4b", "input": "hello"}))
    status = [base_pb2.HeaderValue(key=":status", raw_value=b"200"),
              base_pb2.HeaderValue(key="content-type", raw_value=b"application/json")]
    await session.handle(pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=status))))
    answer = {"id": "resp_a1", "object": "response", "status": "completed", "model": "qwen3-4b", "output": []}
    await session.handle(pb.ProcessingRequest(response_body=pb.HttpBody(body=json.dumps(answer).encode(),
                                                                        end_of_stream=True)))
    return answer["id"]


@pytest.mark.parametrize(("path", "method"), [("", "GET"), ("", "DELETE"), ("/input_items", "GET"),
                                              ("/cancel", "POST")])
async def test_another_callers_stored_response_is_a_404_on_every_call(path: str, method: str) -> None:
    """Its pin was keyed by (caller, id): another tenant found none and was passed through to the default model, whose
    server read, deleted or cancelled the response for it. Its creator's call is still routed."""
    rt = runtime(MATH)
    rt.affinity = MemoryPins()
    rid = await _stored_by(rt, "sk-tenant-a")
    for key in ("sk-tenant-b", None):
        extra = {"authorization": f"Bearer {key}"} if key else {}
        refused = await StreamSession(rt, EXECUTOR).handle(headers(f"/v1/responses/{rid}{path}", method, **extra))
        assert refused.immediate_response.status.code == 404, refused
        assert _error(refused) == {"error": {"message": f"No response found with id '{rid}'.",
                                             "type": "invalid_request_error", "param": None, "code": None}}
    owner = await StreamSession(rt, EXECUTOR).handle(headers(f"/v1/responses/{rid}{path}", method,
                                                             authorization="Bearer sk-tenant-a"))
    assert owner.WhichOneof("response") == "request_headers" and set_headers(owner)["x-selected-cluster"] == "qwen3-4b"


@pytest.mark.parametrize(("path", "method"), [("", "GET"), ("", "DELETE"), ("/input_items", "GET"),
                                              ("/cancel", "POST")])
async def test_an_id_the_router_never_saw_goes_on_for_a_caller_with_an_identity(path: str, method: str) -> None:
    """Its owner may have created it through another Pod, or before a restart or its pin's expiry: a 404 there locked
    it out of its own conversation. It goes to the default model, as it did before creators were recorded."""
    rt = runtime(MATH)
    rt.affinity = MemoryPins()
    resp = await StreamSession(rt, EXECUTOR).handle(headers(f"/v1/responses/resp_elsewhere{path}", method,
                                                            authorization="Bearer sk-tenant-a"))
    assert resp.WhichOneof("response") == "request_headers", resp
    assert "x-selected-cluster" not in set_headers(resp)


async def test_stored_responses_keep_their_creator_with_affinity_off() -> None:
    """The creator is kept in the pin store, which a runtime opened only with affinity on: with `affinity.enabled:
    false` no response had a creator, and another caller's calls on it were passed through to its server."""
    cfg = config(lambda raw: raw.update(affinity={"enabled": False}, classifier={"enabled": False},
                                        semantic_cache={"enabled": False}))
    rt = build_runtime(cfg)
    rid = await _stored_by(rt, "sk-tenant-a")
    mine = await StreamSession(rt, EXECUTOR).handle(headers(f"/v1/responses/{rid}", "GET",
                                                            authorization="Bearer sk-tenant-a"))
    assert mine.WhichOneof("response") == "request_headers"
    other = await StreamSession(rt, EXECUTOR).handle(headers(f"/v1/responses/{rid}", "GET",
                                                             authorization="Bearer sk-tenant-b"))
    assert other.immediate_response.status.code == 404


@pytest.mark.parametrize("model", ["auto", "qwen3-4b"])
async def test_another_callers_response_is_never_continued(model: str) -> None:
    """`previous_response_id` naming another tenant's response went on (to the model asked for, or the turn's own),
    and its server answered from that tenant's stored conversation."""
    rt = runtime(MATH)
    rt.affinity = MemoryPins()
    rid = await _stored_by(rt, "sk-tenant-a")
    continuation = {"model": model, "input": "and then?", "previous_response_id": rid}
    session = StreamSession(rt, EXECUTOR)
    await session.handle(headers("/v1/responses", authorization="Bearer sk-tenant-b"))
    refused = await session.handle(body(continuation))
    assert refused.immediate_response.status.code == 404
    assert _error(refused)["error"]["message"] == f"No response found with id '{rid}'."
    assert session.request.error_code == "response_not_owned"  # the log line's `error`
    session = StreamSession(rt, EXECUTOR)
    await session.handle(headers("/v1/responses", authorization="Bearer sk-tenant-a"))
    assert (await session.handle(body(continuation))).WhichOneof("response") == "request_body"


def _no_body(path: str) -> pb.ProcessingRequest:
    req = headers(path)
    req.request_headers.end_of_stream = True
    return req


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings", "/v1/chat/completions"])
async def test_a_request_without_a_body_is_a_400(path: str) -> None:
    """`curl -X POST /v1/completions` (no body) passed through to the default model, unscreened."""
    resp = await _answer(_no_body(path))
    assert resp.immediate_response.status.code == 400
    assert "needs a JSON body" in _error(resp)["error"]["message"]


async def test_a_model_only_path_refuses_another_method() -> None:
    resp = await _answer(headers("/v1/completions", "GET"))
    assert resp.immediate_response.status.code == 405


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"])
async def test_a_compressed_body_is_a_415_naming_its_encoding(path: str) -> None:
    """A gzip body reached the parser as bytes that are not JSON: a 400 `invalid_json` that told the client nothing
    of why."""
    resp = await _answer(headers(path, **{"content-encoding": "gzip"}))
    assert resp.immediate_response.status.code == 415
    error = _error(resp)["error"]
    assert "gzip" in error["message"] and (error.get("code") == "unsupported_content_encoding" or path ==
                                             "/v1/messages")
    plain = await _answer(headers(path, **{"content-encoding": "identity"}))
    assert plain.WhichOneof("response") == "request_headers"



async def test_a_large_body_is_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 MB body was parsed on the loop (up to ~1.5 s: JSON, the depth scan, the schema), and every other stream
    of the worker waited. The parse here waits until the loop, still free, releases it: on the loop it never could."""
    released = threading.Event()
    outcome: list[bool] = []

    def slow_parse(api: apis.Api, raw: bytes) -> apis.ApiRequest:
        outcome.append(released.wait(timeout=10))
        return real_parse(api, raw)

    real_parse = apis.parse
    monkeypatch.setattr(apis, "parse", slow_parse)
    session = StreamSession(runtime(MATH), EXECUTOR)
    await session.handle(headers(authorization="Bearer sk-tenant-a"))
    big = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x " * (INLINE_BODY_BYTES // 2)}]})
    task = asyncio.create_task(session.handle(pb.ProcessingRequest(
        request_body=pb.HttpBody(body=big.encode(), end_of_stream=True))))
    await asyncio.sleep(0.05)  # the loop runs: the parse is in its thread
    released.set()
    resp = await task
    assert outcome == [True] and resp.WhichOneof("response") == "request_body"


async def test_a_large_body_is_screened_off_the_event_loop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading what a request puts in front of the model (router/screening.py: every message, documents decoded)
    took 60-110 ms of a dense 4 MB body on the loop, and affinity read the whole request a second time there."""
    loop_thread, threads = threading.get_ident(), list[int]()

    def recorded(chat: Any) -> Any:
        threads.append(threading.get_ident())
        return real_screen(chat)

    real_screen = screening.screen
    monkeypatch.setattr(screening, "screen", recorded)
    rt = runtime(MATH)
    rt.affinity = MemoryPins()
    filler = "x " * (INLINE_BODY_BYTES // 4)
    history = [{"role": "user", "content": f"Integrate x^2 {filler}"}, {"role": "assistant", "content": "1/3"}]
    resp = await send(StreamSession(rt, EXECUTOR), {"model": "auto", "messages": [
        *history, {"role": "user", "content": f"And x^3? {filler}"}]})
    assert resp.WhichOneof("response") == "request_body"
    assert len(threads) == 1 and threads[0] != loop_thread
