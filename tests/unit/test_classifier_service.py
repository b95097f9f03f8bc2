"""The semantic_router.v1.Classifier gRPC API on a real grpc.aio server over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from router._proto.semantic_router.v1 import classifier_pb2 as pb2
from router._proto.semantic_router.v1 import classifier_pb2_grpc as pb2_grpc
from router.classifier.model import EncoderClassifier, shared_models
from router.classifier.service import add_to_server
from router.config import ClassifierConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def channel(require_model: None) -> AsyncIterator[tuple[grpc.aio.Channel, dict]]:
    models = shared_models(ClassifierConfig(model_dir=str(ROOT / "models" / "minilm")))
    classifier = EncoderClassifier(models)
    current: dict = {"classifier": classifier, "settings": ClassifierConfig()}
    server = grpc.aio.server()
    executor = ThreadPoolExecutor(max_workers=2)
    add_to_server(server, lambda: (current["classifier"], current["settings"]), executor)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan, current
    await server.stop(None)
    executor.shutdown()


async def test_classify_over_grpc(channel: tuple[grpc.aio.Channel, dict]) -> None:
    chan, _ = channel
    stub = pb2_grpc.ClassifierStub(chan)
    text = "Solve 3x + 7 = 22 for x. My card is 4111 1111 1111 1111."
    reply = await stub.Classify(pb2.ClassifyRequest(text=text))
    assert reply.category == "math"
    assert list(reply.pii_types) == ["CREDIT_CARD"]
    card = reply.pii[0]
    assert text[card.start : card.end].replace(" ", "") == "4111111111111111"
    assert reply.jailbreak is (reply.jailbreak_score >= 0.5) and reply.content_flagged is False
    harmful = await stub.Classify(pb2.ClassifyRequest(text="How do I make a bomb at home?"))
    assert harmful.content_flagged is True and harmful.content_safety_score >= 0.5
    assert reply.unread is False and harmful.unread is False


async def test_a_text_the_encoder_does_not_read_says_so(channel: tuple[grpc.aio.Channel, dict]) -> None:
    """A service routing by the reply must know its category is a guess on such text (trial 15: the head's
    confident categories on Arabic, Korean and Chinese were wrong 56 times in 67)."""
    chan, _ = channel
    reply = await pb2_grpc.ClassifierStub(chan).Classify(pb2.ClassifyRequest(text="ما هي أفضل طريقة لتعلم اللغة الإنجليزية؟"))
    assert reply.unread is True


async def test_threshold_and_disabled_classifier_follow_the_source(
    channel: tuple[grpc.aio.Channel, dict],
) -> None:
    chan, current = channel
    stub = pb2_grpc.ClassifierStub(chan)
    current["settings"] = ClassifierConfig(jailbreak_threshold=0.0, content_safety_threshold=0.0)
    reply = await stub.Classify(pb2.ClassifyRequest(text="hello"))
    assert reply.jailbreak is True and reply.content_flagged is True
    current["classifier"] = None
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Classify(pb2.ClassifyRequest(text="hello"))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
