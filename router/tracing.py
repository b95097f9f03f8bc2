"""OpenTelemetry spans for the router's work on one request: classify, cache lookup, decision.

Off by default (`tracing.enabled`), and then every call here is a constant no-op object: no SDK
import, no allocation per request beyond a method call. On, each runtime owns a TracerProvider
that batches spans to an OTLP/gRPC collector; it is never installed as the global provider.

The parent is Envoy's: with Envoy tracing on, Envoy's gRPC client span for the ext_proc stream
arrives in the stream's gRPC metadata as a W3C `traceparent`; without it, the client's own
`traceparent` request header is continued. Spans carry the decision (category, model, cache
result, reasons); never the prompt, messages or detected PII values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from router.config import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

AttributeValue = str | bool | int | float


class RequestTrace(Protocol):
    """The spans of one request; the session calls these whether tracing is on or off."""

    @property
    def recording(self) -> bool: ...  # False: skip computing attributes

    def span(self, name: str) -> contextlib.AbstractContextManager[None]: ...

    def set(self, **attributes: AttributeValue | None) -> None: ...

    def end(self, **attributes: AttributeValue | None) -> None: ...


class _NoTrace:
    """Tracing off: every call returns at once."""

    _null = contextlib.nullcontext()
    recording = False

    def span(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._null

    def set(self, **attributes: AttributeValue | None) -> None:
        return None

    def end(self, **attributes: AttributeValue | None) -> None:
        return None


NO_TRACE: RequestTrace = _NoTrace()


def _clean(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {f"vsr.{k}": v for k, v in attributes.items() if v is not None}


class _SpanTrace:
    """Tracing on: a root span per request, children for the phases, attributes set as they are learnt."""

    recording = True

    def __init__(self, tracer: Any, parent: Any):
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self.root: Span = tracer.start_span("vsr.request", context=parent, kind=trace.SpanKind.INTERNAL)
        self._context = trace.set_span_in_context(self.root)
        self._current: Span = self.root
        self._ended = False

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        child = self._tracer.start_span(name, context=self._context)
        previous, self._current = self._current, child
        try:
            yield
        finally:
            self._current = previous
            child.end()

    def set(self, **attributes: AttributeValue | None) -> None:
        """Attributes for the innermost open span (the root outside any phase)."""
        self._current.set_attributes(_clean(attributes))

    def end(self, **attributes: AttributeValue | None) -> None:
        if self._ended:
            return
        self._ended = True
        self.root.set_attributes(_clean(attributes))
        self.root.end()


class Tracing:
    """The spans of one runtime: a TracerProvider with a batching OTLP exporter."""

    def __init__(self, cfg: TracingConfig, provider: TracerProvider | None = None):
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.cfg = cfg
        self.provider = provider or _provider(cfg)
        self._tracer = self.provider.get_tracer("router")
        self._propagator = TraceContextTextMapPropagator()

    def start(self, *carriers: Mapping[str, str]) -> RequestTrace:
        """A request's trace, continuing the first carrier that holds a W3C traceparent."""
        carrier = next((c for c in carriers if "traceparent" in c), {})
        return _SpanTrace(self._tracer, self._propagator.extract(carrier))

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call it from a thread)."""
        self.provider.shutdown()


def _provider(cfg: TracingConfig) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}),
                              sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(_exporter(cfg), schedule_delay_millis=cfg.batch_delay_ms))
    return provider


def _exporter(cfg: TracingConfig) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # a trimmed install without the exporter
        raise RuntimeError("tracing.enabled needs the package opentelemetry-exporter-otlp-proto-grpc") from exc
    return OTLPSpanExporter(endpoint=cfg.endpoint, insecure=cfg.insecure, timeout=cfg.export_timeout_s)


def build_tracing(cfg: TracingConfig) -> Tracing | None:
    return Tracing(cfg) if cfg.enabled else None


# ---- Envoy's own tracing (generated config) -----------------------------------------------------

COLLECTOR_CLUSTER = "otel_collector"


def collector_address(cfg: TracingConfig) -> tuple[str, int]:
    host, _, port = cfg.endpoint.split("://", 1)[1].rstrip("/").rpartition(":")
    return host, int(port)


def envoy_tracing(cfg: TracingConfig) -> dict[str, Any]:
    """The connection manager's `tracing`: Envoy's OpenTelemetry tracer, exporting to the collector.

    Envoy then starts (or continues) the trace for each request and parents the ext_proc gRPC
    stream's span, which the router continues (the `traceparent` in the stream's metadata).
    """
    return {
        "random_sampling": {"value": cfg.sample_ratio * 100},
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER},
                             "timeout": f"{cfg.export_timeout_s:.3f}s"},
            "service_name": "envoy"}},
        # Envoy's own tags hold the URL with its query string (a key a client put there) and the User-Agent, and no
        # setting drops them (envoyproxy/envoy#27614); custom tags of the same names replace them, as the access
        # log keeps the path without its query.
        "custom_tags": [{"tag": "http.url", "value": "%PATH(NQ)%"},
                        {"tag": "user_agent", "literal": {"value": "-"}}],
    }
