"""Fallback chains, and the Envoy retry, outlier-detection and circuit-breaker settings that carry them.

The router decides *where a request may go*; Envoy does the retrying, so a failed attempt costs no
round trip through the sidecar and streaming responses are retried only before their first byte
(Envoy never retries once it has sent response headers downstream).

- The policy gives each request a chain: its model, then the next models of the category ranking
  that may see the request's PII, at most `fallback.max_fallbacks` of them.
- A chain of two or more models is an Envoy aggregate cluster over the models' clusters, in order.
  The route's retry policy uses the `previous_priorities` retry priority, so each retry goes to the
  next model of the chain; a model whose replicas outlier detection has ejected, or whose replicas failed their
  health checks (`models.<name>.health_check`: frozen), is skipped at once.
- The body names the first model. Each chain cluster runs the router as an *upstream* ext_proc
  filter (Envoy runs the upstream filters of the cluster the route names, here the aggregate one),
  which receives the metadata of the endpoint the attempt landed on: when that endpoint serves
  another model than the one the body was written for, the router rewrites `model` (and the
  reasoning switch) for that attempt. An attempt that lands where it was routed skips the filter
  in Envoy (a matcher on a header filled from the endpoint metadata), so the healthy path costs
  no extra gRPC stream; requests routed to a single model never pass it at all.
- Envoy reports the model that answered (endpoint metadata) and the attempt count in response
  headers; the router's response phase turns them into `x-vsr-*` headers and the fallback metric.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from router.config import ModelConfig, RouterConfig
from router.envoy_filters import duration, ext_proc_filter

if TYPE_CHECKING:
    from router.policy import Policy

CHAIN_PREFIX = "chain__"
# Request headers the router sets for the upstream filter (and Envoy strips when a client sends them).
ROUTED_MODEL_HEADER = "x-vsr-routed-model"
ROUTED_CATEGORY_HEADER = "x-vsr-routed-category"
# gRPC metadata marking the ext_proc stream of one upstream attempt; the attributes name its endpoint.
ATTEMPT_METADATA = "x-vsr-upstream-attempt"
HOST_METADATA_ATTRIBUTE = "xds.upstream_host_metadata"
ATTEMPT_MODEL_HEADER = "x-vsr-attempt-model"  # set per attempt from the endpoint's metadata
# Response headers Envoy adds: the model whose endpoint answered, and how many attempts it took.
UPSTREAM_MODEL_HEADER = "x-vsr-upstream-model"
ATTEMPT_COUNT_HEADER = "x-envoy-attempt-count"
METADATA_NAMESPACE = "semantic_router"
MAX_PII_TYPES_ENUMERATED = 10  # 2**10 PII-type sets at most when listing the chains for Envoy


def chain_cluster(cfg: RouterConfig, chain: tuple[str, ...]) -> str:
    """The cluster Envoy routes a chain to: the model's own cluster, or the chain's aggregate cluster."""
    if len(chain) == 1:
        return cfg.cluster_of(chain[0])
    return CHAIN_PREFIX + "__".join(cfg.cluster_of(m) for m in chain)


def allowed_model_sets(cfg: RouterConfig) -> list[frozenset[str]]:
    """Every set of models some combination of detected PII types leaves allowed."""
    listed = sorted({t for m in cfg.models.values() if not m.pii_policy.allow_by_default
                     for t in m.pii_policy.pii_types_allowed})[:MAX_PII_TYPES_ENUMERATED]
    unlisted = "\x00any-other-type"
    sets: set[frozenset[str]] = set()
    for n in range(len(listed) + 1):
        for combo in itertools.combinations(listed, n):
            for types in (frozenset(combo), frozenset((*combo, unlisted))):
                sets.add(frozenset(name for name, m in cfg.models.items() if m.pii_policy.allows(types)))
    return sorted(sets, key=sorted)


def all_chains(policy: Policy) -> list[tuple[str, ...]]:
    """Every chain of two or more models the policy can produce, so Envoy has a cluster for each.

    A chain starts with any model a request may reach (the best one, the one a client named, or a
    conversation's sticky model), followed by the allowed models of one category ranking.
    """
    cfg = policy.cfg
    if not cfg.fallback.enabled or cfg.fallback.max_fallbacks == 0:
        return []
    categories = [*cfg.categories, cfg.category(cfg.default_category)]
    chains: set[tuple[str, ...]] = set()
    for allowed_set in allowed_model_sets(cfg):
        for cat in categories:
            allowed = policy.ranked(cat, allowed_set.__contains__).models
            for first in allowed_set:
                chain = policy.chain(first, allowed)
                if len(chain) > 1:
                    chains.add(chain)
    return sorted(chains)


# ---- Envoy config pieces ------------------------------------------------------------------------

def retry_policy(model: ModelConfig, chain_length: int) -> dict[str, Any]:
    """The route's retry policy: the first model's settings; a chain moves one model per retry.

    A chain's retries stop at its last model. One more went back to the first model, where Envoy skips the upstream
    filter, with the headers that filter had set for the previous model (content-length of a body rewritten for
    it) on the first model's body: the model server waited for the missing bytes until the route timed out.
    """
    r = model.retry
    policy: dict[str, Any] = {
        "retry_on": ",".join(r.retry_on),
        "num_retries": min(r.num_retries, chain_length - 1) if chain_length > 1 else r.num_retries,
        # Another replica than the one that just failed, when the model has several.
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3,
    }
    if "retriable-status-codes" in r.retry_on:
        policy["retriable_status_codes"] = r.retriable_status_codes
    if r.per_try_timeout_s is not None:
        policy["per_try_timeout"] = duration(r.per_try_timeout_s)

    if chain_length > 1:
        policy["retry_priority"] = {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3"
                     ".PreviousPrioritiesConfig",
            "update_frequency": 1}}
    return policy


def resilience_options(model: ModelConfig) -> dict[str, Any]:
    """Outlier detection, circuit breakers and active health checks of one model's cluster.

    A replica that fails its health checks is skipped like an ejected one: in a chain's aggregate cluster the next
    model answers at once (the aggregate load balancer moves a chain's traffic off a model whose replicas are all
    down); with no model of the chain up, or a lone model down, the request gets 503 upstream_unavailable at once."""
    cb = model.circuit_breaker
    out: dict[str, Any] = {"circuit_breakers": {"thresholds": [{
        "max_connections": cb.max_connections, "max_pending_requests": cb.max_pending_requests,
        "max_requests": cb.max_requests, "max_retries": cb.max_retries}]}}
    od = model.outlier_detection
    if od is not None:
        out["outlier_detection"] = {
            "consecutive_5xx": od.consecutive_5xx,
            "consecutive_gateway_failure": od.consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": duration(od.interval_s),
            "base_ejection_time": duration(od.base_ejection_time_s),
            "max_ejection_percent": od.max_ejection_percent,
        }
    hc = model.health_check
    if hc is not None:
        interval = duration(hc.interval_s)
        out["health_checks"] = [{
            "timeout": duration(hc.timeout_s), "interval": interval,
            # Envoy probes a cluster that never had traffic every 60 s instead: a fallback model, which gets traffic
            # only once the first one fails, would be found frozen a minute or more late.
            "no_traffic_interval": interval,
            "unhealthy_threshold": hc.unhealthy_threshold, "healthy_threshold": hc.healthy_threshold,
            "http_health_check": {"path": hc.path}}]
        # No panic mode: with too few replicas passing (under 50 %, all of a lone one) Envoy sent to every replica,
        # the frozen ones too, and those requests hung. A replica failing a liveness probe is wedged, not busy (vLLM
        # answers /health from its API server, beside the queue), so with none passing the request gets 503 at once.
        out["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    return out


def endpoint_metadata(model_name: str) -> dict[str, Any]:
    """Names the model on each endpoint, so Envoy can say which model answered."""
    return {"filter_metadata": {METADATA_NAMESPACE: {"model": model_name}}}


def upstream_filters(cfg: RouterConfig, chain: tuple[str, ...], ext_proc_cluster: str) -> list[dict[str, Any]]:
    """The per-attempt filter chain of a chain cluster: the router rewrites bodies meant for another model.

    The body is written for the chain's first model, so an attempt whose endpoint serves that model
    (the usual first attempt) skips the router: a header filled from the endpoint's metadata is
    matched against that name, and only other attempts open an ext_proc stream.
    """
    ext_proc = ext_proc_filter(
        ext_proc_cluster, cfg.envoy.message_timeout_ms,
        True,  # router down: the attempt goes out with the body written for the first model
        {"request_header_mode": "SEND", "response_header_mode": "SKIP",
         "request_body_mode": "BUFFERED", "response_body_mode": "NONE"},
        initial_metadata=[{"key": ATTEMPT_METADATA, "value": "1"}],
        request_attributes=[HOST_METADATA_ATTRIBUTE])
    tag = {"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [{"append": {
            "header": {"key": ATTEMPT_MODEL_HEADER, "value": f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:model)%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]}}}
    skip_first = {"matcher_list": {"matchers": [{
        "predicate": {"single_predicate": {
            "input": {"name": "attempt-model", "typed_config": {
                "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                "header_name": ATTEMPT_MODEL_HEADER}},
            "value_match": {"exact": chain[0]}}},
        "on_match": {"action": {"name": "skip", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}}}]}}
    delegated = {"name": "envoy.filters.http.match_delegate", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "extension_config": ext_proc, "xds_matcher": skip_first}}
    codec = {"name": "envoy.filters.http.upstream_codec", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}
    return [tag, delegated, codec]


def aggregate_cluster(cfg: RouterConfig, chain: tuple[str, ...], ext_proc_cluster: str) -> dict[str, Any]:
    """A chain as an Envoy aggregate cluster: its models' clusters in fallback order."""
    first = cfg.models[chain[0]]
    return {
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": upstream_filters(cfg, chain, ext_proc_cluster)}},
        "name": chain_cluster(cfg, chain),
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        # Retries are counted against the cluster the route names: this one.
        "circuit_breakers": resilience_options(first)["circuit_breakers"],
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            "clusters": [cfg.cluster_of(m) for m in chain]}},
    }


