"""Cache backend health from the traffic the cache already carries, not from a probe query.

A `count(*)` probe under write load timed out and flipped `/readyz` to 503 while lookups were fine.
Every lookup and write already tells whether the backend answers, so health is read from them:
`streak` consecutive failures mark it down and as many consecutive successes mark it up again (a backend
that answers some lookups in time and misses others does not flap the log). Only when the cache has
been idle longer than the probe interval does the probe send one cheap key lookup of its own.
Transitions are logged once and exported as `vsr_cache_backend_up`.

It is also the breaker: while the backend is marked down, a hanging Milvus cost every cacheable request the whole
lookup budget (50 ms) for as long as the hang lasted. Now lookups skip it at once (`admit`), except one probe every
`probe_every_s`, and writes are dropped; the first probe that answers lets traffic through again (half open), and
any failure before the streak of successes closes the gate again.

A call over its budget is a miss for its request, but a failure of the backend only when the backend answered
nothing in the last `silent_s` (2 s), or, over at least SLOW_CALLS calls in that time, less than a quarter
(SLOW_SHARE) of them: a hanging Milvus answers nothing, a slow one most calls (a server frozen 0.4 s at a time in
tests/integration/test_cache_milvus_facade.py: ~40 %), and a near-dead one that answers 1 call in 40 is down (with
the first rule alone it stayed up and every lookup paid its whole budget). A backend coming back (probes once a
second, a few calls) is judged by the first rule only, so its slow first calls do not keep it down. Under 16 clients on 2
cores the loop, the read pool and Milvus Lite all waited for CPU, lookups timed out in bursts and the breaker opened
2-12 times a minute on a backend answering ~60 lookups a second (router/cache/README.md, "Slow is not down").
An error (refused, reset, a bad answer) counts at once, as does a timeout before the backend ever answered.
"""

from __future__ import annotations

import time
from collections import deque

import structlog

from router.observability import metrics

log = structlog.get_logger(__name__)
SLOW_SHARE = 0.25  # a timeout is a failure of the backend when it answered less than this share of recent calls,
SLOW_CALLS = 20  # counted over at least this many


class BackendHealth:
    """Up/down from consecutive outcomes; updated on the event loop, read from any thread."""

    def __init__(self, streak: int = 5, probe_every_s: float = 1.0, silent_s: float = 2.0) -> None:
        self.streak = streak
        self.probe_every_s = probe_every_s
        self.silent_s = silent_s
        self._next_probe = 0.0
        self.up = True
        self.failures = 0
        self.successes = 0
        self.answered = False  # up is assumed at start; the detail says whether the backend ever answered
        self.last_error = ""
        self.last_activity = time.monotonic()
        self._recent: deque[tuple[float, bool]] = deque()  # (when, answered) of the calls of the last silent_s
        metrics.set_cache_backend_up(True)

    def _note(self, now: float, answered: bool) -> None:
        """Record a call among the last `silent_s`'s."""
        self._recent.append((now, answered))
        while self._recent[0][0] < now - self.silent_s:
            self._recent.popleft()

    def _only_slow(self) -> bool:
        """A timeout now is the backend being slow, not down: it answered lately, and most of a busy window's calls."""
        answers = sum(ok for _, ok in self._recent)
        return answers > 0 and (len(self._recent) < SLOW_CALLS or answers >= SLOW_SHARE * len(self._recent))

    def success(self) -> None:
        self.last_activity = time.monotonic()
        self._note(self.last_activity, True)
        self.failures = 0
        self.successes += 1
        self.answered = True
        if not self.up and self.successes >= self.streak:
            self.up = True
            metrics.set_cache_backend_up(True)
            log.info("cache_backend_up")

    def failure(self, error: str, timeout: bool = False) -> None:
        """A failed call; a `timeout` while the backend still answers SLOW_SHARE of its calls is only slow, and
        leaves the streaks."""
        self.last_activity = time.monotonic()
        self._note(self.last_activity, False)
        if timeout and self.answered and self._only_slow():
            return
        self.failures += 1
        self.successes = 0
        self.last_error = error
        if self.up and self.failures >= self.streak:
            self.up = False
            metrics.set_cache_backend_up(False)
            metrics.record_cache_backend_down()
            log.warning("cache_backend_down", error=error, effect="serving uncached until it answers again")

    @property
    def changing(self) -> bool:
        """Between states: failing while marked up, or answering while marked down (half open)."""
        return self.failures > 0 if self.up else self.successes > 0

    @property
    def blocked(self) -> bool:
        """Marked down and nothing has answered since: calls would only wait out their budget."""
        return not self.up and self.successes == 0

    def admit(self) -> bool:
        """Whether a lookup may call the backend: yes unless blocked, then one probe per `probe_every_s`."""
        if not self.blocked:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_every_s
        return True

    def idle_for(self) -> float:
        return time.monotonic() - self.last_activity

    def detail(self) -> str:
        """What /readyz shows: whether requests use the cache, and how far the breaker is. It said "answering" for a
        backend that had never answered (a Lite file in a read-only directory: ~50 s, until `streak` probes had
        failed), and "serving without cache: failing (1 in a row)" after one slow probe while the breaker was closed
        and lookups still hit the cache (trial 14)."""
        error = f": {self.last_error}" if self.failures else ""
        if not self.up:
            if self.successes:
                return (f"breaker half open: backend answering again, lookups try it ({self.successes} of "
                        f"{self.streak} answers in a row close the breaker)")
            never = "backend not answered since start, " if not self.answered else ""
            return (f"serving without cache: {never}breaker open ({self.failures} failed calls in a row), a probe lookup "
                    f"a second{error}")
        streak = f"{self.failures} failed call{'s' if self.failures > 1 else ''} in a row, breaker closed (opens at {self.streak})"
        if not self.answered:
            if self.failures:
                return f"backend not answered since start: {streak}, lookups still try it{error}"
            return "backend not asked yet"
        if self.failures:
            return f"serving from the cache: {streak}{error}"
        return "backend answering"
