"""Prometheus metrics for the request path, in a registry of their own.

With router workers (`server.workers` > 1) every worker writes its series to PROMETHEUS_MULTIPROC_DIR and the
supervisor's `/metrics` adds them up: counters and histograms sum over workers (a dead worker's counts stay),
gauges say how they combine (`multiprocess_mode`: the worst worker for health, the sum for queue depths).

Operators judge the router by these series: is the cache paying off, which models get the traffic,
how much latency routing adds, what is blocked, and what the fleet costs. Names follow Prometheus
conventions (base units in the name, `_total` on counters). Every label value comes from a closed
set: fixed enums checked here, or names from the config (models, categories, PII types) declared
with `set_label_values`, so a hostile or buggy request cannot explode the series count.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DecisionPath = Literal["upstream", "cache", "blocked", "error", "abandoned"]  # the counted values of errors.Outcome
Phase = Literal["classify", "affinity", "cache_lookup", "total"]
LookupStage = Literal["queue", "backend", "resume"]
# dropped: a write refused because the write queue was full (counted, never silent)
CacheEvent = Literal["hit", "miss", "write", "skipped_write", "dropped", "error"]
LabelKind = Literal["model", "category", "pii_type", "dependency", "cache_reason"]
ClassifierFailure = Literal["error", "timeout", "overload"]  # an exception, out of its time budget, or queue full

OTHER = "other"
NONE = "none"
PREFIX = "vsr"
GUARDS = ("jailbreak", "content_safety")  # router.policy.GUARDS; metrics does not import the policy
AFFINITY_RESULTS = ("new", "sticky", "rederived", "switched", "none")  # router.affinity's, which imports metrics

# The sidecar adds about 1 ms per request and a classifier pass costs 1-30 ms: resolve that range
# finely, and keep a few coarse buckets for stalls.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)


class RouterMemory(Collector):
    """vsr_router_resident_memory_bytes: the memory of this process and every process below it (router workers, the
    embedded Milvus Lite), read from /proc at each scrape. With router workers the supervisor's
    `process_resident_memory_bytes` is its own process only (a dashboard showed 162 MB while the workers held
    590 MB), and the container's memory limit counts them all. Each process counts its proportional set size (Pss:
    a page shared by n processes counts 1/n in each), so shared libraries are not counted once per process."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(f"{PREFIX}_router_resident_memory_bytes",
                                   "Resident memory of the router's processes (supervisor, workers, Milvus Lite).")
        family.add_metric([], float(tree_rss_bytes(os.getpid())))
        yield family


def tree_rss_bytes(root: int, proc: Path = Path("/proc")) -> int:
    """The summed proportional set size of `root` and its descendants (their resident set where the kernel has no
    smaps_rollup; 0 where /proc is not Linux's)."""
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, IndexError):
            continue  # exited between the listing and the read
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    page, total, todo = os.sysconf("SC_PAGE_SIZE"), 0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += _pss_bytes(proc / str(pid)) or int((proc / str(pid) / "statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        todo.extend(children.get(pid, ()))
    return total


def _pss_bytes(process: Path) -> int | None:
    try:
        rollup = (process / "smaps_rollup").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), None)


class BoundedLabel:
    """Maps raw label values onto a closed set; anything outside it is counted as `other`.

    Before the config declares the allowed values, the first `cap` distinct values are accepted,
    which bounds the series count even if a caller forgets to declare them.
    """

    def __init__(self, cap: int = 64) -> None:
        self._cap = cap
        self._allowed: frozenset[str] | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def allow(self, values: Iterable[str]) -> None:
        self._allowed = frozenset(values) | {NONE}

    def __call__(self, value: str | None) -> str:
        if not value:
            return NONE
        allowed = self._allowed
        if allowed is not None:
            return value if value in allowed else OTHER
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(value)
                return value
        return OTHER


