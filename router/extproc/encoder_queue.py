"""The encoder threads' queue: long prompts cannot hold up short ones (issue 13).

A worker ran its encoder passes on one thread in arrival order, so a short prompt behind a few long ones (two
windows plus whole-text scans: 100-500 ms each at 131k characters, by load) ran out of `classifier.timeout_ms` or
found `classifier.max_pending` full, and was refused. Cutting the order was not enough: a short pass that arrives
while a long one runs still waits for all of it (measured: 8 of 96 short requests refused, tests/integration/
test_long_prompts_e2e.py). So passes go by size into two lanes, each with its own thread:

- short texts (up to SHORT_CHARS characters, about a window) in arrival order on one thread, as before (two
  threads interleaving short int8 runs on the shared cores cost 11-14 ms of router CPU per miss, one 9-10 ms, and
  one served 13-30 % more misses/s: bench/load.py --scenarios miss, 2026-11-29; more cores: more workers);
- longer texts on the other, one at a time, smaller size classes first (the powers of two of the length above
  SHORT_CHARS), in arrival order within a class.

A short pass waits only for short passes; a long one for the long ones ahead of it, and is decided by
`classifier.on_failure` at its deadline if its turn does not come. Both lanes share the `classifier.max_pending`
bound: at the bound, a pass of a smaller class than the largest waiting one takes that one's place (the most
expensive waiting pass is refused, not the newcomer). Under short prompts alone one thread runs, as before.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from router.classifier.encoder import run_onnx_on

T = TypeVar("T")
_Work = tuple[str, int]  # a pass's function (qualified name) and size class: what its time is estimated by
# Texts up to this many characters are short: one 256-token window of prose holds ~1,000-1,300.
SHORT_CHARS = 2048
# The long lane's ONNX runs go to a thread of their own this much nicer than the lane's (at most 19): where the cores
# are contended, the short lane, the event loop and gRPC's threads go first, and long passes take what they leave.
# Relative, because a router started nicer (a `nice -n 10` shell, workers at LITE_WORKER_NICE beside Lite) had its
# long lane set to an absolute 10, as high as the rest or higher (or, unprivileged above 10, a failed start). Only
# the runs: the lane's thread itself holds the GIL while it tokenises and scores, and at a low priority, descheduled
# mid-way, it would keep the GIL from the event loop and the short lane (encoder.run_onnx_on).
LONG_NICE = 10
MAX_NICE = 19


class Overloaded(RuntimeError):
    """`classifier.max_pending` encoder passes are already waiting or running, and none waiting costs more; or a
    request's history holds more unknown user turns than screen.MAX_EARLIER_PASSES."""


def size_class(chars: int) -> int:
    """0 up to SHORT_CHARS characters, then one class per doubling (131,072 characters: class 6)."""
    return max(0, (chars - 1).bit_length() - (SHORT_CHARS - 1).bit_length())


@dataclass
class _Lane:
    running: bool = False
    # A heap of (size class, arrival, ticket, the caller's deadline as a time.monotonic() value, its estimate's key).
    waiting: list[tuple[int, int, asyncio.Future[None], float, _Work]] = field(default_factory=list)


