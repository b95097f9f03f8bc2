"""The operator's YAML, as a typed and validated schema.

Every mistake in a config file is reported at once, each with the file, the key path and the
problem, so an operator fixes a file in one go and never reads a Python traceback.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin
from urllib.parse import urlsplit

import re2
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from router.classifier.pii import PII_TYPES
from router.signals import DOMAIN_CATEGORIES

# The file every subcommand reads unless told otherwise: relative, so `semantic-router serve` run in a deployment
# directory (config/, models/, var/) finds its own.
DEFAULT_CONFIG = "config/config.yaml"
CONFIG_HELP = f"router config file (default: {DEFAULT_CONFIG})"
# Parsing, validation and the body rewrite of a 4 MiB request, measured at ~100 ms on a loaded 2-core box.
ROUTER_MARGIN_MS = 200
# Cache backends enforce the lookup budget themselves; the event loop's own timeout is this many budgets,
# a backstop for an answer that came in time but a busy loop would notice late (router/cache/milvus.py).
LOOP_SLACK = 2.0
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]*$")]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(Exception):
    """An invalid config file; `problems` holds (key path, message) pairs."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        lines = [f"{file}: {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class Endpoint(_Strict):
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _not_a_url(cls, data: Any) -> Any:
        """An endpoint is Envoy's socket address: a URL (`http://10.0.0.5:8000`, as a whole endpoint or as its
        address) validated and then failed at Envoy's start, so it is refused here with the form meant."""
        text = data if isinstance(data, str) else data.get("address") if isinstance(data, dict) else None
        if isinstance(text, str) and ("://" in text or "/" in text):
            url = urlsplit(text if "://" in text else f"//{text}")
            port = url.port if url.port is not None else data.get("port") if isinstance(data, dict) else None
            raise ValueError(f"an endpoint is a host and a port, not a URL: write "
                             f"{{address: {url.hostname or 'HOST'}, port: {port or 'PORT'}}}")
        return data


class Pricing(_Strict):
    """Price per million tokens, used for the estimated-cost metric."""

    currency: str = "USD"
    prompt_per_1m: float = Field(default=0.0, ge=0)
    completion_per_1m: float = Field(default=0.0, ge=0)


class PIIPolicy(_Strict):
    """Which detected PII types a model may see."""

    allow_by_default: bool = True
    pii_types_allowed: list[str] = []

    def allows(self, types: frozenset[str]) -> bool:
        if self.allow_by_default:
            return True
        return types <= set(self.pii_types_allowed)


RetryOn = Literal["connect-failure", "refused-stream", "reset", "reset-before-request", "retriable-status-codes",
                  "gateway-error", "5xx"]


class RetryPolicy(_Strict):
    """Envoy's route retry policy for requests whose first choice is this model (router/resilience.py)."""

    retry_on: list[RetryOn] = ["connect-failure", "refused-stream", "reset", "retriable-status-codes"]
    retriable_status_codes: list[Annotated[int, Field(ge=400, le=599)]] = [502, 503, 504]
    # Retries after the first attempt; each one goes to the next model of the fallback chain.
    num_retries: int = Field(default=2, ge=0, le=10)
    # Time to the response headers of one attempt (a hung model): then the next model is tried. Envoy
    # stops this clock at the first response byte, so it never cuts a long stream.
    per_try_timeout_s: float | None = Field(default=None, gt=0)  # none: only envoy.upstream_timeout_s
    # The route's idle timeout: a response (a stream too) silent this long is ended, so a model that
    # stalls after its first byte cannot hang the client until the route timeout. None: Envoy's 5 min.
    stream_idle_timeout_s: float | None = Field(default=None, gt=0)


class OutlierDetection(_Strict):
    """Eject a replica of this model after consecutive failures, so the chain skips it (Envoy's names)."""

    consecutive_5xx: int = Field(default=5, ge=1)
    consecutive_gateway_failure: int = Field(default=5, ge=1)  # 502/503/504 and connection failures
    interval_s: float = Field(default=10.0, gt=0)
    base_ejection_time_s: float = Field(default=30.0, gt=0)
    max_ejection_percent: int = Field(default=100, ge=0, le=100)


class HealthCheck(_Strict):
    """Envoy's active health check of each replica (router/resilience.py): a server that accepts connections but
    never answers (a wedged engine, a GPU hang, a frozen process) fails no request, so only a probe finds it."""

    # vLLM, TGI and llama.cpp's server answer GET /health with 200 while their engine is alive.
    path: str = Field(default="/health", pattern=r"^/")
    interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=3.0, gt=0)
    unhealthy_threshold: int = Field(default=2, ge=1)  # failed probes in a row that mark a replica down
    healthy_threshold: int = Field(default=2, ge=1)  # passed probes in a row that bring it back


class CircuitBreaker(_Strict):
    """Envoy circuit-breaker thresholds of this model's cluster: beyond them requests fail fast (503)."""

    max_connections: int = Field(default=1024, ge=1)
    max_pending_requests: int = Field(default=1024, ge=1)
    max_requests: int = Field(default=1024, ge=1)
    max_retries: int = Field(default=64, ge=0)  # concurrent retries (Envoy's default, 3, is too low here)


class ModelConfig(_Strict):
    endpoints: list[Endpoint] = Field(min_length=1)
    cluster: Name | None = None
    reasoning_family: str | None = None
    pricing: Pricing = Pricing()
    pii_policy: PIIPolicy = PIIPolicy()
    retry: RetryPolicy = RetryPolicy()
    outlier_detection: OutlierDetection | None = OutlierDetection()  # null: never eject
    # Off unless configured: a server without the path (404) would be marked down at once and skipped forever.
    health_check: HealthCheck | None = None
    circuit_breaker: CircuitBreaker = CircuitBreaker()


