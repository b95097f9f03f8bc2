"""Envoy config pieces shared by the listener (envoy_config.py) and the fallback chains (resilience.py)."""

from __future__ import annotations

from typing import Any


def duration(seconds: float) -> str:
    """A protobuf Duration as Envoy's YAML takes it."""
    return f"{seconds:.3f}s"


# A router call that got no answer at all (a worker killed or stopping: connection refused or reset before the
# router replied) is retried on a new connection, so with workers on a shared port it reaches a live one instead
# of being refused; a call the router has started answering is never retried. Measured: a worker SIGKILLed under
# load had new requests refused in 2 of 6 runs without this, none in 16 with it (tests/integration/test_workers_e2e.py).
def _unanswered_retry() -> dict[str, Any]:
    return {"retry_on": "connect-failure,refused-stream,reset,unavailable", "num_retries": 2,
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"}}


def ext_proc_filter(cluster: str, message_timeout_ms: int, failure_mode_allow: bool, modes: dict[str, str],
                    **extra: Any) -> dict[str, Any]:
    """An ext_proc filter talking to the router on `cluster`; `modes` are the processing_mode fields and
    `extra` goes into its typed_config after the grpc_service (initial metadata, request attributes)."""
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": cluster}, "retry_policy": _unanswered_retry()}
    if metadata := extra.pop("initial_metadata", None):
        grpc_service["initial_metadata"] = metadata
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": grpc_service,
            **extra,
            "failure_mode_allow": failure_mode_allow,
            "allow_mode_override": True,
            "message_timeout": duration(message_timeout_ms / 1000),
            "processing_mode": {**modes, "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        },
    }
