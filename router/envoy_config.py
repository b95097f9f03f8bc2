"""Envoy's config, generated from the router's, so models and routes are declared once.

One cluster per model, a route per cluster matched on the selection header the router sets, and
a default route to the default model for what the router passes through unrouted (a stored response it has no pin
for; any other path it refuses) and, with `failure_mode_allow: true`, for requests the router could not answer.
"""

from __future__ import annotations

from typing import Any

import yaml

from router import resilience, tracing
from router.apis import MESSAGES_PATH, SERVED
from router.config import ConfigError, RouterConfig
from router.envoy_filters import duration, ext_proc_filter
from router.extproc.messages import CLIENT_ADDRESS_ATTRIBUTE, DETAILS
from router.policy import Policy

EXT_PROC_CLUSTER = "semantic_router"
STAT_PREFIX = "semantic_router"  # Envoy's stats of the listener: router/observability/envoy_stats.py reads them
_BUFFER_SLACK = 64 * 1024
SPREAD_STREAMS_PER_CONNECTION = 1
SPREAD_CONNECTION_S = 10
REQUEST_HEADERS_TIMEOUT_S = 10
MAX_REQUEST_HEADERS_KB = 60  # Envoy's default, explicit so that its 431 can name it


def _cluster(name: str, endpoints: list[tuple[str, int]], http2: bool = False,
             spread: bool = False) -> dict[str, Any]:
    lb = [{"endpoint": {"address": {"socket_address": {"address": a, "port_value": p}}}}
          for a, p in endpoints]
    cluster: dict[str, Any] = {
        "name": name, "type": "STRICT_DNS", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]},
    }
    if http2:
        h2: dict[str, Any] = {}
        options: dict[str, Any] = {"explicit_http_config": {"http2_protocol_options": h2}}
        if spread:
            # Router workers share one port and the kernel spreads connections (by a hash), not streams: one
            # stream per connection makes Envoy keep as many connections as concurrent requests, and retiring each
            # connection 10 s after it opened (it drains: its stream runs to its end, a streamed answer included)
            # re-draws the split, so neither an unlucky hash nor a restarted worker leaves the load uneven for
            # more than 10 s. Recycling after 100 requests did not bound it: after a burst Envoy kept ~200 idle
            # connections to the surviving worker and spread 800 later requests over them, none to its replacement.
            h2["max_concurrent_streams"] = SPREAD_STREAMS_PER_CONNECTION
            options["common_http_protocol_options"] = {"max_connection_duration": duration(SPREAD_CONNECTION_S)}
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                **options}}
    return cluster


def _ext_proc_filter(cfg: RouterConfig) -> dict[str, Any]:
    """The router's filter; the client's address comes with the request headers, to scope an anonymous caller's
    classification memo (router/classifier/README.md, "Every user turn").

    The response is sent to the router only when its answer to the request headers asks for it (a mode override,
    extproc/messages.py `SCREEN_AND_READ_ANSWER`): Envoy's reply to a request its HTTP/1 codec refused (headers past
    max_request_headers_kb, Transfer-Encoding with Content-Length, two Content-Lengths) never reached the router's
    request phase, yet went to the router for its response headers while Envoy closed the connection, so the client
    got an empty reply instead of the 431 or 400 (envoyproxy/envoy#29440)."""
    return ext_proc_filter(EXT_PROC_CLUSTER, cfg.envoy.message_timeout_ms, cfg.envoy.failure_mode_allow, {
        "request_header_mode": "SEND", "response_header_mode": "SKIP",
        "request_body_mode": "BUFFERED", "response_body_mode": "NONE"},
        request_attributes=[CLIENT_ADDRESS_ATTRIBUTE])


# Envoy's own local replies (its status, the OpenAI error code, the error type). Anything else Envoy
# answers itself gets `envoy_error` with the type its status class implies.
_LOCAL_REPLIES = (
    (413, "request_too_large", "invalid_request_error"),
    (431, "too_many_headers", "invalid_request_error"),
    (503, "upstream_unavailable", "server_error"),
    (504, "upstream_timeout", "server_error"),
)


