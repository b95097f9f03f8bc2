"""Text the encoder does not read (Arabic here) through real Envoy, the router, the ONNX encoder and Milvus Lite with
the openai SDK: exact repeats only. Trial 15: once "what is the best way to ..." was stored under a key, most later
Arabic questions of that frame were served its answer (cosine 0.78-0.91, pair model 0.94-0.97)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devstack.stack import Stack
from tests.integration.test_cache_e2e import _client, _metric, _request_lines, ask, eventually_hit

pytestmark = pytest.mark.usefixtures("require_model")
LEARN_ENGLISH = "ما هي أفضل طريقة لتعلم اللغة الإنجليزية بسرعة؟"  # what is the best way to learn English fast?
SECOND = ["ما هي أفضل طريقة لإنقاص الوزن بسرعة؟",  # ... to lose weight fast? (served LEARN_ENGLISH's answer)
          "ما هي أهم المعالم السياحية في القاهرة؟"]  # what are the main tourist sights of Cairo? (served it too)


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    uri = str(tmp_path_factory.mktemp("lite") / "cache.db")

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["classifier"]["enabled"] = True
        # hot_answers 0: the repeat must reach Milvus Lite, so its hit proves the entry landed there.
        cfg["semantic_cache"] = {"enabled": True, "backend": "milvus", "uri": uri, "hot_answers": 0}

    return make_stack(overrides)


@pytest.mark.parametrize("second", SECOND)
def test_another_arabic_question_of_the_same_frame_is_a_miss_and_an_exact_repeat_hits(
        stack: Stack, second: str) -> None:
    client = _client(stack, f"sk-unread-{SECOND.index(second)}")
    first, headers = ask(client, LEARN_ENGLISH)
    assert headers["x-vsr-cache-hit"] == "false"
    again, headers = eventually_hit(client, LEARN_ENGLISH)  # the entry has landed; an exact repeat is served
    assert again == first and float(headers["x-vsr-cache-similarity"]) == 1.0
    calls = stack.upstream_requests()
    answer, headers = ask(client, second)
    assert headers["x-vsr-cache-hit"] == "false" and answer != first and "x-vsr-cache-skip" not in headers
    # the request line tells the operator no semantic search was made (it said `miss`, as for any miss)
    line = _request_lines(stack, [headers["x-request-id"]])[headers["x-request-id"]]
    assert (line["cache"], line["cache_miss"]) == ("miss", "unread")
    assert stack.upstream_requests() == calls + 1
    assert _metric(stack, 'vsr_cache_events_total{event="miss",reason="unread"}') >= 1
