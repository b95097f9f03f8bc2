"""What a cache key must and must not depend on: tenant, model, context, answer-changing fields."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from router.cache import CacheRequest, SkipReason, build_cache_request, cache_control
from router.cache.keys import Caller, caller, context_fingerprint, latest_user_text, normalise
from router.config import RouterConfig, parse_config
from router.errors import InvalidRequest

VEC = np.ones(384, dtype=np.float32) / np.sqrt(384)


def config(**cache: Any) -> RouterConfig:
    return parse_config({
        "default_model": "m1",
        "models": {"m1": {"endpoints": [{"port": 8001}]}, "m2": {"endpoints": [{"port": 8002}]}},
        "categories": [
            {"name": "math", "model_scores": [{"model": "m1", "score": 1}], "cache": {"enabled": False}},
            {"name": "news", "model_scores": [{"model": "m1", "score": 1}],
             "cache": {"similarity_threshold": 0.99, "verifier_threshold": 1.0, "ttl_seconds": 60}},
        ],
        "semantic_cache": {"backend": "memory", **cache},
    })


CFG = config()
KEY_A = {"authorization": "Bearer sk-tenant-a"}


def body(text: str = "How do I reset my password?", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": text}], **extra}


def req(b: dict[str, Any] | None = None, headers: dict[str, str] | None = None, model: str = "m1",
        category: str | None = None, cfg: RouterConfig = CFG) -> CacheRequest:
    out = build_cache_request(b or body(), KEY_A if headers is None else headers, model, category, VEC, cfg)
    assert isinstance(out, CacheRequest), out
    return out


def test_same_request_same_key_and_tenant_changes_namespace() -> None:
    assert req().key == req().key
    other = req(headers={"authorization": "Bearer sk-tenant-b"})
    assert other.namespace != req().namespace and other.scope != req().scope


def test_tenant_header_wins_over_api_key_and_never_equals_a_key_identity() -> None:
    by_header = req(headers={"x-authz-tenant-id": "acme", "authorization": "Bearer k1"})
    assert by_header.namespace == req(headers={"x-authz-tenant-id": "acme", "authorization": "Bearer k2"}).namespace
    assert by_header.namespace != req(headers={"authorization": "Bearer acme"}).namespace


def test_no_identity_skips_unless_scope_is_global() -> None:
    assert build_cache_request(body(), {}, "m1", None, VEC, CFG) is SkipReason.NO_IDENTITY
    glob = config(scope="global")
    assert isinstance(build_cache_request(body(), {}, "m1", None, VEC, glob), CacheRequest)


@pytest.mark.parametrize("value", ["Bearer", "bearer ", "Bearer \t ", "BEARER", " "])
def test_an_empty_bearer_token_is_no_identity(value: str) -> None:
    """`Authorization: Bearer ` (Envoy trims it to `Bearer`) was taken as the key `Bearer`: every client sending an
    empty token shared one namespace, and got the others' cached answers."""
    assert build_cache_request(body(), {"authorization": value}, "m1", None, VEC, CFG) is SkipReason.NO_IDENTITY


def test_user_scope_separates_users_of_one_tenant() -> None:
    cfg = config(scope="user")
    alice = req(headers={"x-authz-tenant-id": "t", "x-authz-user-id": "alice"}, cfg=cfg)
    bob = req(headers={"x-authz-tenant-id": "t", "x-authz-user-id": "bob"}, cfg=cfg)
    assert alice.namespace != bob.namespace
    no_user = build_cache_request(body(), {"x-authz-tenant-id": "t"}, "m1", None, VEC, cfg)
    assert no_user is SkipReason.NO_IDENTITY