# Envoy's own replies when the router did not answer and `failure_mode_allow` is false: details
# `ext_proc_error_gRPC_error_14{...}` (down, 500) or `ext_proc_error_per-message_timeout_exceeded` (frozen or past
# message_timeout_ms, 504). A client should retry these like the router's own 503 `classifier_unavailable`.
_ROUTER_FAILED = "response.code_details.startsWith('ext_proc_error_')"
_ROUTER_UNAVAILABLE = ("The semantic router did not answer in time (down, restarting or overloaded), so the request "
                       "was refused rather than passed on unscreened; retry shortly")


# Requests Envoy's HTTP/1 codec refuses before the router sees them, then closes the connection: headers past
# MAX_REQUEST_HEADERS_KB (431; more than max_headers_count: 431 too_many_headers below), and framing it cannot trust
# (400: Transfer-Encoding with Content-Length, two Content-Lengths, a bad chunk), each named in `details`
# (http1.headers_too_large, http1.too_many_headers, http1.codec_error, ...).
_HEADERS_TOO_LARGE = f"The request's headers exceed {MAX_REQUEST_HEADERS_KB} KiB"
_BAD_HTTP = ("The request is not valid HTTP/1.1 (e.g. both Transfer-Encoding and Content-Length, Content-Length "
             "twice, a malformed chunk): refused, and the connection closed")

# Every replica of the model is out: failing its health checks (a model with `health_check` never falls back on
# Envoy's panic mode, which sent to them anyway) or, for such a model, ejected after errors. At once, not a hang.
_MODEL_DOWN = ("Every replica of the model is down (failing its health checks, or ejected after errors), and no "
               "fallback model could take the request; retry later")

# Envoy refuses a path it cannot normalise (a stray "..") with an empty body.
_BAD_PATH = "The request path could not be normalised"
# Envoy's other refusals without a text of their own (their message was ""): a request target that is no path
# (`OPTIONS *`), a request without a Host header; any other says what Envoy's details say.
_NOT_A_PATH = f"The request target is not a path (as `OPTIONS *`), and this router serves paths only: {SERVED}"
_NO_HOST = "The request has no Host header, which HTTP/1.1 requires"
_ENVOY_REFUSED = "The gateway refused the request: %RESPONSE_CODE_DETAILS%"
_ENVOY_FAILED = "The gateway could not serve the request: %RESPONSE_CODE_DETAILS%"

# HTTP/1.0 (nginx's proxy_pass speaks it unless told `proxy_http_version 1.1`): Envoy's own refusal of it (426
# low_version) closes the connection at once while the ext_proc filter is still asking the router about the reply's
# headers, so the client got an empty reply. Envoy accepts HTTP/1.0 instead and this RBAC policy, ahead of the
# router's filter, refuses it as an ordinary local reply, answered 426 by the mapper below.
_HTTP10_POLICY = "http10"
_HTTP10 = "HTTP/1.0 is not supported: send HTTP/1.1 or HTTP/2 (behind nginx, set `proxy_http_version 1.1`)"

# Envoy itself is full: more requests in flight than envoy.max_requests (the router cluster's circuit breaker
# overflows: details `ext_proc_error_gRPC_error_14{...overflow...}`), or past 90 % of envoy.max_heap_mb (the
# overload manager: details `overload`). Not the router being slow, which is what a request waiting for a router
# connection until message_timeout_ms used to be reported as.
_OVERLOADED = ("(response.code_details.startsWith('ext_proc_error_') && response.code_details.contains('overflow'))"
               " || response.code_details == 'overload'")


def _openai_error(code: str, error_type: str, message: str = "%LOCAL_REPLY_BODY%") -> dict[str, Any]:
    return {"json_format": {"error": {"message": message, "type": error_type, "code": code,
                                      "param": None, "details": "%RESPONSE_CODE_DETAILS%"}},
            "content_type": "application/json"}


def _not_router(condition: str) -> dict[str, Any]:
    """A local reply Envoy made itself: the router's immediate responses carry details `vsr_router`."""
    expression = f"!response.code_details.startsWith('{DETAILS}') && {condition}"
    return {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                         "expression": expression}}}


