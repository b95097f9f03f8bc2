"""One encoder pass per request, shared by the classifier heads and the cache key.

Drives a StreamSession in-process with the real ONNX encoder and the real memory cache through
the same ProcessingRequest sequence Envoy sends, and counts the encoder's ONNX runs.
"""

from __future__ import annotations

import json

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from devstack.stack import ROOT
from router.config import load_config
from router.extproc.encoder_queue import EncoderQueue
from router.extproc.session import StreamSession
from router.runtime import Runtime, build_runtime

pytestmark = pytest.mark.usefixtures("require_model")


def _headers(pairs: dict[str, str], end: bool = False) -> pb.HttpHeaders:
    values = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=values), end_of_stream=end)


async def _exchange(runtime: Runtime, executor: EncoderQueue, text: str) -> list[pb.ProcessingResponse]:
    """One request as Envoy streams it; the upstream answer is only sent when the router routed."""
    session = StreamSession(runtime, executor)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()
    out = [await session.handle(pb.ProcessingRequest(request_headers=_headers({
        ":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer sk-one-pass"})))]
    out.append(await session.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))))
    if out[-1].HasField("immediate_response"):
        return out
    answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "qwen3-4b",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Use the reset link."},
                           "finish_reason": "stop"}]}
    out.append(await session.handle(pb.ProcessingRequest(response_headers=_headers(
        {":status": "200", "content-type": "application/json"}))))
    out.append(await session.handle(pb.ProcessingRequest(response_body=pb.HttpBody(
        body=json.dumps(answer).encode(), end_of_stream=True))))
    await runtime.cache.flush()
    return out


async def test_classification_and_cache_share_one_encoder_pass() -> None:
    cfg = load_config(ROOT / "config" / "config.yaml")
    cfg = cfg.model_copy(update={"semantic_cache": cfg.semantic_cache.model_copy(update={"backend": "memory"})})
    runtime = build_runtime(cfg)
    encoder = runtime.classifier.inner.encoder  # type: ignore[union-attr]
    with EncoderQueue() as executor:
        before = encoder.runs
        miss = await _exchange(runtime, executor, "How do I reset my password?")
        assert encoder.runs - before == 1  # classified, looked up and stored on one pass
        assert not miss[1].HasField("immediate_response")

        before = encoder.runs
        hit = await _exchange(runtime, executor, "How can I reset my password?")
        assert encoder.runs - before == 1  # classified and answered from the cache on one pass
        immediate = hit[1].immediate_response
        assert immediate.status.code == 200
        assert json.loads(immediate.body)["choices"][0]["message"]["content"] == "Use the reset link."

        before = encoder.runs
        repeat = await _exchange(runtime, executor, "How can I reset my password?")
        assert encoder.runs - before == 0  # a repeated prompt reuses its classification: no encoder pass
        answer = json.loads(repeat[1].immediate_response.body)
        assert answer["choices"][0]["message"]["content"] == "Use the reset link."
    await runtime.close()