@pytest.mark.parametrize("tenant", [{}, {"x-authz-tenant-id": "t"}])
def test_user_scope_never_equals_a_user_id_with_an_api_key(tenant: dict[str, str]) -> None:
    """Under `scope: user` the user header and the API key filled the same slot: a client whose request carried no
    user header could choose the API key `alice` and read the cached answers of the user the auth filter named
    `alice`."""
    cfg = config(scope="user")
    by_header = req(headers={**tenant, "x-authz-user-id": "alice"}, cfg=cfg)
    assert by_header.namespace != req(headers={**tenant, "authorization": "Bearer alice"}, cfg=cfg).namespace


@pytest.mark.parametrize("change", [
    {"temperature": 0.2}, {"tools": [{"type": "function", "function": {"name": "f"}}]},
    {"response_format": {"type": "json_object"}}, {"n": 2}, {"seed": 7}, {"max_tokens": 5},
    {"top_k": 3}, {"chat_template_kwargs": {"enable_thinking": True}},
])
def test_answer_changing_fields_change_the_scope(change: dict[str, Any]) -> None:
    assert req(body(**change)).scope != req().scope


@pytest.mark.parametrize("change", [{"stream": True}, {"stream_options": {"include_usage": True}},
                                    {"metadata": {"x": "y"}}, {"user": ""}, {"user": "u-1"}])
def test_transport_fields_do_not_change_the_key(change: dict[str, Any]) -> None:
    assert req(body(**change)).key == req().key


def test_under_user_scope_the_end_user_an_app_names_has_a_scope_of_their_own_in_the_keys_namespace() -> None:
    """One app key serving many end users shared entries under `scope: user` too: one end user's answer served
    another's question. Under the default `tenant` scope they share them on purpose (above)."""
    cfg = config(scope="user")
    alice, bob, anyone = (req(body(user=u) if u else None, cfg=cfg) for u in ("alice", "bob", None))
    assert len({alice.scope, bob.scope, anyone.scope}) == 3 and alice.key != bob.key
    assert alice.scope == req(body(user="alice"), cfg=cfg).scope
    assert alice.namespace == bob.namespace == anyone.namespace  # `cache invalidate --api-key` drops them all


def test_system_prompt_history_and_model_change_the_scope() -> None:
    b = body()
    b["messages"][0]["content"] = "Answer in French."
    assert req(b).scope != req().scope
    longer = body()
    longer["messages"][1:1] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert req(longer).scope != req().scope
    assert req(model="m2").scope != req().scope


def test_whitespace_variants_share_the_exact_key_case_does_not() -> None:
    assert req(body("  How do I reset\n my password? ")).key == req().key
    assert req(body("HOW DO I RESET MY PASSWORD?")).key != req().key
    assert normalise("full\u3000width") == "full width"  # an ideographic space is whitespace
    assert normalise("Cafe\u0301") == normalise("Café")  # NFC: one text, two encodings


def test_characters_that_change_a_question_keep_their_own_exact_key() -> None:
    """NFKC folded them: "What is x²?" and "What is x2?" shared one exact entry (an adversarial trial)."""
    for one, other in (("What is x²?", "What is x2?"), ("Step ①", "Step 1"), ("ﬁle size", "file size")):
        assert req(body(one)).key != req(body(other)).key


def directives(headers: dict[str, str]) -> CacheRequest | SkipReason:
    """A request with these headers, its directives read from them as the session reads them."""
    return build_cache_request(body(), {**KEY_A, **headers}, "m1", None, VEC, CFG, control=cache_control(headers))


def test_cache_control_header() -> None:
    no_cache = directives({"x-vsr-cache-control": "no-cache"})
    assert isinstance(no_cache, CacheRequest) and no_cache.read is False
    assert directives({"x-vsr-cache-control": "No-Store"}) is SkipReason.NO_STORE


def test_the_standard_cache_control_header_opts_out_too() -> None:
    """`Cache-Control: no-cache` / `no-store` were ignored: the client got a cached answer it had declined."""
    no_cache = directives({"cache-control": "max-age=0, No-Cache"})
    assert isinstance(no_cache, CacheRequest) and no_cache.read is False
    assert directives({"cache-control": "no-store"}) is SkipReason.NO_STORE
    other = directives({"cache-control": "max-age=0, no-transform"})
    assert isinstance(other, CacheRequest) and other.read is True