def _retry_after(seconds: int = 1) -> list[dict[str, Any]]:
    return [{"header": {"key": "retry-after", "value": str(seconds)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


# A model marked down is seen again at its next passing health check (interval_s, 5 s shipped); the openai and
# anthropic SDKs wait as long as Retry-After says (up to 60 s) where they would retry at once.
MODEL_DOWN_RETRY_S = 5


def local_reply_config(cfg: RouterConfig) -> dict[str, Any]:
    """OpenAI-style JSON bodies for Envoy's own replies (413, 431, 503 no healthy upstream, 504, ...), and a 503
    with Retry-After for a request refused because the router did not answer (Envoy says 500 or 504).

    Clients parse `{"error": {...}}`; Envoy's default is a plain-text body. The router's own answers
    already are OpenAI errors and pass untouched.
    """
    overloaded = (f"This gateway is full (more than envoy.max_requests = {cfg.envoy.max_requests} requests in flight, "
                  f"or its memory near envoy.max_heap_mb = {cfg.envoy.max_heap_mb} MiB); retry shortly")
    too_slow = (f"The request was not received within envoy.request_timeout_s ({cfg.envoy.request_timeout_s:g} s; "
                f"its headers within {REQUEST_HEADERS_TIMEOUT_S} s)")
    mappers: list[dict[str, Any]]
    mappers = [{"filter": _not_router("response.code_details == 'path_normalization_failed'"),
                "body_format_override": _openai_error("invalid_path", "invalid_request_error", _BAD_PATH)},
               {"filter": _not_router("response.code_details == 'absolute_path_rejected'"),
                "body_format_override": _openai_error("unsupported_path", "invalid_request_error", _NOT_A_PATH)},
               {"filter": _not_router("response.code_details == 'missing_host_header'"),
                "body_format_override": _openai_error("missing_host_header", "invalid_request_error", _NO_HOST)},
               {"filter": _not_router("response.code_details == 'http1.headers_too_large'"),
                "body_format_override": _openai_error("headers_too_large", "invalid_request_error",
                                                      _HEADERS_TOO_LARGE)},
               {"filter": _not_router("response.code == 400 && response.code_details.startsWith('http1.')"),
                "body_format_override": _openai_error("invalid_http_message", "invalid_request_error", _BAD_HTTP)},
               {"filter": _not_router(f"response.code_details.startsWith('rbac_access_denied_matched_policy"
                                      f"[{_HTTP10_POLICY}]')"), "status_code": 426,
                "body_format_override": _openai_error("unsupported_http_version", "invalid_request_error", _HTTP10)},
               {"filter": _not_router(_OVERLOADED), "status_code": 503, "headers_to_add": _retry_after(),
                "body_format_override": _openai_error("gateway_overloaded", "server_error", overloaded)},
               {"filter": _not_router(_ROUTER_FAILED), "status_code": 503, "headers_to_add": _retry_after(),
                "body_format_override": _openai_error("router_unavailable", "server_error", _ROUTER_UNAVAILABLE)},
               {"filter": _not_router("response.code_details == 'no_healthy_upstream'"),
                "headers_to_add": _retry_after(MODEL_DOWN_RETRY_S),
                "body_format_override": _openai_error("upstream_unavailable", "server_error", _MODEL_DOWN)},
               {"filter": _not_router("response.code == 408"),
                "body_format_override": _openai_error("request_timeout", "invalid_request_error", too_slow)}]
    mappers += [{"filter": _not_router(f"response.code == {status}"), "body_format_override": _openai_error(code, kind)}
                for status, code, kind in _LOCAL_REPLIES]
    mappers.append({"filter": _not_router("response.code >= 500"),
                    "body_format_override": _openai_error("envoy_error", "server_error", _ENVOY_FAILED)})
    mappers.append({"filter": _not_router("response.code >= 400"),
                    "body_format_override": _openai_error("envoy_error", "invalid_request_error", _ENVOY_REFUSED)})
    return {"mappers": [*(_for_messages(m) for m in mappers), *mappers]}


# Anthropic's error types for the codes above whose type is not the plain one (server_error: api_error).
_ANTHROPIC_TYPES = {"request_too_large": "request_too_large", "gateway_overloaded": "overloaded_error",
                    "router_unavailable": "overloaded_error"}


def _for_messages(mapper: dict[str, Any]) -> dict[str, Any]:
    """The same reply in Anthropic's shape on /v1/messages, whose SDK reads `{"type": "error", "error": {...}}`: the
    router's own errors there already are (router/apis.py `error_body`), Envoy's came OpenAI-shaped."""
    error = mapper["body_format_override"]["json_format"]["error"]
    kind = _ANTHROPIC_TYPES.get(error["code"], "api_error" if error["type"] == "server_error" else error["type"])
    cel = mapper["filter"]["extension_filter"]["typed_config"]
    expression = f"({cel['expression']}) && request.path.startsWith('{MESSAGES_PATH}')"
    body = {"json_format": {"type": "error", "error": {"type": kind, "message": error["message"]}},
            "content_type": "application/json"}
    return {**mapper, "filter": {"extension_filter": {**mapper["filter"]["extension_filter"],
                                                      "typed_config": {**cel, "expression": expression}}},
            "body_format_override": body}


# Envoy's side of each request, keyed by the request id the router logs too. What only Envoy knows: the route
# the router set (none when the router was down or past message_timeout_ms: refused, or with failure_mode_allow
# sent on unrouted), the ext_proc calls with their latency in us and gRPC status (rh: request headers, rb: body,
# ...), retries and Envoy's own replies.
# The path without its query; never a body or a credential.
_ACCESS_LOG_FIELDS = {
    "time": "%START_TIME%", "request_id": "%REQ(X-REQUEST-ID)%", "method": "%REQ(:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(:PATH)%", "status": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%", "duration_ms": "%DURATION%",
    "selected_model": "%RESP(X-VSR-SELECTED-MODEL)%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%", "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "ext_proc": "%FILTER_STATE(envoy.filters.http.ext_proc:PLAIN)%",
}


def access_log(cfg: RouterConfig) -> list[dict[str, Any]]:
    """Envoy's access log as JSON lines on stdout (`envoy.access_log`), beside the router's own lines."""
    if not cfg.envoy.access_log:
        return []
    fields = {**_ACCESS_LOG_FIELDS, "routed_to": f"%REQ({cfg.server.selection_header.upper()})%"}
    return [{"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "log_format": {"json_format": fields, "formatters": [{
            "name": "envoy.formatter.req_without_query",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3"
                                      ".ReqWithoutQuery"}}]}}}]


