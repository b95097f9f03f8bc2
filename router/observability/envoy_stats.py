"""Envoy's count of requests the router did not answer, and of those it refused because it was full, exported on
the router's /metrics; and each model's replicas Envoy sends to (a frozen model server is seen only there).

When the router is down, frozen or slower than `envoy.message_timeout_ms`, Envoy refuses the request (503
`router_unavailable`, the default) or, with `failure_mode_allow: true`, forwards it unrouted and unguarded to the
default model. The router never sees either, and Envoy counts them only on its admin port, which is bound to
127.0.0.1 and scraped by nothing. Read at scrape time from that port (Envoy runs beside the router: the same Pod,
Compose network or machine), so the counters survive router restarts as Envoy's do.

A request past `envoy.max_requests` gets no router stream (the router cluster's circuit breaker overflows) and Envoy
counts that as a failed router call too: it was counted as the router being unavailable, and the
SemanticRouterUnavailable alert fired on plain overload. It is `vsr_envoy_overloaded_total` instead.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from router.config import RouterConfig
from router.envoy_config import EXT_PROC_CLUSTER, STAT_PREFIX

_EXT_PROC = f"http.{STAT_PREFIX}.ext_proc."
FAILED_OPEN = _EXT_PROC + "failure_mode_allowed"
# Every router call that failed (gRPC error: down, reset) or timed out, whatever Envoy then did with the request.
STREAMS_FAILED = _EXT_PROC + "streams_failed"
MESSAGE_TIMEOUTS = _EXT_PROC + "message_timeouts"
# Requests Envoy refused as full (503 gateway_overloaded), by the limit they hit: no router stream to be had (the
# active and pending request breakers of its cluster), or the overload manager's heap budget.
OVERFLOWS = {f"cluster.{EXT_PROC_CLUSTER}.upstream_rq_active_overflow": "max_requests",
             f"cluster.{EXT_PROC_CLUSTER}.upstream_rq_pending_overflow": "max_requests",
             f"http.{STAT_PREFIX}.downstream_rq_overload_close": "max_heap_mb"}
UPTIME = "server.uptime"  # seconds since Envoy started: less than at the last scrape means it restarted
TIMEOUT_S = 0.5  # a scrape must not hang on a busy Envoy


def admin_reader(admin_port: int) -> Callable[[], dict[str, int]]:
    """Envoy's ext_proc counters, OVERFLOWS and UPTIME from its admin `/stats` (JSON)."""
    return _reader(admin_port, [re.escape(_EXT_PROC), *(re.escape(name) + "$" for name in [*OVERFLOWS, UPTIME])])


def membership(cluster: str) -> tuple[str, str]:
    """Envoy's gauges of a cluster's healthy replicas (neither failing health checks nor ejected) and of all."""
    return f"cluster.{cluster}.membership_healthy", f"cluster.{cluster}.membership_total"


def health_reader(admin_port: int, clusters: Iterable[str]) -> Callable[[], dict[str, int]]:
    """The `membership` gauges of these clusters."""
    return _reader(admin_port, [re.escape(name) + "$" for cluster in clusters for name in membership(cluster)])


def envoy_collectors(cfg: RouterConfig) -> list[Collector]:
    """What the router exports from the Envoy beside it (read from `envoy.admin_port` at scrape time)."""
    port = cfg.envoy.admin_port
    clusters = {model: cfg.cluster_of(model) for model in cfg.models}
    return [EnvoyRouterFailures(admin_reader(port)), EnvoyModelHealth(health_reader(port, clusters.values()), clusters)]


def _reader(admin_port: int, patterns: list[str]) -> Callable[[], dict[str, int]]:
    url = f"http://127.0.0.1:{admin_port}/stats?format=json&filter=" + urllib.parse.quote(f"^({'|'.join(patterns)})")

    def read() -> dict[str, int]:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            stats = json.load(answer).get("stats", [])
        return {s["name"]: int(s["value"]) for s in stats if isinstance(s, dict) and "value" in s}

    return read