def test_an_unknown_x_vsr_cache_control_value_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(InvalidRequest, match="unknown value 'nocache'; accepted: no-store, no-cache") as err:
        cache_control({"x-vsr-cache-control": "nocache"})
    assert err.value.status == 400


def test_category_overrides() -> None:
    assert build_cache_request(body(), KEY_A, "m1", "math", VEC, CFG) is SkipReason.CATEGORY_DISABLED
    news = req(category="news")
    assert (news.threshold, news.min_score, news.ttl_seconds) == (0.99, 1.0, 60)
    assert (req().threshold, req().min_score, req().ttl_seconds) == (
        CFG.semantic_cache.similarity_threshold, None, CFG.semantic_cache.ttl_seconds)
    assert build_cache_request(body(), KEY_A, "m1", None, VEC, config(enabled=False)) is SkipReason.DISABLED


def test_latest_turn_must_be_user_text() -> None:
    assert latest_user_text([{"role": "assistant", "content": "x"}]) is SkipReason.NOT_USER_TURN
    image = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert latest_user_text([{"role": "user", "content": image}]) is SkipReason.NON_TEXT_CONTENT
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert latest_user_text([{"role": "user", "content": parts}]) == "a b"
    assert latest_user_text([{"role": "user", "content": None}]) is SkipReason.EMPTY_PROMPT


def test_long_prompts_are_exact_only_and_bad_vectors_dropped() -> None:
    assert req(body("x " * 300)).embedding is None
    assert req().embedding is not None
    bad = build_cache_request(body(), KEY_A, "m1", None, np.zeros(384, dtype=np.float32), CFG)
    assert isinstance(bad, CacheRequest) and bad.embedding is None
    unnormalised = build_cache_request(body(), KEY_A, "m1", None, VEC * 3, CFG)
    assert isinstance(unnormalised, CacheRequest) and unnormalised.embedding is not None
    assert np.isclose(np.linalg.norm(unnormalised.embedding), 1.0)


def test_fingerprint_is_order_independent_for_fields() -> None:
    a = {"messages": [{"role": "user", "content": "q"}], "temperature": 0, "top_p": 1}
    b = {"top_p": 1, "messages": [{"content": "q", "role": "user"}], "temperature": 0}
    assert context_fingerprint(a) == context_fingerprint(b)


def test_the_encoder_is_part_of_the_scope() -> None:
    """Vectors of two embedding models live in different scopes, so they are never compared."""
    def with_encoder(name: str) -> CacheRequest:
        out = build_cache_request(body(), KEY_A, "m1", None, VEC, CFG, encoder=name)
        assert isinstance(out, CacheRequest)
        return out

    assert with_encoder("a").scope == with_encoder("a").scope
    assert with_encoder("a").scope != with_encoder("b").scope and with_encoder("a").key != with_encoder("b").key


@pytest.mark.parametrize(("address", "ip"), [("203.0.113.7:40001", "203.0.113.7"), ("[2001:db8::9]:443", "2001:db8::9"),
                                             ("/run/envoy.sock", "/run/envoy.sock")])
def test_a_caller_without_identity_is_its_address_without_the_port(address: str, ip: str) -> None:
    """The classification memo's scope: a client's connections differ by port only; an identity still decides."""
    tenants, users = ["x-tenant-id"], ["x-user-id"]
    assert caller({}, tenants, users, address) == Caller(None, f"address\0{ip}")
    assert caller({}, tenants, users) == Caller(None, None)
    key = {"authorization": "Bearer sk-a"}
    known = caller(key, tenants, users, address)
    assert known == caller(key, tenants, users) and known.identity == known.memo_scope
    assert known.memo_scope != caller({}, tenants, users, address).memo_scope
