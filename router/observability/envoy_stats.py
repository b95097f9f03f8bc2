"""Envoy's count of requests it sent on without the router, exported on the router's /metrics.

When the router is down, frozen or slower than `envoy.message_timeout_ms`, Envoy forwards the request unrouted to
the default model (`failure_mode_allow`): the router never sees it, and Envoy counts it only on its admin port,
which is bound to 127.0.0.1 and scraped by nothing. Read at scrape time from that port (Envoy runs beside the
router: the same Pod, Compose network or machine), so the counter survives router restarts as Envoy's does.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from router.envoy_config import STAT_PREFIX

FAILED_OPEN = f"http.{STAT_PREFIX}.ext_proc.failure_mode_allowed"
TIMEOUT_S = 0.5  # a scrape must not hang on a busy Envoy


def admin_reader(admin_port: int) -> Callable[[], dict[str, int]]:
    """Envoy's ext_proc counters from its admin `/stats` (JSON)."""
    url = f"http://127.0.0.1:{admin_port}/stats?format=json&filter=%5Ehttp%5C.{STAT_PREFIX}%5C.ext_proc%5C."

    def read() -> dict[str, int]:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            stats = json.load(answer).get("stats", [])
        return {s["name"]: int(s["value"]) for s in stats if isinstance(s, dict) and "value" in s}

    return read


class EnvoyFailedOpen(Collector):
    """`vsr_envoy_failed_open_total`, absent while Envoy's admin port does not answer (no stale value)."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            value = self.read().get(FAILED_OPEN)
        except (OSError, ValueError):
            return
        if value is not None:
            yield CounterMetricFamily("vsr_envoy_failed_open", "Requests Envoy sent on unrouted to the default model "
                                      "because the router did not answer (down, frozen, past message_timeout_ms).",
                                      value=value)
