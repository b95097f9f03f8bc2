"""The encoder thread's queue (router/extproc/encoder_queue.py): short texts first, the costliest refused at the bound."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from router.classifier.encoder import Encoder
from router.extproc.encoder_queue import LONG_NICE, MAX_NICE, EncoderQueue, Overloaded, size_class

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "minilm"

FAR = math.inf  # a deadline never reached


def test_size_classes_double_above_a_window_of_text() -> None:
    assert [size_class(n) for n in (0, 1, 2048, 2049, 4096, 4097, 131_072)] == [0, 0, 0, 1, 1, 2, 6]


async def _occupied(queue: EncoderQueue, chars: int) -> tuple[asyncio.Task[bool], threading.Event]:
    """The lane of `chars` held by a pass until the event is set."""
    gate = threading.Event()
    task = asyncio.create_task(queue.run(chars, None, FAR, gate.wait, 5))
    while queue.pending == 0:
        await asyncio.sleep(0.001)
    return task, gate


async def test_a_short_text_does_not_wait_for_a_long_one() -> None:
    queue = EncoderQueue()
    running, gate = await _occupied(queue, 131_072)
    assert await asyncio.wait_for(queue.run(300, None, FAR, str, "short"), 2) == "short"
    assert not running.done()
    gate.set()
    await running
    queue.shutdown()


async def test_long_texts_go_by_size_one_at_a_time_short_ones_by_arrival() -> None:
    queue, order = EncoderQueue(), list[str]()
    held = [await _occupied(queue, chars) for chars in (100_000, 100)]
    waiting = [asyncio.create_task(queue.run(chars, None, FAR, order.append, name))
               for name, chars in (("long", 131_072), ("short 1", 2000), ("mid", 8_000), ("short 2", 300))]
    await asyncio.sleep(0.01)
    assert order == []
    for task, gate in held:
        gate.set()
        await task
    await asyncio.gather(*waiting)
    assert [name for name in order if name.startswith("short")] == ["short 1", "short 2"]
    assert [name for name in order if not name.startswith("short")] == ["mid", "long"]
    assert queue.pending == 0
    queue.shutdown()


async def test_at_the_bound_a_short_text_displaces_the_costliest_waiting_one() -> None:
    queue = EncoderQueue()
    running, gate = await _occupied(queue, 131_072)
    first_long = asyncio.create_task(queue.run(131_072, 3, FAR, str, "first long"))
    last_long = asyncio.create_task(queue.run(131_072, 3, FAR, str, "last long"))
    await asyncio.sleep(0.01)
    short = asyncio.create_task(queue.run(100, 3, FAR, str, "short"))
    with pytest.raises(Overloaded):  # the newest of the costliest waiting passes gave its place
        await last_long
    assert await short == "short"
    with pytest.raises(Overloaded):  # a pass no cheaper than any waiting one is refused itself
        await queue.run(131_072, 2, FAR, str, "another long")
    gate.set()
    assert await asyncio.gather(running, first_long) == [True, "first long"]
    assert queue.pending == 0
    queue.shutdown()


async def test_a_caller_that_gives_up_waiting_passes_its_turn_on() -> None:
    queue = EncoderQueue()
    running, gate = await _occupied(queue, 100)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await queue.run(100, None, FAR, str, "given up")
    later = asyncio.create_task(queue.run(100, None, FAR, str, "later"))
    gate.set()
    assert await asyncio.gather(running, later) == [True, "later"]
    assert queue.pending == 0
    queue.shutdown()


async def test_a_waiting_pass_without_time_for_its_size_is_refused_unrun() -> None:
    queue, ran = EncoderQueue(), list[str]()

    def slow(name: str) -> None:
        time.sleep(0.2)
        ran.append(name)

    await queue.run(131_072, None, FAR, slow, "measured")  # an idle lane starts a pass whatever the estimate
    running, gate = await _occupied(queue, 60_000)  # another size class: its quick pass leaves the estimate alone
    hurried = asyncio.create_task(queue.run(131_072, None, time.monotonic() + 0.1, slow, "hurried"))
    patient = asyncio.create_task(queue.run(131_072, None, FAR, slow, "patient"))
    await asyncio.sleep(0.01)
    gate.set()
    with pytest.raises(TimeoutError):  # under 0.1 s left, the last pass of its size took 0.2 s
        await hurried
    await asyncio.gather(running, patient)
    assert ran == ["measured", "patient"]
    queue.shutdown()


async def test_a_quick_kind_of_pass_is_not_refused_by_a_slow_kind_of_its_size() -> None:
    """A PII rules scan of a long conversation (a fraction of an encoder pass) is estimated by its own last run:
    one estimate per size class refused a scan with time to spare after an encoder pass, and `on_failure` decided
    the request (closed: 503; open: guards skipped)."""
    queue = EncoderQueue()

    def encode(gate: threading.Event) -> None:
        gate.wait(5)

    gate = threading.Event()
    encoding = asyncio.create_task(queue.run(100_000, None, FAR, encode, gate))  # 0.5 s: the class's last pass
    while queue.pending == 0:
        await asyncio.sleep(0.001)
    scan = asyncio.create_task(queue.run(100_000, None, time.monotonic() + 0.7, str, "scanned"))
    await asyncio.sleep(0.5)
    gate.set()
    await encoding
    assert await scan == "scanned"  # under 0.2 s left: enough for a scan, not for an encoder pass
    queue.shutdown()


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class _NiceRecordingSession:
    """An encoder's ONNX session that notes the nice value of the thread each run is made on."""

    def __init__(self, session: Any):
        self.session, self.run_nice = session, list[int]()

    def run(self, *args: Any) -> Any:
        self.run_nice.append(_nice())
        return self.session.run(*args)


async def test_a_long_pass_runs_its_onnx_work_nicer_and_the_rest_at_the_router_s_priority() -> None:
    """Where the cores are contended, short prompts' passes go first: a long prompt's encoder runs are made on a thread
    LONG_NICE nicer than the router's, whatever the router's own nice (a router started under `nice -n 10`, or
    workers beside Lite, got an absolute 10: no lower priority than the short lane's). Its tokenising, heads and
    rules, which hold the GIL, stay at the router's priority: a thread descheduled holding the GIL stalls the loop."""
    base = _nice()
    if base >= MAX_NICE:
        pytest.skip("the test runs at the highest nice value: nothing is nicer")
    encoder = Encoder(MODEL_DIR)
    session = _NiceRecordingSession(encoder._session)
    encoder._session = session
    queue = EncoderQueue()

    def classify(text: str) -> int:
        encoder.read_middle(text, encoder.encode(text))  # both runs of a long prompt's pass
        return _nice()

    long_text = "The quarterly report covers revenue, costs and the roadmap for the storage product. " * 100
    assert await queue.run(len(long_text), None, FAR, classify, long_text) == base
    assert session.run_nice == [min(MAX_NICE, base + LONG_NICE)] * 2
    session.run_nice.clear()
    assert await queue.run(30, None, FAR, classify, "What is the capital of France") == base
    assert session.run_nice == [base]
    queue.shutdown()
