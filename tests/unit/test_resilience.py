"""Fallback chains from the policy, and the Envoy retry/outlier/circuit-breaker config that carries them."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import struct_pb2

from devstack.stack import ROOT
from router.config import load_config, parse_config
from router.envoy_config import envoy_config
from router.errors import PIIViolation
from router.extproc.attempt import endpoint_model
from router.openai_wire import parse_chat_request
from router.policy import Policy
from router.resilience import all_chains, allowed_model_sets, chain_cluster
from router.signals import Classification, PIIFinding

CFG = load_config(ROOT / "config" / "config.yaml")
BIG, SMALL = "gpt-oss-120b", "qwen3-4b"


def _chat(model: str = "auto"):  # type: ignore[no-untyped-def]
    return parse_chat_request(json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}).encode())


def _signal(category: str, pii: tuple[str, ...] = ()) -> Classification:
    return Classification(category=category, confidence=0.9, pii=tuple(PIIFinding(t, 0, 1, 1.0) for t in pii))


def _with(**sections: Any) -> Policy:
    raw = CFG.model_dump(exclude_none=True)
    raw.update(sections)
    return Policy(parse_config(raw))


def test_the_chain_is_the_category_ranking_after_the_chosen_model() -> None:
    d = Policy(CFG).decide(_chat(), _signal("math"))
    assert d.chain == (BIG, SMALL)
    assert d.route == "chain__gpt-oss-120b__qwen3-4b"


def test_the_chain_never_holds_a_model_the_pii_rule_forbids() -> None:
    d = Policy(CFG).decide(_chat(), _signal("math", pii=("CREDIT_CARD",)))  # gpt-oss-120b may not see it
    assert d.chain == (SMALL,)
    assert d.route == SMALL  # a single model: its own cluster, retried on its replicas only


def test_an_explicit_model_is_not_switched_unless_configured() -> None:
    assert Policy(CFG).decide(_chat(BIG), _signal("other")).chain == (BIG,)
    policy = _with(fallback={"explicit_models": True})
    assert policy.decide(_chat(BIG), _signal("other")).chain == (BIG, SMALL)


def test_fallback_can_be_switched_off() -> None:
    policy = _with(fallback={"enabled": False})
    assert policy.decide(_chat(), _signal("math")).chain == (BIG,)
    assert all_chains(policy) == []


def test_allowed_sets_cover_every_pii_outcome() -> None:
    assert allowed_model_sets(CFG) == [frozenset({BIG, SMALL}), frozenset({SMALL})]


def test_envoy_has_a_route_for_every_chain_the_policy_can_produce() -> None:
    policy = _with(fallback={"explicit_models": True})
    generated = envoy_config(policy.cfg)
    vhost = generated["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]
    routed = {r["route"]["cluster"] for r in vhost["routes"]}
    clusters = {c["name"] for c in generated["static_resources"]["clusters"]}
    for category in [c.name for c in CFG.categories]:
        for pii in [(), ("CREDIT_CARD",), ("PERSON",)]:
            for model in ["auto", BIG, SMALL]:
                try:
                    d = policy.decide(_chat(model), _signal(category, pii))
                except PIIViolation:
                    continue  # a blocked request has no route
                assert d.route in routed and d.route in clusters, (category, pii, model)
    assert vhost["include_attempt_count_in_response"] is True


def _clusters(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in envoy_config(parse_config(raw))["static_resources"]["clusters"]}


def test_each_shipped_model_is_health_checked_on_vllms_health_path() -> None:
    """Trial 18: a frozen model server (accepts connections, never answers) fails no request, so outlier detection never
    ejected it and every request routed to it hung. Envoy now probes GET /health, as often before the model has had
    traffic (a fallback model) as after (Envoy's own default for an untouched cluster is once a minute)."""
    clusters = _clusters(CFG.model_dump(exclude_none=True))
    for model in (BIG, SMALL):
        [check] = clusters[model]["health_checks"]
        assert check["http_health_check"] == {"path": "/health"}
        assert check["interval"] == check["no_traffic_interval"] == "5.000s" and check["timeout"] == "3.000s"
        assert (check["unhealthy_threshold"], check["healthy_threshold"]) == (2, 2)
        # No panic mode: with every replica down Envoy would send to them anyway, and those requests hung.
        assert clusters[model]["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
    assert not any("health_checks" in c for c in clusters.values() if c["name"] not in (BIG, SMALL))


def test_a_model_without_a_health_check_is_never_probed() -> None:
    """The code default is off: a server without /health answers 404, which Envoy takes as down at once, and the model
    would be skipped (or refused) for good. `health_check: null` (or leaving it out) is how such a server is
    configured, and it keeps Envoy's panic mode (all replicas ejected: sent to anyway)."""
    raw = CFG.model_dump(exclude_none=True)
    raw["models"][SMALL].pop("health_check")
    raw["models"][BIG]["health_check"] = {"path": "/healthz", "interval_s": 1, "unhealthy_threshold": 3}
    clusters = _clusters(raw)
    assert "health_checks" not in clusters[SMALL] and "common_lb_config" not in clusters[SMALL]  # Envoy's panic mode
    [check] = clusters[BIG]["health_checks"]
    assert check["http_health_check"] == {"path": "/healthz"} and check["interval"] == "1.000s"
    assert check["unhealthy_threshold"] == 3 and check["timeout"] == "3.000s"


def test_retry_outlier_and_circuit_breaker_settings_reach_envoy() -> None:
    raw = CFG.model_dump(exclude_none=True)
    raw["models"][BIG]["retry"] = {"num_retries": 3, "per_try_timeout_s": 20, "retriable_status_codes": [503]}
    raw["models"][BIG]["outlier_detection"] = {"consecutive_5xx": 2, "base_ejection_time_s": 5}
    raw["models"][BIG]["circuit_breaker"] = {"max_requests": 7}
    generated = envoy_config(parse_config(raw))
    clusters = {c["name"]: c for c in generated["static_resources"]["clusters"]}
    big = clusters[BIG]
    assert big["outlier_detection"]["consecutive_5xx"] == 2
    assert big["outlier_detection"]["base_ejection_time"] == "5.000s"
    assert big["circuit_breakers"]["thresholds"][0]["max_requests"] == 7
    chain = clusters["chain__gpt-oss-120b__qwen3-4b"]
    assert chain["cluster_type"]["typed_config"]["clusters"] == [BIG, SMALL]
    filters = chain["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.header_mutation", "envoy.filters.http.match_delegate",
                                            "envoy.filters.http.upstream_codec"]
    skip = filters[1]["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0]
    assert skip["predicate"]["single_predicate"]["value_match"] == {"exact": BIG}  # the body's model: no rewrite
    routes = generated["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    retry = next(r for r in routes if r["route"]["cluster"] == chain["name"])["route"]["retry_policy"]
    assert retry["num_retries"] == 1 and retry["per_try_timeout"] == "20.000s"  # one retry per other model
    alone = next(r for r in routes if r["route"]["cluster"] == BIG)["route"]["retry_policy"]
    assert alone["num_retries"] == 3  # a model without a chain retries on its own replicas
    assert retry["retriable_status_codes"] == [503]
    assert retry["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"


def test_a_retry_body_is_rewritten_for_the_model_it_landed_on() -> None:
    policy = Policy(CFG)
    d = policy.decide(_chat(), _signal("math"))
    first = json.loads(policy.rewrite(_chat(), d))
    assert first["reasoning_effort"] == "high"
    retry = json.loads(policy.retarget(first, BIG, SMALL, "math"))
    assert retry["model"] == SMALL
    assert "reasoning_effort" not in retry
    assert retry["chat_template_kwargs"] == {"enable_thinking": True}


def test_the_endpoint_model_is_read_from_envoys_host_metadata_attribute() -> None:
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    text = 'filter_metadata { key: "semantic_router" value { fields { key: "model" value { string_value: "q" } } } }'
    attrs = struct_pb2.Struct()
    attrs.fields["xds.upstream_host_metadata"].string_value = text
    req = pb.ProcessingRequest(attributes={"envoy.filters.http.ext_proc": attrs})
    assert endpoint_model(req) == "q"
    assert endpoint_model(pb.ProcessingRequest()) is None
    assert chain_cluster(CFG, (SMALL,)) == SMALL