def stripped_client_headers(cfg: RouterConfig) -> list[str]:
    """The client-sent headers Envoy drops before the router sees the request (`_strip_client_headers`)."""
    c = cfg.semantic_cache
    routed = [cfg.server.selection_header, resilience.ROUTED_MODEL_HEADER,
              resilience.ROUTED_CATEGORY_HEADER]  # only the router sets these
    return sorted({h.lower() for h in [*c.tenant_headers, *c.user_headers, *routed]})


def _strip_client_headers(cfg: RouterConfig) -> dict[str, Any]:
    """Clients must not pick their cache tenant nor their upstream: drop identity headers and the router's own
    routing headers they send themselves. An early mutation runs before Envoy picks the route; as an HTTP filter
    it came after, and a client-sent selection header steered pass-through paths (and every request while the
    router is down) to any model.

    An auth filter that sets the identity headers from a verified token runs later, among the HTTP filters.
    """
    return {
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3"
                     ".HeaderMutation",
            "mutations": [{"remove": n} for n in stripped_client_headers(cfg)],
        },
    }


def _refuse_http10() -> dict[str, Any]:
    """RBAC's 403 for an HTTP/1.0 request, made a 426 by local_reply_config (see _HTTP10)."""
    is_http10 = {"call_expr": {"function": "_==_", "args": [
        {"select_expr": {"operand": {"ident_expr": {"name": "request"}}, "field": "protocol"}},
        {"const_expr": {"string_value": "HTTP/1.0"}}]}}
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": {_HTTP10_POLICY: {
            "permissions": [{"any": True}], "principals": [{"any": True}], "condition": is_http10}}}}}


