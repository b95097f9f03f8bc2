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

A call over its budget is a miss for its request, but a failure of the backend only once the backend has answered
nothing for `silent_s` (2 s): a hanging Milvus answers nothing, a slow one answers most calls. Under 16 clients on 2
cores the loop, the read pool and Milvus Lite all waited for CPU, lookups timed out in bursts and the breaker opened
2-12 times a minute on a backend answering ~60 lookups a second (router/cache/README.md, "Slow is not down").
An error (refused, reset, a bad answer) counts at once, as does a timeout before the backend ever answered.
"""

from __future__ import annotations

import time

import structlog

from router.observability import metrics

log = structlog.get_logger(__name__)


class BackendHealth:
    """Up/down from consecutive outcomes; updated on the event loop, read from any thread."""

    def __init__(self, streak: int = 5, probe_every_s: float = 1.0, silent_s: float = 2.0) -> None:
        self.streak = streak
        self.probe_every_s = probe_every_s
        self.silent_s = silent_s
        self.last_answer = 0.0
        self._next_probe = 0.0
        self.up = True
        self.failures = 0
        self.successes = 0
        self.answered = False  # up is assumed at start; the detail says whether the backend ever answered
        self.last_error = ""
        self.last_activity = time.monotonic()
        metrics.set_cache_backend_up(True)

    def success(self) -> None:
        self.last_activity = self.last_answer = time.monotonic()
        self.failures = 0
        self.successes += 1
        self.answered = True
        if not self.up and self.successes >= self.streak:
            self.up = True
            metrics.set_cache_backend_up(True)
            log.info("cache_backend_up")

    def failure(self, error: str, timeout: bool = False) -> None:
        """A failed call; a `timeout` while the backend still answers others is only slow, and leaves the streaks."""
        self.last_activity = time.monotonic()
        if timeout and self.answered and self.last_activity - self.last_answer < self.silent_s:
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
        """What /readyz shows. It said "answering" for a backend that had never answered (a Lite file in a read-only
        directory: ~50 s, until `streak` probes had failed) and while failures added up towards the streak."""
        if self.failures:
            return f"failing ({self.failures} in a row): {self.last_error}"
        return "answering" if self.answered else "not asked yet"