class ReasoningFamily(_Strict):
    """How a model family switches thinking on: a `chat_template_kwargs` flag or `reasoning_effort`."""

    type: Literal["chat_template_kwargs", "reasoning_effort"]
    parameter: str


class ModelScore(_Strict):
    model: Name
    score: float = Field(ge=0, le=1)


def _ttl(seconds: int) -> int:
    """A TTL of 0 stored every answer already expired, never served, and each request read as a plain miss; 0 reads as
    "do not cache" or as "forever", so neither is guessed (an operator's trial)."""
    if seconds < 1:
        raise ValueError("must be at least 1 second: 0 would store answers that are never served (to cache nothing "
                         "here, write enabled: false)")
    return seconds


Ttl = Annotated[int, AfterValidator(_ttl)]


class CategoryCache(_Strict):
    """Per-category overrides of the semantic cache."""

    enabled: bool | None = None
    similarity_threshold: float | None = Field(default=None, gt=0, le=1)
    verifier_threshold: float | None = Field(default=None, ge=0, le=1)
    ttl_seconds: Ttl | None = None


class Category(_Strict):
    name: Name
    description: str = ""
    model_scores: list[ModelScore] = Field(min_length=1)
    use_reasoning: bool = False
    reasoning_effort: Literal["low", "medium", "high"] = "high"
    examples: list[str] = []
    # Per-category guard actions, applied when the fleet-wide action (classifier.*_action) is `block`:
    # block (refuse with the status), flag (pass with an x-vsr-*-flagged header) or allow (ignore the guard).
    jailbreak_action: Literal["block", "flag", "allow"] = "block"
    jailbreak_status: int = Field(default=403, ge=400, le=499)
    content_safety_action: Literal["block", "flag", "allow"] = "block"
    content_safety_status: int = Field(default=403, ge=400, le=499)
    cache: CategoryCache = CategoryCache()
    sticky: bool = True  # a conversation that started in this category keeps its model (affinity)
    score_margin: float | None = Field(default=None, ge=0, le=1)  # overrides routing.score_margin


class Matcher(Protocol):
    """A compiled RE2 pattern, as far as keyword rules use one: whether it matches."""

    def search(self, text: str) -> object | None: ...

    def fullmatch(self, text: str) -> object | None: ...


# Keyword rules match with RE2, in time linear in the prompt whatever the pattern: under Python's backtracking `re`,
# an operator's `(a+)+$` let a 25-character prompt hold a router worker 5.3 s (trial 13).
_RE2 = re2.Options()
_RE2.case_sensitive = False
_RE2.never_capture = True  # a rule only asks whether it matches
_RE2.log_errors = False  # validation reports a refused pattern, once, with its key path
# The neighbours a zero-width match can see (`^ $ \b \B`, and line anchors under (?m)): an end of the text, a word
# character, another character, a newline. A pattern matching "" beside one of each pair matches every request.
_SIDES = ("", "a", " ", "\n")
# RE2's `\b` knows ASCII letters only: a keyword's "whole word" is spelled with Unicode classes (as `re`'s `\b` was).
_NOT_WORD = r"[^\pL\pN_]"


def _re2(pattern: str) -> Matcher:
    compiled: Matcher = re2.compile(pattern, _RE2)
    return compiled


def _every(requests: str, info: ValidationInfo) -> str:
    """What a pattern that matches anything would do, naming the rule's category when it is valid."""
    category = info.data.get("category")
    return f"so it would send {requests} to '{category}'" if category else f"so it would match {requests}"


def _keyword(keyword: str, info: ValidationInfo) -> str:
    if not keyword.strip():
        raise ValueError(f"keyword '{keyword}' is blank, {_every('every request', info)}")
    return keyword


def _rule_regex(pattern: str, info: ValidationInfo) -> str:
    """A rule's regex as RE2 compiles it, and one that cannot match every request: an empty alternative (`a|`),
    `''` or `x*` used to route every prompt to the rule's category at confidence 1.0 (trial 13)."""
    try:
        _re2(pattern)
    except re2.error as exc:
        raise ValueError(_not_re2(pattern, exc)) from None
    for middle, why in (("", f"the empty string, {_every('every request', info)}"),
                        (" ", f"a lone space, {_every('every request of two words', info)}")):
        for left, right in ((a, b) for a in _SIDES for b in _SIDES):
            probe = _re2(f"{re2.escape(left)}(?:{pattern}){re2.escape(right)}")
            if probe.fullmatch(left + middle + right):
                raise ValueError(f"'{pattern}' matches {why}")
    return pattern


def _not_re2(pattern: str, exc: Exception) -> str:
    """Why `pattern` is refused: Python's own message and position when it is no regex at all, else RE2's."""
    try:
        re.compile(pattern)
    except re.error as py:
        return f"'{pattern}' is not a valid regex: {py}"
    said = _said(exc)
    hint = " (a code point is written \\x{221a}, not \\u221a)" if said.endswith(("\\u", "\\U")) else ""
    return (f"'{pattern}' is not RE2 syntax ({said}): keyword rules use RE2, whose matching time is linear in the "
            f"prompt, so backreferences and lookarounds are unavailable{hint}")


