"""Router spans with the SDK's in-memory exporter; the no-op path; Envoy's tracing config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.stack import ROOT
from router.config import TracingConfig, load_config, parse_config
from router.envoy_config import render
from router.tracing import NO_TRACE, Tracing, collector_address


def _tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(TracingConfig(enabled=True), provider), exporter


def test_a_request_trace_continues_the_w3c_parent_and_nests_its_phases() -> None:
    tracing, exporter = _tracing()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    trace = tracing.start({}, {"traceparent": parent})  # no gRPC metadata: the HTTP header is continued
    with trace.span("vsr.classify"):
        trace.set(category="math", confidence=0.9, pii_types="")
    trace.end(outcome="upstream", status=200, error=None)
    trace.end(outcome="ignored")  # a second end is a no-op
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root, classify = spans["vsr.request"], spans["vsr.classify"]
    assert root.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert root.parent is not None and root.parent.span_id == 0x00F067AA0BA902B7
    assert classify.parent is not None and classify.parent.span_id == root.context.span_id
    assert dict(classify.attributes or {}) == {"vsr.category": "math", "vsr.confidence": 0.9, "vsr.pii_types": ""}
    assert dict(root.attributes or {}) == {"vsr.outcome": "upstream", "vsr.status": 200}


def test_the_grpc_metadata_parent_wins_over_the_http_header() -> None:
    tracing, exporter = _tracing()
    envoy = {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    client = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    tracing.start(envoy, client).end()
    (root,) = exporter.get_finished_spans()
    assert root.parent is not None and root.parent.span_id == 0x2222222222222222


def test_tracing_off_is_a_constant_no_op() -> None:
    assert not NO_TRACE.recording
    with NO_TRACE.span("vsr.classify"):
        NO_TRACE.set(category="x")
    NO_TRACE.end()


def test_envoy_traces_to_the_same_collector_and_validates(tmp_path: Path) -> None:
    raw = load_config(ROOT / "config" / "config.yaml").model_dump(exclude_none=True)
    raw["tracing"] = {"enabled": True, "endpoint": "http://127.0.0.1:4317", "sample_ratio": 0.25}
    cfg = parse_config(raw)
    assert collector_address(cfg.tracing) == ("127.0.0.1", 4317)
    out = tmp_path / "envoy.yaml"
    out.write_text(render(cfg))
    hcm = yaml.safe_load(out.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]
    assert hcm["tracing"]["random_sampling"]["value"] == 25.0
    envoy = Path(sys.executable).parent / "envoy"
    result = subprocess.run([str(envoy), "--mode", "validate", "-c", str(out)], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_otlp_exporter_and_the_ext_proc_stubs_import_side_by_side() -> None:
    """xds-protos carries an old opentelemetry/proto copy; when pip lets it win, tracing cannot load."""
    import subprocess
    import sys

    code = ("from envoy.service.ext_proc.v3 import external_processor_pb2; "
            "from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-1500:]