class EncoderQueue(ThreadPoolExecutor):
    """The short lane's thread (this pool) and the long lane's (a pool of its own, whose ONNX runs go to a thread
    LONG_NICE nicer); `run` gives each lane's thread to that lane's waiting call of the smallest size class first.
    Thread-safe and not tied to one event loop: a finished pass hands its thread on from that thread. Plain `submit`
    (the Classify RPC) runs on the short lane's thread, outside the lanes' order and the bound."""

    def __init__(self, thread_name_prefix: str = ""):
        super().__init__(max_workers=1, thread_name_prefix=thread_name_prefix)
        self._long_onnx = ThreadPoolExecutor(1, thread_name_prefix=f"{thread_name_prefix}-long-onnx",
                                             initializer=_lower_priority)
        self._long = ThreadPoolExecutor(1, thread_name_prefix=f"{thread_name_prefix}-long", initializer=run_onnx_on,
                                        initargs=(self._long_onnx,))
        self._lock = threading.Lock()
        self._lanes = [_Lane(), _Lane()]  # short, long
        self._arrivals = itertools.count()
        self._last_s: dict[_Work, float] = {}  # seconds the last pass of each kind and size class took

    @property
    def pending(self) -> int:
        """Passes running or waiting."""
        with self._lock:
            return self._pending()

    def _pending(self) -> int:
        return sum(lane.running + sum(not entry[2].done() for entry in lane.waiting) for lane in self._lanes)

    async def run(self, chars: int, bound: int | None, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on its lane's thread when its turn comes; `chars` sizes the work. Raises Overloaded when
        `bound` passes are already running or waiting and none waiting is of a larger class (None: no bound), and,
        for a long text, TimeoutError when, after waiting, less time is left to `deadline` (time.monotonic()) than the
        last pass of `fn` of its size class took: a pass its caller would abandon only delays the long ones behind it. (A
        short pass costs ~10 ms, too little to save at the risk of refusing one that would have made it.)"""
        rank = size_class(chars)
        work = (getattr(fn, "__qualname__", ""), rank)
        lane = self._lanes[min(rank, 1)]
        await self._turn(lane, work, bound, deadline)
        start = time.monotonic()
        try:
            future = self.submit(fn, *args) if rank == 0 else self._long.submit(fn, *args)
        except BaseException:
            self._release(lane)
            raise
        future.add_done_callback(lambda _: self._release(lane, work, time.monotonic() - start))
        return await asyncio.wrap_future(future)  # a caller that gives up leaves the pass running to its end

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._long.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._long_onnx.shutdown(wait=wait, cancel_futures=cancel_futures)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)

    async def _turn(self, lane: _Lane, work: _Work, bound: int | None, deadline: float) -> None:
        with self._lock:
            for each in self._lanes:
                each.waiting = [entry for entry in each.waiting if not entry[2].done()]
                heapq.heapify(each.waiting)
            if bound is not None and self._pending() >= bound:
                self._displace(work[1], bound)
            if not lane.running and not lane.waiting:
                lane.running = True
                return
            ticket = asyncio.get_running_loop().create_future()
            heapq.heappush(lane.waiting, (work[1], next(self._arrivals), ticket, deadline, work))
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled() and ticket.exception() is None:  # granted as the caller gave up
                self._release(lane)
            raise

    def _displace(self, rank: int, bound: int) -> None:
        """The newest waiting pass of the largest class, if larger than `rank`, is refused; else the caller is."""
        entries = [(entry, lane) for lane in self._lanes for entry in lane.waiting]
        worst = max(entries, key=lambda pair: pair[0][:2], default=None)
        if worst is None or worst[0][0] <= rank:
            raise Overloaded(f"{self._pending()} classifications already pending")
        (_, _, ticket, _, _), lane = worst
        lane.waiting.remove(worst[0])
        heapq.heapify(lane.waiting)
        self._settle(lane, ticket, Overloaded(f"{bound} classifications pending: a shorter text took this one's place"))

    def _release(self, lane: _Lane, work: _Work | None = None, took_s: float = 0.0) -> None:
        """The lane's thread is free (after a pass of `work` that took `took_s`): its next waiting ticket with time
        for a pass gets it, else it goes idle. The last pass of the same function and size class is the estimate (an
        encoder pass of 131k characters takes 100-500 ms, a PII rules scan of them up to ~60 ms: one estimate for both
        refused scans that had time); a lane that went idle starts the next pass whatever the estimate, so a high one
        is measured again rather than refusing its kind for ever."""
        now = time.monotonic()
        with self._lock:
            if work is not None:
                self._last_s[work] = took_s
            while lane.waiting:
                rank, _, ticket, deadline, waiting = heapq.heappop(lane.waiting)
                if ticket.done():
                    continue
                if rank > 0 and deadline - now < self._last_s.get(waiting, 0.0):  # long: a wasted pass: 0.1-0.5 s
                    last_ms = self._last_s[waiting] * 1000
                    self._settle(lane, ticket, TimeoutError(f"{(deadline - now) * 1000:.0f} ms left, the last pass of "
                                                            f"this kind and size took {last_ms:.0f} ms"))
                elif self._settle(lane, ticket, None):
                    return
            lane.running = False

    def _settle(self, lane: _Lane, ticket: asyncio.Future[None], error: Exception | None) -> bool:
        """Grant `ticket` the lane's thread (`error` None) or refuse it, on its own loop; False when that loop is
        closed (its caller will never run)."""
        def settle() -> None:
            if ticket.done():
                if error is None:  # cancelled before the grant arrived: `_turn` never saw it, the thread passes on
                    self._release(lane)
            elif error is None:
                ticket.set_result(None)
            else:
                ticket.set_exception(error)

        try:
            ticket.get_loop().call_soon_threadsafe(settle)
        except RuntimeError:
            return False
        return True


def _lower_priority() -> None:
    """Runs on the long lane's ONNX thread as it starts: that thread alone goes LONG_NICE nicer than the one that
    started it (the long lane's), whose nice it inherited (Linux: a thread id is a pid; raising one's nice needs no
    privilege)."""
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, thread) + LONG_NICE))