def _said(exc: Exception) -> str:
    """RE2's message (the wrapper raises it as bytes)."""
    said = exc.args[0] if exc.args else exc
    return said.decode() if isinstance(said, bytes) else str(said)


class KeywordRule(_Strict):
    """Route to `category` when any keyword (case-insensitive, whole word) or regex (RE2 syntax) matches."""

    category: Name
    keywords: list[Annotated[str, AfterValidator(_keyword)]] = []
    regex: list[Annotated[str, AfterValidator(_rule_regex)]] = []

    @model_validator(mode="after")
    def _has_a_pattern(self) -> KeywordRule:
        if not self.keywords and not self.regex:
            raise ValueError("a keyword rule needs at least one of keywords or regex")
        try:
            self.compiled()
        except re2.error as exc:  # each compiles alone: together they pass RE2's memory bound
            raise ValueError(f"the rule's patterns do not compile together: {_said(exc)}") from None
        return self

    def compiled(self) -> Matcher:
        """The rule as one pattern: any keyword as a whole word or any regex, case-insensitive."""
        return _re2("|".join([*_whole_words(self.keywords), *(f"(?:{r})" for r in self.regex)]))


def _whole_words(keywords: list[str]) -> list[str]:
    """The keywords, each not joined to a letter, digit or underscore on a side where it ends in one. Keywords alike
    in that share one guard: repeated per keyword, the Unicode classes outgrew RE2's DFA memory (50x slower)."""
    groups: dict[tuple[bool, bool], list[str]] = {}
    for keyword in keywords:
        sides = tuple(c.isalnum() or c == "_" for c in (keyword[0], keyword[-1]))
        groups.setdefault((sides[0], sides[1]), []).append(re2.escape(keyword))
    return [(f"(?:^|{_NOT_WORD})" if before else "") + f"(?:{'|'.join(escaped)})" + (f"(?:{_NOT_WORD}|$)" if after else "")
            for (before, after), escaped in groups.items()]


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=1, le=65535)
    metrics_port: int = Field(default=9190, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    selection_header: str = Field(default="x-selected-cluster", pattern=r"^[a-z0-9-]+$")
    # Router worker processes sharing the ext_proc port (SO_REUSEPORT) under one supervisor that owns the
    # metrics port, the embedded Milvus Lite child and restarts (router/extproc/workers.py). `auto`: one per
    # CPU this process may run on; 1: the single-process router, no supervisor. Read at start only.
    workers: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = "auto"

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> Any:
        """One plain message instead of pydantic's one per union member ("workers.literal['auto']: ...")."""
        count = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str) and value.isdigit():  # a quoted "2" stays accepted, as pydantic's lax int did
            count = int(value)
        if value == "auto" or (count is not None and 1 <= count <= 64):
            return value
        raise ValueError("must be 'auto' or a number of router processes from 1 to 64")


class EnvoyConfig(_Strict):
    """What `semantic-router envoy-config` writes into envoy/envoy.yaml."""

    host: str = "127.0.0.1"
    port: int = Field(default=8801, ge=1, le=65535)
    admin_port: int = Field(default=9901, ge=0, le=65535)
    # Fail closed: when the router cannot answer (down, frozen, past message_timeout_ms) Envoy refuses the request
    # (503 router_unavailable) rather than forward it unrouted and unscreened; true chooses availability over the
    # guards.
    failure_mode_allow: bool = False
    message_timeout_ms: int = Field(default=1000, ge=10)
    # Envoy's header-count limit (its default, made explicit in the generated config); the router refuses
    # requests that leave no room for the headers it adds (431) instead of Envoy failing them with a 500.
    max_headers_count: int = Field(default=100, ge=32, le=1000)
    upstream_timeout_s: float = Field(default=300, gt=0)
    # A client must send its whole request (headers and body) within this: past it Envoy answers 408 and closes the
    # connection. Without it a client that sent headers and stalled held a router stream until the 5 min idle
    # timeout, and ~1,100 of them locked every other client out (trial 4). Not a bound on the answer: a streamed
    # answer may last minutes (envoy.upstream_timeout_s).
    request_timeout_s: float = Field(default=30, gt=0)
    # Requests in flight through this Envoy: each holds one router stream for its whole life, a streamed answer
    # included, so this sizes the router cluster's circuit breakers. Past it a request is refused at once (503
    # gateway_overloaded); Envoy's default, 1,024, queued it until message_timeout_ms and called the router slow.
    max_requests: int = Field(default=2048, ge=1)
    # Envoy's heap budget in MiB (overload manager): past 90 % of it new requests get 503 gateway_overloaded instead
    # of the kernel OOM-killing Envoy with every stream of the Pod; keep it under the container's memory limit.
    max_heap_mb: int = Field(default=1024, ge=64)
    # One JSON line per request on Envoy's stdout, with the router's request id (router/envoy_config.py).
    access_log: bool = True
    # Proxies in front of Envoy that append the client's address to X-Forwarded-For (an ingress, a load balancer:
    # 1 each). Envoy then takes the client's address from X-Forwarded-For, and it scopes an anonymous caller's
    # classification memo; otherwise every caller behind the ingress shares the ingress's address and one scope.
    # 0: Envoy is the edge and ignores X-Forwarded-For for the address, so a client cannot choose its scope. More
    # than the real count lets a client do exactly that (the entry it writes becomes its address).
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)


class RoutingConfig(_Strict):
    """How the model is picked among a category's `model_scores` (router/cost.py)."""

    # Models scoring within this margin of the best allowed one are good enough: the cheapest of them
    # by `pricing` wins. 0: the best score wins (price only breaks exact ties).
    score_margin: float = Field(default=0.0, ge=0, le=1)