class EnvoyRouterFailures(Collector):
    """`vsr_envoy_failed_closed_total`, `vsr_envoy_failed_open_total` and `vsr_envoy_overloaded_total{limit}`,
    absent while Envoy's admin port does not answer (no stale value).

    Envoy has no stat of its own for a refusal (`immediate_responses_sent` also counts the router's own blocks):
    each failed or timed-out router call either failed open (`failure_mode_allowed`) or was refused, so the
    refusals are the difference (each call adds 1 to the failures and 0 or 1 to the fail-opens), less the calls that
    failed only because Envoy was full (breaker overflows). Clamped at 0: with failure_mode_allow an overflow fails
    open, and an Envoy version may count a fail-open elsewhere.

    Envoy's counters start from 0 when Envoy restarts, and the series mirrored them: they went backwards in a live
    router (trial 14: 3, then 0), which Prometheus reads as a reset of the router. So each Envoy counter is added up
    here by its increases, a drop meaning a restarted Envoy that has counted its new value since; the series never
    decrease (a difference of two counters read at slightly different moments cannot pull them back either).
    """

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self.read = read
        self._last: dict[str, int] = {}  # Envoy's counters at the last scrape
        self._totals: dict[str, int] = {}  # their increases added up since this router started
        self._exported: dict[tuple[str, str], int] = {}  # the highest value each series has shown
        self._lock = threading.Lock()  # scrapes run in the metrics server's threads

    def _since_start(self, stats: dict[str, int]) -> dict[str, int]:
        """Each counter's increases across Envoy restarts: after one (its uptime or a counter went back) a counter's
        whole value is its increase."""
        uptime, last_uptime = stats.pop(UPTIME, None), self._last.pop(UPTIME, None)
        restarted = (uptime is not None and last_uptime is not None and uptime < last_uptime) or any(
            value < self._last.get(name, 0) for name, value in stats.items())
        for name, value in stats.items():
            increase = value if restarted else value - self._last.get(name, 0)
            self._totals[name] = self._totals.get(name, 0) + increase
        self._last = {**stats, **({} if uptime is None else {UPTIME: uptime})}
        return dict(self._totals)

    def _monotonic(self, name: str, label: str, value: int) -> int:
        self._exported[name, label] = max(value, self._exported.get((name, label), 0))
        return self._exported[name, label]

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            stats = self.read()
        except (OSError, ValueError):
            return
        if FAILED_OPEN not in stats:
            return
        with self._lock:
            families = self._families(self._since_start(stats))
        yield from families

    def _families(self, stats: dict[str, int]) -> list[CounterMetricFamily]:
        failed = stats.get(STREAMS_FAILED, 0) + stats.get(MESSAGE_TIMEOUTS, 0)
        full = {"max_requests": 0, "max_heap_mb": 0}
        for name, limit in OVERFLOWS.items():
            full[limit] += stats.get(name, 0)
        closed = self._monotonic("failed_closed", "", max(failed - stats[FAILED_OPEN] - full["max_requests"], 0))
        refused = CounterMetricFamily("vsr_envoy_failed_closed", "Requests Envoy refused (503 router_unavailable) or cut "
                                  "because the router did not answer (down, frozen, past message_timeout_ms). Envoy's "
                                  "counts added up across Envoy restarts (those since the last scrape before one "
                                  "are lost).", value=closed)
        overloaded = CounterMetricFamily("vsr_envoy_overloaded", "Requests Envoy refused because it was full (503 "
                                         "gateway_overloaded): past envoy.max_requests in flight (with "
                                         "failure_mode_allow sent on unrouted instead), or its heap past 90 % of "
                                         "envoy.max_heap_mb. Added up across Envoy restarts.", labels=["limit"])
        for limit, count in full.items():
            overloaded.add_metric([limit], self._monotonic("overloaded", limit, count))
        failed_open = CounterMetricFamily("vsr_envoy_failed_open", "Requests Envoy sent on unrouted to the default model "
                                  "because the router did not answer (failure_mode_allow: true). Added up across "
                                  "Envoy restarts.", value=self._monotonic("failed_open", "", stats[FAILED_OPEN]))
        return [refused, overloaded, failed_open]


class EnvoyModelHealth(Collector):
    """`vsr_model_endpoints_healthy{model}` and `vsr_model_endpoints{model}`: the replicas Envoy sends a model's
    requests to, and all it has. A frozen model server fails no request (it accepts connections and never answers), so
    only Envoy's health checks (`models.<name>.health_check`) mark it down; this shows that they did. Absent while
    Envoy's admin port does not answer."""

    def __init__(self, read: Callable[[], dict[str, int]], clusters: dict[str, str]) -> None:
        self.read = read
        self.clusters = clusters  # model -> its Envoy cluster

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self.read()
        except (OSError, ValueError):
            return
        healthy = GaugeMetricFamily("vsr_model_endpoints_healthy", "Replicas of the model Envoy routes to: neither "
                                    "failing their health checks (models.<name>.health_check) nor ejected by outlier "
                                    "detection. 0: the model is down (its chains skip it).", labels=["model"])
        total = GaugeMetricFamily("vsr_model_endpoints", "Replicas of the model in Envoy's config.", labels=["model"])
        for model, cluster in sorted(self.clusters.items()):
            healthy_name, total_name = membership(cluster)
            if total_name in stats:
                healthy.add_metric([model], stats.get(healthy_name, 0))
                total.add_metric([model], stats[total_name])
        yield healthy
        yield total
