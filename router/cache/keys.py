"""What a cache hit must share with the stored request: tenant namespace, model and context.

Namespace: an HMAC of a configured identity (tenant/user header set by an auth filter, or the API
key), so entries of one tenant are unreachable from another and the identity itself is never
stored. Context fingerprint: sha256 of canonical JSON of every earlier message (system prompt and
history) and of every request field except the few known not to change the answer; unknown or
vendor fields (top_k, chat_template_kwargs, ...) therefore count, which costs hits, never precision.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Literal

# Request fields that do not change the completion's content: they are left out of the fingerprint.
NON_ANSWER_FIELDS = frozenset({
    "model",  # keyed separately by the selected model
    "messages",  # history keyed separately, latest turn is the lookup text
    "stream", "stream_options",  # replay converts between JSON and SSE
    "user", "safety_identifier", "metadata", "store", "service_tier",
    "prompt_cache_key", "prompt_cache_retention",
})
_SPACE = re.compile(r"\s+")


class SkipReason(StrEnum):
    """Why a request is neither looked up nor stored."""

    DISABLED = "disabled"
    CATEGORY_DISABLED = "category_disabled"
    NO_STORE = "no_store"
    STATEFUL = "stateful"  # the answer depends on server-side state (Responses API store / previous_response_id)
    PII = "pii"  # the PII screen found personal data in the conversation: the shared store never holds it
    # No PII screen read all of it (the classifier failed open, the text is longer than the screen reads, or a
    # document could not be read): what was not screened is not stored.
    UNSCREENED = "unscreened"
    NO_IDENTITY = "no_identity"
    NOT_USER_TURN = "not_user_turn"
    NON_TEXT_CONTENT = "non_text_content"
    EMPTY_PROMPT = "empty_prompt"
    TOO_LONG = "prompt_too_long"  # normalising a multi-megabyte prompt alone costs ~0.3 s: not cached
    BACKEND_DOWN = "backend_down"  # the backend is marked down: looked up and stored only by the breaker's probes


# Longest latest turn the cache keys (NFC + whitespace folding is ~80 ns per character).
MAX_KEY_CHARS = 65_536


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def normalise(text: str) -> str:
    """NFC and collapsed whitespace; case is kept, 'US' and 'us' may be different questions. Not NFKC: it folds what
    changes a question ("x²" to "x2", "①" to "1"), and such pairs shared one exact entry (an adversarial trial)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def latest_user_text(messages: Sequence[Mapping[str, Any]]) -> str | SkipReason:
    """The text of the final message, which must be a user turn made of text parts only."""
    last = messages[-1]
    if last.get("role") != "user":
        return SkipReason.NOT_USER_TURN
    content = last.get("content")
    if isinstance(content, list):
        if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
            return SkipReason.NON_TEXT_CONTENT
        content = "\n".join(str(p.get("text", "")) for p in content)
    if len(content or "") > MAX_KEY_CHARS:
        return SkipReason.TOO_LONG
    text = normalise(content or "")
    return text if text else SkipReason.EMPTY_PROMPT


def context_fingerprint(body: Mapping[str, Any], reasoning: tuple[str, bool | str] | None = None) -> str:
    """Hash of everything but the latest turn that can change the answer. `reasoning`: the switch the router adds to
    the body it sends (parameter, value), which the client's body does not show."""
    params = {k: v for k, v in body.items() if k not in NON_ANSWER_FIELDS}
    history = list(body["messages"][:-1])
    last_extra = {k: v for k, v in body["messages"][-1].items() if k not in ("role", "content")}
    context = {"v": 1, "history": history, "last": last_extra, "params": params}
    if reasoning is not None:
        context["reasoning"] = list(reasoning)
    return hashlib.sha256(_canonical(context)).hexdigest()


@cache
def _process_secret() -> bytes:
    return secrets.token_bytes(32)


def hmac_secret(env_var: str) -> tuple[bytes, bool]:
    """The configured secret, or a random per-process one (safe: entries just stop matching on restart)."""
    value = os.environ.get(env_var, "")
    return (value.encode(), True) if value else (_process_secret(), False)