class FallbackConfig(_Strict):
    """When the chosen model fails, Envoy retries the request on the next allowed model of the category."""

    enabled: bool = True
    max_fallbacks: int = Field(default=1, ge=0, le=8)  # models after the first one in a chain
    # A client that names a model gets only that model (retried on its replicas), unless this is on.
    explicit_models: bool = False


class AffinityConfig(_Strict):
    """A conversation keeps the model chosen for it while it continues (router/affinity.py)."""

    enabled: bool = True
    # Where the session key comes from, first match wins: a request header, the OpenAI `user` field
    # (one model per end user for ttl_s), or the conversation itself (caller, system prompt, first decisive user turn).
    keys: list[Literal["header", "user", "conversation"]] = Field(default=["header", "conversation"], min_length=1)
    header: str = Field(default="x-session-id", pattern=r"^[a-z0-9-]+$")
    ttl_s: float = Field(default=3600, gt=0)
    max_entries: int = Field(default=100_000, ge=1)
    # A later turn moves the conversation when its own category signal is at least this strong
    # (keyword rules count as 1.0; the classifier's confidence otherwise); above 1: never switch.
    switch_confidence: float = Field(default=0.9, ge=0, le=1.01)


class TracingConfig(_Strict):
    """OpenTelemetry spans of the router and of Envoy, exported over OTLP/gRPC (router/tracing.py)."""

    enabled: bool = False
    endpoint: str = Field(default="http://127.0.0.1:4317", pattern=r"^https?://[^/:]+:\d+/?$")  # OTLP/gRPC
    insecure: bool = True  # plaintext gRPC to the collector (a local agent or sidecar)
    service_name: str = "semantic-router"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # for new traces; a sampled parent is always followed
    batch_delay_ms: int = Field(default=1000, ge=10)
    export_timeout_s: float = Field(default=5.0, gt=0)
    envoy: bool = True  # Envoy traces too (its OpenTelemetry tracer, same collector) and parents our spans


class ClassifierConfig(_Strict):
    enabled: bool = True
    model_dir: str = "models/minilm"
    precision: Literal["int8", "fp32"] = "int8"
    threads: int = Field(default=1, ge=1)
    # Below it the default category applies. Chosen on the hand-labelled chat dev set (84) for the current domain head,
    # whose chat balancing spreads its probabilities: the highest value that routes as many dev prompts right as
    # the arg-max (0.2: 0.714; the old 0.35 sent 15 of 84 to the default, 0.667). offline/README.md, issue 10.
    confidence_threshold: float = Field(default=0.2, ge=0, le=1)
    jailbreak_threshold: float = Field(default=0.5, ge=0, le=1)
    # Plain requests for harmful content (weapons, drugs, theft, sexual content), scored by their own head.
    content_safety_threshold: float = Field(default=0.5, ge=0, le=1)
    # Fleet-wide action per guard: block (refuse; categories may still flag or allow), flag (shadow mode:
    # never refuse, add x-vsr-jailbreak-flagged / x-vsr-content-flagged and count vsr_guard_flags_total) or off.
    # The default thresholds are set for precision on real chat (classifier README: recall / FPR table).
    jailbreak_action: Literal["block", "flag", "off"] = "block"
    content_safety_action: Literal["block", "flag", "off"] = "block"
    pii_enabled: bool = True
    # When classification fails for a request (an exception in the encoder or a head), the guards cannot
    # decide. closed: refuse it (503 classifier_unavailable, Retry-After); open: route it on keyword rules
    # and the default category without the jailbreak and PII checks (x-vsr-guards-skipped). Both are
    # logged with the error and counted (vsr_classifier_failures_total).
    on_failure: Literal["closed", "open"] = "closed"
    # The router's own budget for one classification, queueing included. It must end well inside Envoy's
    # message timeout (checked below), so a slow pass is decided by `on_failure` (reason "timeout") here
    # instead of Envoy's timer forwarding the request unclassified.
    timeout_ms: int = Field(default=600, ge=10)
    # Prompts longer than this are classified on their first and last max_scan_chars/2 characters (the
    # rule validators and keyword rules scan ~0.5 us per character each; the encoder reads 256-token head
    # and tail windows anyway), which bounds the work for a multi-megabyte prompt.
    max_scan_chars: int = Field(default=131_072, ge=1024)
    # Backpressure: at most this many requests wait for or run an encoder pass at once. A request beyond it
    # is not queued: `on_failure` decides at once (reason "overload"), so a burst past capacity gets a fast,
    # counted 503 with Retry-After (closed) or an unguarded default route (open), never an unbounded wait.
    # 32 is ~100 ms of short prompts on one core: well inside timeout_ms.
    max_pending: int = Field(default=32, ge=1)
    # Cosine similarity to the nearest YAML `examples:` utterance above which that category wins over the
    # domain head (0.6 let 0.1% of MMLU questions be captured by 342 fine-grained support categories).
    example_threshold: float = Field(default=0.6, ge=0, le=1)


def is_local_uri(uri: str) -> bool:
    """A file path (embedded Milvus Lite), not a server's address."""
    return not re.match(r"^(https?|tcp|grpc|unix)://", uri)


# The file names milvus_lite's Server accepts: any other raised RuntimeError on every connect, and its __del__ a
# plain-text traceback on stderr, while validate said OK.
_LITE_FILE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,36}$")


