"""The cache's decision path through real Envoy, the router process and the ONNX encoder, on Milvus Lite and
on a real Milvus server: a paraphrase is served, a hard negative is not, and after the encoder changes no
entry written under the old one is ever served (even an exact repeat whose vector would be identical).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.milvus_server import MilvusServer
from devstack.stack import ROOT, Stack
from tests.integration.test_cache_e2e import _client, ask, eventually_hit

pytestmark = pytest.mark.usefixtures("require_model")
MODEL_DIR = ROOT / "models" / "minilm"
SECRET = "verifier-e2e-shared-secret"  # one tenant namespace across router restarts


@pytest.fixture(scope="module", params=["lite", "server"])
def stack(request: pytest.FixtureRequest, make_stack: Callable[..., Stack],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if request.param == "lite":
        uri = str(tmp_path_factory.mktemp("lite") / "cache.db")
    else:
        server: MilvusServer | str = request.getfixturevalue("milvus_server")
        uri = server if isinstance(server, str) else server.uri
    collection = f"verifier_{uuid.uuid4().hex[:10]}"

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        # hot_answers 0: a repeat must reach Milvus, so an exact hit proves the write landed there.
        cfg["semantic_cache"] = {"enabled": True, "backend": "milvus", "uri": uri, "collection": collection,
                                 "hot_answers": 0}

    with pytest.MonkeyPatch.context() as env:
        env.setenv("VSR_CACHE_HMAC_SECRET", SECRET)
        yield make_stack(overrides)


def test_a_paraphrase_is_served_from_the_cache(stack: Stack) -> None:
    client = _client(stack)
    # Both must route to the same model (the cache scope): "learn Go?" alone sits under the domain head's
    # confidence threshold while its paraphrase does not, so they would go to different models.
    first, _ = ask(client, "What's the best way to learn Go programming?")
    eventually_hit(client, "What's the best way to learn Go programming?")
    calls = stack.upstream_requests()
    again, headers = ask(client, "How should I go about learning Go programming?")
    assert headers["x-vsr-cache-hit"] == "true" and again == first
    assert stack.upstream_requests() == calls


def test_a_hard_negative_goes_to_the_model(stack: Stack) -> None:
    client = _client(stack)
    eventually_hit(client, "How do I enable notifications on my phone?")
    for near_miss in ("How do I disable notifications on my phone?", "How do I enable notifications on my watch?"):
        calls = stack.upstream_requests()
        _, headers = ask(client, near_miss)
        assert headers["x-vsr-cache-hit"] == "false"
        assert stack.upstream_requests() == calls + 1


def other_encoder(tmp: Path) -> Path:
    """The same encoder in a file that differs by an appended ONNX doc string (protobuf field 6): it loads
    and embeds exactly as before, but its hash differs, as after any rebuild or fine-tune."""
    target = tmp / "minilm-other"
    shutil.copytree(MODEL_DIR, target)
    note = b"rebuilt for the cache test"
    with open(target / "model_int8.onnx", "ab") as f:
        f.write(bytes([(6 << 3) | 2, len(note)]) + note)
    return target


def test_entries_of_another_encoder_are_never_served(stack: Stack, tmp_path: Path) -> None:
    client = _client(stack)
    text = "Which HTTP status code means the resource was not found?"
    eventually_hit(client, text)
    config = yaml.safe_load(stack.config_path.read_text())
    old_dir = config["classifier"]["model_dir"]
    stack.stop_router()  # one process per Milvus Lite file: never two routers at once
    try:
        config["classifier"]["model_dir"] = str(other_encoder(tmp_path))
        stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        stack.start_router()
        for prompt in (text, "Which HTTP status code says the resource was not found?"):
            _, headers = ask(client, prompt)
            assert headers["x-vsr-cache-hit"] == "false", prompt
        eventually_hit(client, text)  # the new encoder's own entries are served
    finally:
        stack.stop_router()
        config["classifier"]["model_dir"] = old_dir
        stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        stack.start_router()

