"""One upstream attempt of a routed request, seen by the router as an upstream ext_proc filter.

Envoy runs this filter for the attempts of a chain-routed request that land on another model than
the chain's first one (Envoy skips it for the others), and sends the metadata of the endpoint the
attempt landed on, which names its model (router/resilience.py). An attempt that nonetheless
reaches the model the body was written for passes after its headers, without sending the body. A retry that fell back to the next model
of the chain gets its body rewritten for that model: `model`, and the reasoning switch of its family.
"""

from __future__ import annotations

import json

import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import text_format

from router.extproc import messages as msg
from router.resilience import (
    HOST_METADATA_ATTRIBUTE,
    METADATA_NAMESPACE,
    ROUTED_CATEGORY_HEADER,
    ROUTED_MODEL_HEADER,
)
from router.runtime import Runtime

log = structlog.get_logger(__name__)


class AttemptSession:
    """Turns the ProcessingRequests of one upstream attempt into ProcessingResponses."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.target: str | None = None
        self.routed: str | None = None
        self.category: str | None = None
        self.retargeted = False

    async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        phase = req.WhichOneof("request")
        if phase == "request_headers":
            self.target = endpoint_model(req)
            return self.on_request_headers(req.request_headers)
        if phase == "request_body":
            return self.on_request_body(req.request_body)
        if phase == "response_headers":
            return pb.ProcessingResponse(response_headers=pb.HeadersResponse())
        if phase == "response_body":
            return msg.continue_response_body()
        if phase == "request_trailers":
            return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
        return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

    def on_request_headers(self, headers: pb.HttpHeaders) -> pb.ProcessingResponse:
        h = msg.header_map(headers)
        routed = h.get(ROUTED_MODEL_HEADER)
        if not routed or not self.target or routed == self.target or headers.end_of_stream:
            return msg.continue_request_headers(msg.PASS_THROUGH)  # the body already fits this model
        self.routed, self.category = routed, h.get(ROUTED_CATEGORY_HEADER)
        return msg.continue_request_headers()

    def on_request_body(self, body: pb.HttpBody) -> pb.ProcessingResponse:
        try:
            parsed = json.loads(body.body)
        except ValueError:  # not JSON, not UTF-8, or an integer longer than Python converts
            parsed = None
        if not isinstance(parsed, dict) or self.routed is None or self.target is None:
            return pb.ProcessingResponse(request_body=pb.BodyResponse(response=pb.CommonResponse()))
        self.retargeted = True
        log.info("fallback_attempt", routed=self.routed, target=self.target)
        rewritten = self.runtime.policy.retarget(parsed, self.routed, self.target, self.category)
        return msg.replace_request_body(rewritten, {ROUTED_MODEL_HEADER: self.target})


def endpoint_model(req: pb.ProcessingRequest) -> str | None:
    """The model of the endpoint an attempt landed on, from the host metadata Envoy attaches.

    Envoy 1.40 sends the attribute as the text form of a `config.core.v3.Metadata` message.
    """
    text = msg.attribute(req, HOST_METADATA_ATTRIBUTE)
    if text is None:
        return None
    meta = base_pb2.Metadata()
    try:
        text_format.Parse(text, meta)
    except text_format.ParseError:
        log.warning("upstream_host_metadata_unreadable")
        return None
    ours = meta.filter_metadata.get(METADATA_NAMESPACE)
    model = ours.fields.get("model") if ours is not None else None
    return model.string_value if model is not None and model.string_value else None