def response_headers_to_add() -> list[dict[str, Any]]:
    """Envoy names the model whose endpoint answered (after any retries) on every routed response."""
    value = f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:model)%"
    return [{"header": {"key": UPSTREAM_MODEL_HEADER, "value": value},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


def routes(cfg: RouterConfig, chains: Iterable[tuple[str, ...]], timeout: str,
           header: str) -> list[dict[str, Any]]:
    """One route per model cluster and per chain cluster, matched on the selection header (models by name: their
    order in the file changes nothing, so reordering them must not make a reload look like an Envoy change)."""
    targets = [(m,) for m in sorted(cfg.models)] + list(chains)
    return [{"match": {"prefix": "/", "headers": [{"name": header,
                                                   "string_match": {"exact": chain_cluster(cfg, chain)}}]},
             "route": _route_action(cfg, chain, timeout),
             "response_headers_to_add": response_headers_to_add()}
            for chain in targets]


def _route_action(cfg: RouterConfig, chain: tuple[str, ...], timeout: str) -> dict[str, Any]:
    first = cfg.models[chain[0]]
    action: dict[str, Any] = {"cluster": chain_cluster(cfg, chain), "timeout": timeout,
                              "retry_policy": retry_policy(first, len(chain))}
    if first.retry.stream_idle_timeout_s is not None:
        action["idle_timeout"] = duration(first.retry.stream_idle_timeout_s)
    return action


def routed_headers(model: str, category: str | None) -> dict[str, str]:
    """Request headers that tell the upstream filter which model the body was written for."""
    out = {ROUTED_MODEL_HEADER: model}
    if category is not None:
        out[ROUTED_CATEGORY_HEADER] = category
    return out


def answered(headers: dict[str, str], routed: str) -> tuple[str, int]:
    """The model that answered and the number of attempts, from Envoy's response headers."""
    model = headers.get(UPSTREAM_MODEL_HEADER) or routed
    count = headers.get(ATTEMPT_COUNT_HEADER, "1")
    return model, int(count) if count.isdigit() else 1