class CacheConfig(_Strict):
    """The semantic cache (router/cache/README.md explains every field and the measurements behind them)."""

    enabled: bool = True
    backend: Literal["milvus", "memory"] = "milvus"
    # A local file path = embedded Milvus Lite; http(s)://host:19530 = Milvus standalone or cluster.
    uri: str = "var/cache/milvus_lite.db"
    token_env: str | None = None  # env var holding a Milvus token ("user:password"), never the token itself
    collection: str = Field(default="vsr_semantic_cache", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    index_type: Literal["HNSW", "AUTOINDEX", "FLAT", "IVF_FLAT"] = "HNSW"  # Lite: HNSW -> AUTOINDEX
    index_params: dict[str, int] = {"M": 16, "efConstruction": 200}
    search_params: dict[str, int] = {"ef": 64}
    # Bounded: a lookup never waits for in-flight writes (Session made lookups wait on the write
    # timestamp and blow the 50 ms budget while writes flowed); a fresh entry is found seconds later.
    consistency_level: Literal["Session", "Bounded", "Eventually", "Strong"] = "Bounded"
    # Cosine floor for candidates: the search returns none below it; the verifier decides above it. None = the
    # operating point's (the pair model's manifest: chosen on dev with it; without the pair model the verifier's 0.70).
    similarity_threshold: float | None = Field(default=None, gt=0, le=1)
    # A floor on the verifier score of every path of the operating point (stricter only; 1.0 = exact repeats only);
    # None = the operating point as measured.
    verifier_threshold: float | None = Field(default=None, ge=0, le=1)
    top_k: int = Field(default=3, ge=1, le=32)  # candidates the verifier scores
    # The pair model (router/cache/pair.py) re-reads the candidate the operating point picks with the query; a missing
    # folder fails startup. null = serve on the verifier alone (its own operating point, verifier_threshold).
    pair_model_dir: str | None = "models/cache-pair"
    ttl_seconds: Ttl = 3600
    max_entries: int = Field(default=100_000, ge=1)  # memory backend size bound
    eviction: Literal["lru", "fifo"] = "lru"
    lookup_timeout_ms: int = Field(default=50, ge=1)
    write_timeout_ms: int = Field(default=2000, ge=1)
    # Writes leave the request path through a bounded queue (full: dropped and counted) and are stored
    # write_batch_size entries per backend call (router/cache/writer.py).
    write_queue_size: int = Field(default=2048, ge=1)
    write_batch_size: int = Field(default=128, ge=1, le=1024)
    # At most one partial batch per interval: a backend call costs Milvus Lite about the same whatever its
    # size, and many small upserts slowed the lookups beside them (router/cache/writer.py). 0: no wait.
    write_interval_ms: int = Field(default=500, ge=0, le=10_000)
    # Readiness sends its own key lookup after this long without traffic: a change then reaches /readyz within about
    # this (Kubernetes' probe period is 5 s); 10 s (and 5 probe turns of 10 s to confirm) took 47-68 s.
    probe_idle_s: float = Field(default=1.0, gt=0)
    reconnect_backoff_s: float = Field(default=2.0, ge=0)  # constant: a refused connect costs ~10 ms
    purge_interval_s: float = Field(default=300, ge=1)
    max_semantic_chars: int = Field(default=508, ge=1)  # longer prompts: exact match only (no prefix collisions)
    max_entry_bytes: int = Field(default=60_000, ge=1024, le=65_535)  # Milvus VARCHAR limit
    # Recent exact answers kept in the router process (router/cache/hot.py): a repeated prompt is served
    # without a backend round trip. An invalidation run elsewhere reaches these copies within the TTL.
    hot_answers: int = Field(default=1024, ge=0)
    hot_answers_ttl_s: float = Field(default=30.0, gt=0)
    scope: Literal["tenant", "user", "global"] = "tenant"
    tenant_headers: list[str] = ["x-authz-tenant-id"]
    user_headers: list[str] = ["x-authz-user-id"]
    use_api_key: bool = True  # the bearer token in `authorization` identifies the tenant/user
    hmac_secret_env: str = "VSR_CACHE_HMAC_SECRET"

    @field_validator("uri")
    @classmethod
    def _lite_file_name(cls, uri: str) -> str:
        name = Path(uri).name
        if is_local_uri(uri) and not _LITE_FILE_NAME.match(name):
            raise ValueError(f"Milvus Lite takes a file name of at most 36 letters, digits, '.', '-' and '_', not {name!r}")
        return uri


class ObservabilityConfig(_Strict):
    """Logs, the metrics/health port's bind address and config hot reload (README "Observe")."""

    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_prompts: bool = False  # debugging only: puts prompt text (and any PII in it) into the logs
    # Serves /metrics, /healthz, /readyz on server.metrics_port; 0.0.0.0 in a Pod so probes reach it.
    metrics_host: str = "127.0.0.1"
    watch_config: bool = True  # poll the config file and apply valid edits without a restart
    watch_interval_s: float = Field(default=1.0, gt=0, le=60)
    liveness_stale_after_s: float = Field(default=15.0, gt=1)  # event loop stalled this long = not alive
    # The cache is optional: while its backend is down the router serves uncached, stays ready, and says so
    # (vsr_cache_backend_up 0, a log line, /readyz detail). false: report not ready instead.
    ready_without_cache: bool = True
    cache_probe_interval_s: float = Field(default=1.0, gt=0)  # how often /readyz's cache state is refreshed


class RouterConfig(_Strict):
    server: ServerConfig = ServerConfig()
    envoy: EnvoyConfig = EnvoyConfig()
    auto_model_names: list[Name] = Field(default=["auto"], min_length=1)
    default_model: Name
    default_category: Name = "other"
    reasoning_families: dict[str, ReasoningFamily] = {}
    models: dict[Name, ModelConfig] = Field(min_length=1)
    categories: list[Category] = []
    keyword_rules: list[KeywordRule] = []
    routing: RoutingConfig = RoutingConfig()
    fallback: FallbackConfig = FallbackConfig()
    affinity: AffinityConfig = AffinityConfig()
    tracing: TracingConfig = TracingConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    semantic_cache: CacheConfig = CacheConfig()
    observability: ObservabilityConfig = ObservabilityConfig()

    @model_validator(mode="after")
    def _references_resolve(self) -> RouterConfig:
        problems = list(_dangling_references(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def category(self, name: str) -> Category | None:
        return next((c for c in self.categories if c.name == name), None)

    def cluster_of(self, model: str) -> str:
        cfg = self.models[model]
        return cfg.cluster or re.sub(r"[^A-Za-z0-9_-]", "_", model)


def _dangling_references(cfg: RouterConfig) -> list[str]:
    """Names that point at nothing; pydantic cannot see across sections."""
    out: list[str] = []
    if cfg.default_model not in cfg.models:
        out.append(f"default_model: {_unknown('model', cfg.default_model, cfg.models)}")
    for name, model in cfg.models.items():
        if model.reasoning_family and model.reasoning_family not in cfg.reasoning_families:
            out.append(f"models.{name}.reasoning_family: "
                       f"{_unknown('family', model.reasoning_family, cfg.reasoning_families)}")
        for t in model.pii_policy.pii_types_allowed:
            if t not in PII_TYPES:
                out.append(f"models.{name}.pii_policy.pii_types_allowed: {_unknown('PII type', t, PII_TYPES)}")
    clash = set(cfg.auto_model_names) & set(cfg.models)
    if clash:
        out.append(f"auto_model_names: {sorted(clash)} are also model names")
    names = [c.name for c in cfg.categories]
    for dup in {n for n in names if names.count(n) > 1}:
        out.append(f"categories: duplicate category {dup!r}")
    for i, cat in enumerate(cfg.categories):
        for j, score in enumerate(cat.model_scores):
            if score.model not in cfg.models:
                out.append(f"categories.{i}.model_scores.{j}.model: {_unknown('model', score.model, cfg.models)}")
    lookup = cfg.semantic_cache.lookup_timeout_ms * LOOP_SLACK if cfg.semantic_cache.enabled else 0
    budget = cfg.classifier.timeout_ms + lookup
    if cfg.classifier.enabled and budget + ROUTER_MARGIN_MS > cfg.envoy.message_timeout_ms:
        out.append(f"classifier.timeout_ms: {cfg.classifier.timeout_ms} ms plus twice the cache lookup budget and "
                   f"{ROUTER_MARGIN_MS} ms for parsing must stay under envoy.message_timeout_ms "
                   f"({cfg.envoy.message_timeout_ms} ms), or Envoy forwards slow requests undecided")
    # Left out, the default category may name no category: its requests go to default_model. Written, it must
    # resolve: a typo would send every low-confidence request past the category the operator meant.
    if "default_category" in cfg.model_fields_set and cfg.default_category not in names:
        out.append(f"default_category: {_unknown('category', cfg.default_category, names)}")
    known = set(names) | {cfg.default_category}
    for i, rule in enumerate(cfg.keyword_rules):
        if rule.category not in known:
            out.append(f"keyword_rules.{i}.category: {_unknown('category', rule.category, sorted(known))}")
    return out


# Sections each router process reads once, at start (ports, workers, logging, probes, the watcher: server.py's
# `bootstrap`, the supervisor): a hot reload applies the rest of an edit.
RESTART_ONLY = ("server", "observability")


def restart_only_changes(running: RouterConfig, edited: RouterConfig) -> list[str]:
    """The keys an edit changes that only a restart applies: `server.workers: 2 -> 3` was reported as a hot reload
    and logged `config_applied`, and two workers went on serving (an operator's trial)."""
    out = []
    for section in RESTART_ONLY:
        before, after = getattr(running, section), getattr(edited, section)
        out += [f"{section}.{key}" for key in type(before).model_fields if getattr(before, key) != getattr(after, key)]
    return out


def config_warnings(cfg: RouterConfig) -> list[str]:
    """Settings that are valid but cannot do what they say: `validate` prints them and a load logs them. A renamed
    classifier category ("medicine" for "health") validated clean and silently sent every such request to the
    default category; `use_reasoning` on models without a reasoning family sent nothing (operators' trials)."""
    out = []
    if cfg.fallback.enabled and cfg.fallback.max_fallbacks >= len(cfg.models):
        out.append(f"fallback.max_fallbacks: {cfg.fallback.max_fallbacks} but there are {len(cfg.models)} models, so "
                   f"a chain holds at most {len(cfg.models) - 1} more")
    for i, cat in enumerate(cfg.categories):
        out += [f"categories.{i}.{warning}" for warning in _category_warnings(cfg, cat)]
    return out + _unreachable_categories(cfg) + _shadowed_keywords(cfg) + _identity_warnings(cfg)


def _shadowed_keywords(cfg: RouterConfig) -> list[str]:
    """A keyword a later rule of another category repeats: rules are tried in order, so the later one never matches
    with it (trial 13: the same word in two rules silently went to the first)."""
    first: dict[str, int] = {}
    out = []
    for i, rule in enumerate(cfg.keyword_rules):
        for j, keyword in enumerate(rule.keywords):
            earlier = first.setdefault(keyword.casefold(), i)
            if earlier != i and cfg.keyword_rules[earlier].category != rule.category:
                out.append(f"keyword_rules.{i}.keywords.{j}: {keyword!r} is also a keyword of keyword_rules.{earlier} "
                           f"({cfg.keyword_rules[earlier].category!r}), which is tried first, so it never routes to "
                           f"{rule.category!r} (keep it in one rule)")
    return out


def _category_warnings(cfg: RouterConfig, cat: Category) -> Iterable[str]:
    """A category's settings that cannot act, each as 'key: why'."""
    families = [cfg.reasoning_families.get(cfg.models[s.model].reasoning_family or "") for s in cat.model_scores]
    if cat.use_reasoning and not any(families):
        yield ("use_reasoning: none of its models has a reasoning_family, so nothing switches reasoning on (give one "
               "a family from reasoning_families, or drop use_reasoning)")
    if "reasoning_effort" in cat.model_fields_set and not (
            cat.use_reasoning and any(f is not None and f.type == "reasoning_effort" for f in families)):
        yield (f"reasoning_effort: {cat.reasoning_effort} is never sent: it goes only with use_reasoning: true to a "
               "model of a reasoning_effort family (a chat_template_kwargs family switches thinking on or off only)")
    models = [s.model for s in cat.model_scores]
    for model in sorted({m for m in models if models.count(m) > 1}):
        scores = ", ".join(f"{s.score:g}" for s in cat.model_scores if s.model == model)
        yield (f"model_scores: {model!r} is listed {models.count(model)} times (scores {scores}): the ranking and the "
               "price choice each read a different one; keep one")
    for guard in ("jailbreak", "content_safety"):
        fleet, own = getattr(cfg.classifier, f"{guard}_action"), getattr(cat, f"{guard}_action")
        outcome = "flag" if fleet == "flag" else "allow"  # what a fleet-wide flag or off does in every category
        if fleet != "block" and f"{guard}_action" in cat.model_fields_set and own != outcome:
            yield (f"{guard}_action: {own} cannot act: classifier.{guard}_action is {fleet}, and a category's own "
                   f"action applies only under block")


def _unreachable_categories(cfg: RouterConfig) -> list[str]:
    """Categories nothing can choose: no classifier category of that name, no examples, no keyword rule."""
    ruled = {rule.category for rule in cfg.keyword_rules}
    out, unreachable = [], []
    for i, cat in enumerate(cfg.categories):
        by_classifier = cfg.classifier.enabled and (cat.name in DOMAIN_CATEGORIES or cat.examples)
        if by_classifier or cat.name in ruled or cat.name == cfg.default_category:
            continue
        if cfg.classifier.enabled:
            out.append(f"categories.{i}.name: {cat.name!r} can never be chosen: it is not a classifier category"
                       f"{_hint(cat.name, list(DOMAIN_CATEGORIES), 'those are')}, has no examples and no keyword rule "
                       "names it")
        else:
            unreachable.append(cat.name)
    if unreachable:  # one line: a keyword-only deployment chose this, and 14 lines would bury the rest
        out.append(f"classifier.enabled: false, so only keyword rules choose a category; none names "
                   f"{len(unreachable)} of them ({', '.join(unreachable)})")
    return out


def _identity_warnings(cfg: RouterConfig) -> list[str]:
    """Identity headers written in the file: the generated Envoy config removes them from every client request
    (router/envoy_config.py), so without an auth filter added in front of ext_proc they are never there, and
    `tenant_headers: [x-tenant-id]` left one API key's tenants sharing cached answers (trial 13)."""
    c = cfg.semantic_cache
    if not c.enabled or c.scope == "global":
        return []
    return [f"semantic_cache.{key}: Envoy's generated config removes {', '.join(getattr(c, key))} from every client "
            "request, so the router sees it only when an auth filter added to Envoy's http_filters before ext_proc "
            "sets it from a verified credential (README, \"Identity headers from an auth filter\"); without one the "
            "identity falls back to the API key"
            for key in ("tenant_headers", "user_headers") if key in c.model_fields_set and getattr(c, key)]


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    return f"unknown {kind} {name!r}{_hint(name, list(known), 'known')}"


def _hint(name: str, choices: list[str], listed: str) -> str:
    """The close name meant, else every one it could have been."""
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" ({listed}: {', '.join(choices)})" if choices else ""


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _unwrap(kind: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` as X."""
    while get_origin(kind) in (Annotated, Union, types.UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    return kind


def _kind_at(loc: tuple[Any, ...]) -> Any:
    """The schema type at a key path, found by walking the models down it."""
    kind: Any = RouterConfig
    for part in loc:
        kind = _unwrap(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(str(part))
            kind = field.annotation if field else None
        else:  # list items and dict values
            args = get_args(kind)
            kind = args[-1] if args else None
    return _unwrap(kind)


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    kind = _kind_at(loc)
    return list(kind.model_fields) if isinstance(kind, type) and issubclass(kind, BaseModel) else []


def _homes(kind: Any = RouterConfig, prefix: str = "") -> dict[str, list[str]]:
    """Every key of the schema with the paths it is written at (`categories[].jailbreak_status`)."""
    out: dict[str, list[str]] = {}
    kind = _unwrap(kind)
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return out
    for name, field in kind.model_fields.items():
        out.setdefault(name, []).append(prefix + name)
        inner = _unwrap(field.annotation)
        args = get_args(inner)
        below = prefix + name + ("[]" if get_origin(inner) is list else ".NAME" if get_origin(inner) is dict else "")
        for key, paths in _homes(args[-1] if args else inner, below + ".").items():
            out.setdefault(key, []).extend(paths)
    return out


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """What pydantic calls "Extra inputs are not permitted": where the key belongs when it is a key elsewhere
    (`jailbreak_status` under `classifier:` is a category's), else the close key meant, else every allowed one."""
    elsewhere = _homes().get(str(loc[-1]))
    if elsewhere:
        return f"unknown key here (it is written at {' or '.join(elsewhere)})"
    return "unknown key" + _hint(str(loc[-1]), _keys_at(loc[:-1]), "allowed")


def _expected_mapping(loc: tuple[Any, ...], value: Any) -> str:
    """What pydantic calls "Input should be a valid dictionary or instance of CategoryCache", said with the keys
    (`cache: false` is a common guess: its mapping has `enabled`)."""
    keys = _keys_at(loc)
    hint = f" (to switch it off write {{enabled: {str(value).lower()}}})" if isinstance(value, bool) and "enabled" in keys \
        else ""
    return f"expected a mapping with keys {', '.join(keys)}, not {json.dumps(value, default=str)}{hint}"


def parse_config(data: Any, file: str = "<config>") -> RouterConfig:
    """Validate already-loaded YAML data; raises ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(file, [("", "the file must contain a mapping of settings")])
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False):
            if err["type"] == "extra_forbidden":
                msg = _unknown_key(err["loc"])
            elif err["type"] == "model_type":
                msg = _expected_mapping(err["loc"], err["input"])
            else:
                msg = err["msg"].removeprefix("Value error, ")
            problems.extend((_format_location(err["loc"]), part) for part in msg.split("; "))
        raise ConfigError(file, _split_embedded_paths(problems)) from None


def _split_embedded_paths(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Cross-reference errors carry their own key path as 'path: message'; lift it out."""
    out = []
    for path, msg in problems:
        head, sep, tail = msg.partition(": ")
        if not path and sep and re.fullmatch(r"\S+", head):  # model names may hold '-', '/' or ':'
            out.append((head, tail))
        else:
            out.append((path, msg))
    return out


def drain_s(cfg: RouterConfig) -> float:
    """How long a stopping router lets in-flight streams run: as long as Envoy lets a request run, so every answer
    ends whole (a 5 s grace cut longer answers: reset with failure_mode_allow false, else passed on unprocessed,
    uncached and unbilled). An idle router exits at once; an orchestrator's own kill timer still bounds it."""
    return cfg.envoy.upstream_timeout_s


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate a YAML config file."""
    return parse_config_text(read_config_text(path), str(path))


def read_config_text(path: str | Path) -> str:
    """The file's text; a file that is not UTF-8 (a Latin-1 `é`) is a ConfigError naming the byte and its line,
    not a UnicodeDecodeError traceback from `validate` or `serve`."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(file, [("", f"cannot read file: {exc.strerror}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"not UTF-8: byte 0x{data[exc.start]:02x} on line {line}; save the file as UTF-8"
        raise ConfigError(file, [("", problem)]) from None


def parse_config_text(text: str, file: str) -> RouterConfig:
    """Validate a config file's text (`file` names it in the errors)."""
    return parse_config(load_yaml(text, file), file)


# PyYAML's words for the usual editing slips, said as the slip (an operator's trial read "expected <block end>, but
# found '?'" for a key indented two spaces too few).
_YAML_HINTS = {
    "expected <block end>": "this line is indented unlike the block above it: a key starts in the same column as "
                            "the other keys of its mapping",
    "found character '\\t'": "YAML indents with spaces, not tabs",
}


def load_yaml(text: str, file: str) -> Any:
    """A config file's YAML data; a key written twice in one mapping is a ConfigError. PyYAML keeps the last one
    silently: a second `llama-3.1-8b:` block replaced the first's endpoints, pricing and PII policy, and a block
    copied under its old name gave "unknown model" for the name it was meant to have (an operator's trial)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = list(_duplicate_keys(node, ()))
        if duplicates:
            raise ConfigError(file, duplicates)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = str(getattr(exc, "problem", exc))
        hint = next((f" ({hint})" for start, hint in _YAML_HINTS.items() if problem.startswith(start)), "")
        raise ConfigError(file, [("", f"invalid YAML: {where}{problem}{hint}")]) from None
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, path: tuple[str, ...]) -> Iterable[tuple[str, str]]:
    """(key path, message) for each key a mapping at any depth repeats, with the lines of both."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, str(i)))
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[tuple[str, str], yaml.Node] = {}
    for key, value in node.value:
        name = str(key.value)
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            seen = first.setdefault((key.tag, name), key)
            if seen is not key:
                yield (".".join((*path, name)), (f"duplicate key {name!r} on lines {seen.start_mark.line + 1} and "
                       f"{key.start_mark.line + 1}: YAML would keep only the last; merge them or rename one"))
        yield from _duplicate_keys(value, (*path, name))


def config_version(cfg: RouterConfig) -> str:
    """12 hex digits naming what a config does (comments and layout aside). `validate` prints it and every worker
    reports the one it runs (/readyz, `vsr_config_info`, each request's log line): after a push, an operator can
    see which workers took it."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
