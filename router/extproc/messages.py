"""Builders for Envoy ext_proc ProcessingResponse messages.

Encodes the Envoy rules we learned the hard way in one place: header values go in `raw_value`,
a body mutation carries its own content-length, a routing header change clears the route cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2

Mode: TypeAlias = processing_mode_pb2.ProcessingMode
JSON = "application/json"
SSE = "text/event-stream"
# Envoy reports an immediate response's `details` as %RESPONSE_CODE_DETAILS%; the generated local_reply_config
# recognises the router's own answers by this prefix and leaves their OpenAI bodies alone.
DETAILS = "vsr_router"
# The client's address as Envoy sees it ("ip:port", "[ipv6]:port"), asked for with the request headers: a caller
# without identity gets a classification memo scoped by it (router/cache/keys.py `caller`).
CLIENT_ADDRESS_ATTRIBUTE = "source.address"


def attribute(req: pb.ProcessingRequest, name: str) -> str | None:
    """An attribute Envoy sent (the filter's `request_attributes`), as text; None when it did not send it."""
    for attrs in req.attributes.values():
        field = attrs.fields.get(name)
        if field is not None:
            return str(field.string_value)
    return None


def header_map(headers: pb.HttpHeaders) -> dict[str, str]:
    """Lower-cased header names to values; Envoy 1.40 fills raw_value, older ones value. Envoy sends each line of a
    repeated header: they are one comma-separated list (RFC 9110, 5.3), or every line but the last would be lost (a
    client's `x-vsr-cache-control: no-store` followed by another line of it)."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        key, value = h.key.lower(), h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _mutation(set_headers: Mapping[str, str]) -> pb.HeaderMutation:
    options = [base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=k, raw_value=v.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    ) for k, v in set_headers.items()]
    return pb.HeaderMutation(set_headers=options)


def continue_request_headers(mode: Mode | None = None) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse()),
                                 mode_override=mode)


def route_headers(headers: Mapping[str, str], mode: Mode | None = None) -> pb.ProcessingResponse:
    """Set routing headers on a request the router routes by its headers alone, then re-pick the route."""
    common = pb.CommonResponse(header_mutation=_mutation(headers), clear_route_cache=True)
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), mode_override=mode)


def route_request(body: bytes, headers: Mapping[str, str]) -> pb.ProcessingResponse:
    """Replace the request body and set routing headers, then make Envoy re-pick the route."""
    out = replace_request_body(body, headers)
    out.request_body.response.clear_route_cache = True
    return out


def continue_response_headers(headers: Mapping[str, str], mode: Mode | None = None) -> pb.ProcessingResponse:
    common = pb.CommonResponse(header_mutation=_mutation(headers))
    return pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=common), mode_override=mode)


def continue_response_body() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse()))


def immediate(status: int, body: bytes, headers: Mapping[str, str],
              content_type: str = JSON) -> pb.ProcessingResponse:
    """Answer the client directly (errors, /v1/models, cache hits); no upstream is called."""
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),
        headers=_mutation({**headers, "content-type": content_type}),
        body=body,
        details=DETAILS,
    ))


# A request the router screens and routes by its body, and whose answer it reads (headers, cache, usage). Envoy's
# filter sends no response phase unless asked (router/envoy_config.py `_ext_proc_filter`).
SCREEN_AND_READ_ANSWER = Mode(request_body_mode=Mode.BUFFERED, response_header_mode=Mode.SEND,
                              response_body_mode=Mode.BUFFERED)
# Phases the router does not need for a stream it passes through untouched.
PASS_THROUGH = Mode(request_body_mode=Mode.NONE, response_header_mode=Mode.SKIP,
                    response_body_mode=Mode.NONE)
STREAM_RESPONSE = Mode(response_body_mode=Mode.STREAMED)
# /v1/embeddings: routed on its body; the response headers get the decision (an embeddings answer had no
# x-vsr-selected-model), the body is not looked at. /v1/completions is read as SCREEN_AND_READ_ANSWER (its usage).
ROUTE_BY_BODY = Mode(request_body_mode=Mode.BUFFERED, response_header_mode=Mode.SEND, response_body_mode=Mode.NONE)
SKIP_RESPONSE_BODY = Mode(response_body_mode=Mode.NONE)


def replace_request_body(body: bytes, headers: Mapping[str, str]) -> pb.ProcessingResponse:
    """Replace the request body of one upstream attempt; the route is already chosen."""
    common = pb.CommonResponse(
        status=pb.CommonResponse.CONTINUE_AND_REPLACE,
        header_mutation=_mutation({**headers, "content-length": str(len(body))}),
        body_mutation=pb.BodyMutation(body=body),
    )
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