def _router_cluster(cfg: RouterConfig) -> dict[str, Any]:
    """The router's cluster, sized for envoy.max_requests streams in flight (one per request, for its whole life).

    Connections get twice that room so that the stream count is what binds: at the connection limit (one stream
    per connection with workers, and draining connections still count) a stream waited for a connection until
    message_timeout_ms and was refused as `per-message_timeout_exceeded`, a slow router to whoever read it.
    """
    cluster = _cluster(EXT_PROC_CLUSTER, [(cfg.server.host, cfg.server.port)], http2=True,
                       spread=cfg.server.workers != 1)
    n = cfg.envoy.max_requests
    cluster["circuit_breakers"] = {"thresholds": [
        {"max_requests": n, "max_pending_requests": n, "max_connections": 2 * n}]}
    return cluster


def overload_manager(cfg: RouterConfig) -> dict[str, Any]:
    """Envoy sheds load before the kernel kills it: past 90 % of envoy.max_heap_mb new requests get 503
    gateway_overloaded (and from 85 % free heap pages go back to the system, which the container's limit counts),
    and it accepts at most 2 x envoy.max_requests connections (room for clients' idle keep-alive connections).
    README "Kubernetes" has the arithmetic that ties the heap budget to the Pod's memory limit."""
    def action(name: str, saturation: float) -> dict[str, Any]:
        return {"name": f"envoy.overload_actions.{name}", "triggers": [
            {"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": saturation}}]}

    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {"name": "envoy.resource_monitors.fixed_heap", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                "max_heap_size_bytes": cfg.envoy.max_heap_mb * 1024 * 1024}},
            {"name": "envoy.resource_monitors.global_downstream_max_connections", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3"
                         ".DownstreamConnectionsConfig",
                "max_active_downstream_connections": 2 * cfg.envoy.max_requests}}],
        "actions": [action("shrink_heap", 0.85), action("stop_accepting_requests", 0.9)],
    }