def _check(value: str, literal: object) -> str:
    """Fixed label enums are part of the code's contract: a typo is a bug, not a new series."""
    if value not in get_args(literal):
        raise ValueError(f"unknown label value {value!r}; expected one of {get_args(literal)}")
    return value


class RouterMetrics:
    """All router series; the module-level default instance backs the helper functions."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.label_sets: dict[LabelKind, BoundedLabel] = {
            kind: BoundedLabel() for kind in get_args(LabelKind)
        }
        self._define_request_series()
        self._define_signal_series()
        self._define_ops_series()

    def _counter(self, name: str, doc: str, labels: tuple[str, ...]) -> Counter:
        return Counter(f"{PREFIX}_{name}", doc, labels, registry=self.registry)

    def _latency_histogram(self, name: str, doc: str, labels: tuple[str, ...]) -> Histogram:
        return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def _define_request_series(self) -> None:
        r = self.registry
        self.requests = self._counter(
            "requests_total",
            "Chat requests by selected model, category and decision path.",
            ("model", "category", "path"),
        )
        self.phase_seconds = self._latency_histogram(
            "phase_duration_seconds", "Time the sidecar spends per phase of a request.", ("phase",)
        )
        self.cache_events = self._counter(
            "cache_events_total",
            "Semantic cache hits, misses, writes, skipped writes and errors.",
            ("event", "reason"),
        )
        for phase in get_args(Phase):  # exported at zero from the start, so rate() works at once
            self.phase_seconds.labels(phase)
        self.lookup_stages = self._latency_histogram(
            "cache_lookup_stage_seconds",
            "Where a cache backend read spends its time: waiting for a read thread (queue), in the backend "
            "call (backend), and from the answer until the event loop resumed the request (resume).",
            ("stage",),
        )
        self.lookup_timeouts = self._counter(
            "cache_lookup_timeouts_total",
            "Cache backend reads out of their budget, by where the budget ran out: queue (spent waiting for "
            "a read thread), backend (the backend's own deadline) or loop (the event loop's backstop).",
            ("where",),
        )
        self.lookups_late = self._counter(
            "cache_lookups_late_total",
            "Cache backend answers that arrived within the budget but reached the busy event loop after its "
            "backstop; they are used (and count as within budget).",
            (),
        )
        for stage in get_args(LookupStage):
            self.lookup_stages.labels(stage)
            self.lookup_timeouts.labels(stage if stage != "resume" else "loop")
        self.cache_entries = Gauge(f"{PREFIX}_cache_entries", "Entries in the semantic cache.", registry=r,
                                   multiprocess_mode="livemax")
        self.cache_backend_up: Gauge | None = None  # created with the first cache: a router without one has none
        self.cache_backend_downs = self._counter(
            "cache_backend_down_total", "Times the cache backend was marked down (the breaker opened).", ())
        self.cache_write_queue = Gauge(
            f"{PREFIX}_cache_write_queue_depth", "Cache writes queued and not yet stored.", registry=r,
            multiprocess_mode="livesum",
        )
        self.tokens = self._counter(
            "upstream_tokens_total",
            "Tokens reported in upstream `usage`, by model and kind.",
            ("model", "kind"),
        )
        self.cost = self._counter(
            "upstream_cost_usd_total",
            "Estimated upstream cost from configured per-1M-token pricing.",
            ("model",),
        )
        self.fallbacks = self._counter(
            "fallbacks_total",
            "Routed requests answered (2xx, complete) by a fallback model after the chosen one failed.",
            ("model", "answered_by"),
        )
        self.fallbacks_failed = self._counter(
            "fallbacks_failed_total",
            "Routed requests whose fallback chain failed: the chosen model and a fallback were tried, the client "
            "got no complete 2xx answer.",
            ("model",),
        )
        self.affinity = self._counter(
            "affinity_total",
            "Routed turns by what session affinity did: new, sticky, rederived, switched or none (no pin applies).",
            ("result",),
        )
        for result in AFFINITY_RESULTS:
            self.affinity.labels(result)
        self.stored_response_refusals = self._counter(
            "stored_response_refusals_total",
            "Calls on a stored response and previous_response_id continuations refused with a 404: another caller "
            "created it.",
            (),
        )
        self.retries = self._counter(
            "upstream_retries_total",
            "Upstream attempts after the first one (Envoy retries), by the chosen model.",
            ("model",),
        )
        self.answers_cut = self._counter(
            "answers_cut_total",
            "2xx answers whose end never passed the router (the model reset or stalled mid-stream, the client left, "
            "or the router stopped): not cached, usage not counted.",
            ("model",),
        )

    def _define_signal_series(self) -> None:
        self.confidence = Histogram(
            f"{PREFIX}_classifier_confidence_ratio",
            "Classifier confidence of the chosen category.",
            ("category",),
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.jailbreak_blocks = self._counter(
            "jailbreak_blocks_total",
            "Requests blocked as jailbreak attempts, by category.",
            ("category",),
        )
        self.pii = self._counter(
            "pii_detections_total", "PII entities detected in prompts, by type.", ("type",)
        )
        self.pii_unscreened = self._counter(
            "pii_unscreened_total",
            "Requests holding text longer than the PII screen reads, by the types it may hold there unread: the PII "
            "rule takes them as found (models whose pii_policy refuses them are skipped) and the request is not cached.",
            ("type",),
        )
        self.guard_flags = self._counter(
            "guard_flags_total",
            "Requests a guard would have blocked but passed because its action is flag (shadow mode), by guard.",
            ("guard",),
        )
        for guard in GUARDS:
            self.guard_flags.labels(guard)
        self.classifier_failures = self._counter(
            "classifier_failures_total",
            "Requests whose classification failed (error) or ran out of its time budget (timeout), by the "
            "policy applied (closed: refused; open: unguarded).",
            ("policy", "reason"),
        )
        for policy in ("closed", "open"):
            for reason in get_args(ClassifierFailure):
                self.classifier_failures.labels(policy, reason)

    def _define_ops_series(self) -> None:
        r = self.registry
        self.reloads = self._counter("config_reloads_total", "Config edits applied or rejected, by result; once per router, whatever its workers.", ("result",))
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        self.last_reload_ok = Gauge(
            f"{PREFIX}_config_last_reload_successful",
            "1 if the last config reload was applied, else 0.",
            registry=r, multiprocess_mode="livemin",
        )
        self.last_reload_ok.set(1)
        self.last_reload_ts = Gauge(
            f"{PREFIX}_config_last_reload_success_timestamp_seconds",
            "Unix time of the last applied config.",
            registry=r, multiprocess_mode="livemin",
        )
        self.config_info = Gauge(
            f"{PREFIX}_config_info",
            "1 for the config version this router (each worker: its pid label) serves; 0 for one it replaced.",
            ("version",), registry=r, multiprocess_mode="liveall",
        )
        self._config_version: str | None = None
        self.dependency_errors = self._counter(
            "dependency_errors_total",
            "Failures talking to a dependency (cache backend, model, ...).",
            ("dependency",),
        )
        self.component_ready = Gauge(
            f"{PREFIX}_component_ready",
            "1 if a readiness component is ready, else 0.",
            ("component",),
            registry=r, multiprocess_mode="livemin",
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(RouterMemory())

    def set_label_values(self, kind: LabelKind, values: Iterable[str]) -> None:
        """Declare the allowed values of a config-driven label (call at start and on every reload). The event counters
        labelled by models or categories are exported at zero for each value: with router workers a series nobody
        touched was not exported at all, so rate() and alerts on it saw nothing until its first event."""
        names = list(values)
        self.label_sets[kind].allow(names)
        if kind == "model":
            for model in names:
                self.retries.labels(model)
                self.answers_cut.labels(model)
                self.fallbacks_failed.labels(model)
                for answered_by in names:
                    if answered_by != model:
                        self.fallbacks.labels(model, answered_by)
        elif kind == "category":
            for category in names:
                self.jailbreak_blocks.labels(category)

    def record_request(self, model: str | None, category: str | None, path: DecisionPath) -> None:
        lab = self.label_sets
        self.requests.labels(lab["model"](model), lab["category"](category), _check(path, DecisionPath)).inc()

    def observe_phase(self, phase: Phase, seconds: float) -> None:
        self.phase_seconds.labels(_check(phase, Phase)).observe(seconds)

    def record_cache(self, event: CacheEvent, reason: str | None = None, n: int = 1) -> None:
        self.cache_events.labels(_check(event, CacheEvent), self.label_sets["cache_reason"](reason)).inc(n)

    def observe_lookup_stages(self, queue_s: float, backend_s: float, resume_s: float) -> None:
        self.lookup_stages.labels("queue").observe(queue_s)
        self.lookup_stages.labels("backend").observe(backend_s)
        self.lookup_stages.labels("resume").observe(resume_s)

    def record_lookup_late(self) -> None:
        self.lookups_late.inc()

    def record_lookup_timeout(self, where: Literal["queue", "backend", "loop"]) -> None:
        self.lookup_timeouts.labels(where).inc()

    def set_cache_entries(self, n: int) -> None:
        self.cache_entries.set(n)

    def set_cache_backend_up(self, up: bool) -> None:
        """The series exists from the first cache backend on: a gauge defined up front read 0 in a router with the
        cache disabled, the value of a dead backend, and SemanticRouterCacheDegraded would fire on it."""
        if self.cache_backend_up is None:
            self.cache_backend_up = Gauge(
                f"{PREFIX}_cache_backend_up",
                "1 while the cache backend answers real traffic, 0 while it fails (the router serves uncached); "
                "absent in a router started without a cache.",
                registry=self.registry, multiprocess_mode="livemin",
            )
        self.cache_backend_up.set(1 if up else 0)

    def forget_cache_backend(self) -> None:
        """A reload turned the cache off: no breaker is open. The series cannot be removed (a worker's multiprocess
        file keeps it), so it says 1 rather than keep a last 0 that would hold the alert until a restart."""
        if self.cache_backend_up is not None:
            self.cache_backend_up.set(1)

    def record_cache_backend_down(self) -> None:
        """The breaker opened: the gauge shows the state, this counter a breaker that keeps flapping."""
        self.cache_backend_downs.inc()

    def set_cache_write_queue(self, depth: int) -> None:
        self.cache_write_queue.set(depth)

    def observe_confidence(self, category: str | None, value: float) -> None:
        self.confidence.labels(self.label_sets["category"](category)).observe(value)

    def record_jailbreak_block(self, category: str | None) -> None:
        self.jailbreak_blocks.labels(self.label_sets["category"](category)).inc()

    def record_guard_flag(self, guard: str) -> None:
        self.guard_flags.labels(guard if guard in GUARDS else OTHER).inc()

    def record_pii(self, pii_type: str, count: int = 1) -> None:
        self.pii.labels(self.label_sets["pii_type"](pii_type)).inc(count)

    def record_pii_unscreened(self, pii_type: str) -> None:
        self.pii_unscreened.labels(self.label_sets["pii_type"](pii_type)).inc()

    def record_usage(
        self, model: str | None, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        label = self.label_sets["model"](model)
        self.tokens.labels(label, "prompt").inc(max(prompt_tokens, 0))
        self.tokens.labels(label, "completion").inc(max(completion_tokens, 0))
        self.cost.labels(label).inc(max(cost_usd, 0.0))

    def record_attempts(self, model: str | None, answered_by: str | None, attempts: int, ok: bool) -> None:
        """Envoy's retries of one routed request, and a fallback when another model was tried: answered by it only
        when `ok`, its answer reached the client as a complete 2xx (a chain that failed throughout was counted as
        answered by its last model)."""
        label = self.label_sets["model"]
        if attempts > 1:
            self.retries.labels(label(model)).inc(attempts - 1)
        if answered_by and answered_by != model:
            if ok:
                self.fallbacks.labels(label(model), label(answered_by)).inc()
            else:
                self.fallbacks_failed.labels(label(model)).inc()

    def record_answer_cut(self, model: str) -> None:
        self.answers_cut.labels(self.label_sets["model"](model)).inc()

    def record_affinity(self, result: str) -> None:
        if result in AFFINITY_RESULTS:
            self.affinity.labels(result).inc()

    def record_stored_response_refused(self) -> None:
        self.stored_response_refusals.inc()

    def record_config_reload(self, ok: bool, now: float | None = None, counted: bool = True) -> None:
        """`counted`: False in all router workers but one, so one edit is one reload of the Pod, not one per worker
        (every worker still reports its verdict in the gauges, whose worst live worker the Pod shows)."""
        if counted:
            self.reloads.labels("ok" if ok else "failed").inc()
        self.last_reload_ok.set(1 if ok else 0)
        if ok:
            self.record_config_applied(now)

    def record_config_applied(self, now: float | None = None) -> None:
        """When the running config was applied: by a reload, or at start (the first config)."""
        self.last_reload_ts.set(time.time() if now is None else now)

    def set_config_version(self, version: str) -> None:
        """The running config's version at 1; the ones it replaced stay at 0. prometheus_client cannot remove a
        series in multi-process mode (a worker's file keeps it, and `remove` writes a plain-text warning into the
        JSON log), so the single-process router keeps them too: one scrape shape, one series per version applied."""
        old, self._config_version = self._config_version, version
        if old is not None and old != version:
            self.config_info.labels(old).set(0)
        self.config_info.labels(version).set(1)

    def record_classifier_failure(self, policy: str, reason: ClassifierFailure = "error") -> None:
        self.classifier_failures.labels(policy, _check(reason, ClassifierFailure)).inc()

    def record_dependency_error(self, dependency: str) -> None:
        self.dependency_errors.labels(self.label_sets["dependency"](dependency)).inc()

    def set_component_ready(self, component: str, ok: bool) -> None:
        self.component_ready.labels(component).set(1 if ok else 0)


def cost_usd(
    prompt_tokens: int, completion_tokens: int, prompt_per_1m: float, completion_per_1m: float
) -> float:
    """Estimated cost of one response from per-million-token prices (config `models.*.pricing`)."""
    return (prompt_tokens * prompt_per_1m + completion_tokens * completion_per_1m) / 1_000_000


METRICS = RouterMetrics()
REGISTRY = METRICS.registry

# The request path calls these; bound methods keep the signatures for type checkers.
set_label_values = METRICS.set_label_values
record_request = METRICS.record_request
record_stored_response_refused = METRICS.record_stored_response_refused
observe_phase = METRICS.observe_phase
record_cache = METRICS.record_cache
set_cache_entries = METRICS.set_cache_entries
observe_lookup_stages = METRICS.observe_lookup_stages
record_lookup_timeout = METRICS.record_lookup_timeout
record_lookup_late = METRICS.record_lookup_late
set_cache_backend_up = METRICS.set_cache_backend_up
record_cache_backend_down = METRICS.record_cache_backend_down
set_cache_write_queue = METRICS.set_cache_write_queue
observe_confidence = METRICS.observe_confidence
record_jailbreak_block = METRICS.record_jailbreak_block
record_guard_flag = METRICS.record_guard_flag
record_pii = METRICS.record_pii
record_pii_unscreened = METRICS.record_pii_unscreened
record_usage = METRICS.record_usage
record_attempts = METRICS.record_attempts
record_answer_cut = METRICS.record_answer_cut
record_affinity = METRICS.record_affinity
record_config_reload = METRICS.record_config_reload
record_config_applied = METRICS.record_config_applied
set_config_version = METRICS.set_config_version
record_dependency_error = METRICS.record_dependency_error
record_classifier_failure = METRICS.record_classifier_failure