def _bearer(headers: Mapping[str, str]) -> str | None:
    """The credential in `authorization`: a bearer token, or the whole value for another scheme. An empty token is
    none (`Bearer ` arrives trimmed to `Bearer`, which was once taken as a key that every such client shared)."""
    value = headers.get("authorization", "").strip()
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip() or None
    return value or None


def _first(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    return next((v for n in names if (v := headers.get(n, "").strip())), None)


def identity(
    headers: Mapping[str, str], scope: Literal["tenant", "user", "global"],
    tenant_headers: Sequence[str], user_headers: Sequence[str], use_api_key: bool,
) -> str | None:
    """The string the namespace is derived from, or None when the scope's identity is missing."""
    if scope == "global":
        return "global"
    api_key = _bearer(headers) if use_api_key else None
    tenant = _first(headers, tenant_headers)
    if scope == "tenant":
        who = tenant or api_key
        return f"tenant\0{'t' if tenant else 'k'}\0{who}" if who else None
    user = _first(headers, user_headers)
    who = user or api_key  # marked like the tenant: a chosen API key never equals a user id an auth filter set
    return f"user\0{tenant or ''}\0{'u' if user else 'k'}\0{who}" if who else None


@dataclass(frozen=True)
class Caller:
    """Who sent a request, read once from its headers and the client's address.

    `identity`: tenant, user and API key, whatever the cache's scope; None for an anonymous client, whose
    conversations affinity never stores by content (anonymous clients would share them). `memo_scope`: the
    classification memo's scope, the identity or else the client's IP as Envoy saw it (the port differs per
    connection, so it is dropped): clients without identity behind one address share a scope
    (router/classifier/README.md, "Every user turn"); None when neither is known, and nothing is remembered. The
    address scope never equals an identity's: those start with "tenant" or an empty tenant part."""

    identity: str | None
    memo_scope: str | None


ANONYMOUS = Caller(None, None)  # nothing known: neither an identity nor the client's address


def caller(headers: Mapping[str, str], tenant_headers: Sequence[str], user_headers: Sequence[str],
           address: str | None = None) -> Caller:
    """The Caller of a request with these headers, from `address` ("ip:port", as Envoy saw it) if Envoy said."""
    who = [identity(headers, scope, tenant_headers, user_headers, True) for scope in ("tenant", "user")]
    if any(who):
        known = "\0".join(w or "" for w in who)
        return Caller(known, known)
    return Caller(None, f"address\0{_client_ip(address)}") if address else ANONYMOUS


def _client_ip(address: str) -> str:
    """'10.0.0.7:51234' -> '10.0.0.7', '[2001:db8::7]:51234' -> '2001:db8::7'; anything else (a pipe) as it is."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or (":" in host and not host.startswith("[")):
        return address
    return host.removeprefix("[").removesuffix("]")


def namespace_of(secret: bytes, who: str) -> str:
    return hmac.new(secret, who.encode(), hashlib.sha256).hexdigest()[:32]


def end_user(body: Mapping[str, Any]) -> str | None:
    """The end user the app names in the request (OpenAI `user`, Anthropic `metadata.user_id`), if any."""
    user = body.get("user")
    return user if isinstance(user, str) and user else None


def scope_key(namespace: str, model: str, fingerprint: str, encoder: str, user: str | None = None) -> str:
    """`encoder` is the hash of the embedding model: vectors of two encoders are never compared. `user`
    (`end_user`, under `semantic_cache.scope: user` only): one app key serving many end users keeps each one's entries
    apart; the namespace stays the key's, so `cache invalidate --api-key` still drops them all. Without one, the
    scope is what it was."""
    parts = ["scope", namespace, model, fingerprint, encoder, *([user] if user else [])]
    return hashlib.sha256(_canonical(parts)).hexdigest()[:32]


def exact_key(scope: str, text: str) -> str:
    return hashlib.sha256(_canonical(["exact", scope, text])).hexdigest()