def _routes(cfg: RouterConfig, chains: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    timeout = duration(cfg.envoy.upstream_timeout_s)
    routes = resilience.routes(cfg, chains, timeout, cfg.server.selection_header)
    default = resilience.routes(cfg, [], timeout, cfg.server.selection_header)[sorted(cfg.models).index(cfg.default_model)]
    routes.append({**default, "match": {"prefix": "/"}})  # unrouted: unpinned stored responses (and failed-open ones)
    return routes


def _model_cluster(cfg: RouterConfig, name: str, buffer_limit: int) -> dict[str, Any]:
    """A model's cluster: endpoints named by model, outlier detection, circuit breakers."""
    model = cfg.models[name]
    c = _cluster(cfg.cluster_of(name), [(e.address, e.port) for e in model.endpoints])
    for ep in c["load_assignment"]["endpoints"][0]["lb_endpoints"]:
        ep["metadata"] = resilience.endpoint_metadata(name)
    c["per_connection_buffer_limit_bytes"] = buffer_limit
    c.update(resilience.resilience_options(model))
    return c


def envoy_config(cfg: RouterConfig) -> dict[str, Any]:
    """The full bootstrap for a local Envoy in front of the configured models."""
    buffer_limit = cfg.server.max_body_bytes + _BUFFER_SLACK
    chains = resilience.all_chains(Policy(cfg))
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "generate_request_id": True,
        # The client's address is the connection's peer, never what the client wrote in X-Forwarded-For: it scopes
        # an anonymous caller's classification memo (`source.address`), and with the default (false) a client
        # choosing X-Forwarded-For chose its scope, another client's included (router/classifier/README.md).
        "use_remote_address": True,
        # Behind N proxies that append to X-Forwarded-For, the Nth entry from its right (the address the outermost
        # trusted proxy saw) is the client's address instead of the last proxy's (envoy.trusted_proxy_hops).
        "xff_num_trusted_hops": cfg.envoy.trusted_proxy_hops,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        # The router and the routes must see the path the model server will serve: uvicorn unquotes every
        # escape and aiohttp decodes unreserved ones, so `/v1/chat/%63ompletions` or `//v1/chat/completions` were
        # chat completions upstream but an unknown path here, passed through unclassified and unguarded.
        "normalize_path": True,
        "merge_slashes": True,
        # %2F and %5C are decoded too (then the path is normalised again), so the router, the routes and the model
        # server see one path: refusing them (REJECT_REQUEST) broke the openai SDK's `models.retrieve` for vLLM's
        # Hugging Face names ("Qwen/Qwen3-4B" is sent as Qwen%2FQwen3-4B).
        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
        # Explicit, and the router's 431 check reads the same value (envoy.max_headers_count).
        "common_http_protocol_options": {"max_headers_count": cfg.envoy.max_headers_count},
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        # A client has this long to send its request (not to read the answer, which may stream for minutes), then
        # gets a 408 and its connection is closed: stalled senders held a router stream each for 5 minutes.
        "request_headers_timeout": duration(REQUEST_HEADERS_TIMEOUT_S),
        "request_timeout": duration(cfg.envoy.request_timeout_s),
        # Accepted only to be refused with a readable 426 (see _HTTP10).
        "http_protocol_options": {"accept_http_10": True, "default_host_for_http_10": "semantic-router"},
        "local_reply_config": local_reply_config(cfg),
        "access_log": access_log(cfg),
        "route_config": {"name": "models", "virtual_hosts": [
            {"name": "openai", "domains": ["*"], "routes": _routes(cfg, chains),
             "include_attempt_count_in_response": True}]},
        "early_header_mutation_extensions": [_strip_client_headers(cfg)],
        "http_filters": [_refuse_http10(), _ext_proc_filter(cfg), {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    if cfg.tracing.enabled and cfg.tracing.envoy:
        hcm["tracing"] = tracing.envoy_tracing(cfg.tracing)
    listener = {
        "name": "openai", "per_connection_buffer_limit_bytes": buffer_limit,
        "address": {"socket_address": {"address": cfg.envoy.host, "port_value": cfg.envoy.port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }
    clusters = [_router_cluster(cfg)]
    clusters += [_model_cluster(cfg, name, buffer_limit) for name in sorted(cfg.models)]
    clusters += [resilience.aggregate_cluster(cfg, chain, EXT_PROC_CLUSTER) for chain in chains]
    if cfg.tracing.enabled and cfg.tracing.envoy:
        clusters.append(_cluster(tracing.COLLECTOR_CLUSTER, [tracing.collector_address(cfg.tracing)], http2=True))
    out: dict[str, Any] = {"static_resources": {"listeners": [listener], "clusters": clusters},
                           "overload_manager": overload_manager(cfg)}
    if cfg.envoy.admin_port:
        out["admin"] = {"address": {"socket_address": {"address": "127.0.0.1",
                                                       "port_value": cfg.envoy.admin_port}}}
    return out


def check_envoy_unchanged(running: RouterConfig, edited: RouterConfig, file: str) -> None:
    """Raise ConfigError when an edit changes the Envoy config made from it: the running Envoy's clusters,
    routes and stripped client headers are fixed until it restarts. Applied anyway, a model added by an edit was
    selected but its requests went to the default model's server under the new name, and new cache identity
    headers were trusted while Envoy still let clients send them (any tenant's cached answers)."""
    before, after = envoy_config(running), envoy_config(edited)
    if before == after:
        return
    changed = [key for key in RouterConfig.model_fields if getattr(running, key) != getattr(edited, key)]
    why = (f"changes Envoy's config ({_envoy_diff(before, after)}), which Envoy reads only at start: regenerate it "
           "(`semantic-router envoy-config`) and restart Envoy and the router; the running config keeps serving")
    raise ConfigError(file, [(", ".join(changed), why)])


def _envoy_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What differs, by cluster name: a category's new model order can add a fallback chain's cluster, which no
    operator guesses from the edit (an operator's trial found the restart need unpredictable)."""
    def split(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
        return clusters, {**cfg, "static_resources": cfg["static_resources"]["listeners"]}

    (old, old_rest), (new, new_rest) = split(before), split(after)
    parts = []
    for what, names in (("added", new.keys() - old.keys()), ("removed", old.keys() - new.keys()),
                        ("changed", {n for n in old.keys() & new.keys() if old[n] != new[n]})):
        if names:
            parts.append(f"clusters {what}: {', '.join(sorted(names))}")
    if old_rest != new_rest:
        parts.append("listener, routes or overload settings changed")
    return "; ".join(parts)


def render(cfg: RouterConfig) -> str:
    header = "# Generated by `semantic-router envoy-config` from the router config; do not edit.\n"
    return header + yaml.safe_dump(envoy_config(cfg), sort_keys=False)
