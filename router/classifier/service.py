"""gRPC servicer for semantic_router.v1.Classifier, registered on the router's grpc.aio server.

The classifier is looked up per call through `source`, so a config reload (new example head, new threshold)
applies to the next call. The blocking ONNX pass runs in the given executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import grpc

from router._proto.semantic_router.v1 import classifier_pb2 as pb2
from router._proto.semantic_router.v1 import classifier_pb2_grpc as pb2_grpc
from router.config import ClassifierConfig
from router.signals import Classification, Classifier

# Returns the classifier currently serving (None when disabled) and the settings whose thresholds it is judged by.
ClassifierSource = Callable[[], tuple[Classifier | None, ClassifierConfig]]

MAX_TEXT_CHARS = 1 << 22


def to_response(result: Classification, settings: ClassifierConfig) -> Any:
    return pb2.ClassifyResponse(
        category=result.category or "",
        confidence=result.confidence,
        jailbreak=result.jailbreak_score >= settings.jailbreak_threshold,
        jailbreak_score=result.jailbreak_score,
        content_flagged=result.content_safety_score >= settings.content_safety_threshold,
        content_safety_score=result.content_safety_score,
        pii_types=sorted(result.pii_types),
        pii=[pb2.PIIFinding(type=f.type, start=f.start, end=f.end, score=f.score) for f in result.pii],
        source=result.source,
        unread=not result.encoder_reads,
    )


def _refuse(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str) -> Any:
    """An empty reply carrying an error status (the call fails on the client with `code`)."""
    context.set_code(code)
    context.set_details(details)
    return pb2.ClassifyResponse()


def add_to_server(
    server: grpc.aio.Server, source: ClassifierSource, executor: Executor | None = None
) -> None:
    """Register the Classify RPC on `server` (call before server.start())."""

    class ClassifierServicer(pb2_grpc.ClassifierServicer):
        async def Classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            classifier, settings = source()
            if classifier is None:
                return _refuse(
                    context, grpc.StatusCode.UNAVAILABLE, "the classifier is disabled in this config"
                )
            if len(request.text) > MAX_TEXT_CHARS:
                return _refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"text over {MAX_TEXT_CHARS} chars")
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(executor, classifier.classify, request.text)
            return to_response(result, settings)

    pb2_grpc.add_ClassifierServicer_to_server(ClassifierServicer(), server)  # type: ignore[no-untyped-call]
