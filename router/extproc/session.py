"""One ext_proc stream: the phases of one HTTP request, from headers to the last response byte.

Envoy sends request headers, the buffered request body, response headers, then the response body
(buffered JSON, or streamed SSE after a mode override; no SSE body at all when there is nothing in it to store or
count). Each phase has one handler; phases the
router did not ask for never arrive. The session knows the wire format and the policy, not how
classification or caching work inside.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router import affinity, apis, resilience, screening
from router import openai_wire as wire
from router.cache import CacheHit, build_cache_request, cache_control, keys
from router.chat_schema import MAX_ITEMS
from router.classifier.canonical import canonical
from router.classifier.pii import PII_TYPES
from router.classifier.pii_rules import STRUCTURED_TYPES, find_structured
from router.errors import (
    BodyTooLarge,
    ClassifierUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotServed,
    Outcome,
    RouterError,
    TooManyHeaders,
    TooManyUnscreenedTurns,
    UnsupportedEncoding,
    UnsupportedPath,
)
from router.extproc import messages as msg
from router.extproc.encoder_queue import EncoderQueue, Overloaded
from router.policy import Decision
from router.runtime import Runtime
from router.signals import NO_SIGNAL, Classification, PIIFinding, with_earlier_turns
from router.tracing import NO_TRACE, RequestTrace

log = structlog.get_logger(__name__)
T = TypeVar("T")

MODELS_PATH = "/v1/models"
# Headers the router may add to a routed request: the selection header, x-vsr-routed-model, x-vsr-routed-category
# (router/resilience.py) and content-length for a chunked body. Envoy checks the mutated map against
# max_headers_count (pseudo-headers included, as the router counts them) and fails the request with a 500
# (`header_mutation_result_exceeds_limit`) when it does not fit.
REQUEST_HEADROOM = 4
Failure = Literal["error", "timeout", "overload"]
_SKIPPED: dict[Failure, str] = {"error": "classifier_failed", "timeout": "classifier_timeout",
                                "overload": "classifier_overload"}
# Longest rest of a conversation the PII screen scans on the event loop rather than in the executor.
INLINE_SCAN_CHARS = 2048
# Earlier user turns and tool results the classification memo does not hold that one request may classify, one
# encoder pass each (2.2 ms for a short turn, ~35 ms for a two-window one). A genuine conversation's are in the memo
# (each was a latest turn before); sent cold (a restart, another replica) ShareGPT dev requests need 2 (median), 12
# (p99), 27 (max), and an SDK trial's real 50-turn conversation failed past its retries at 16. 64 short passes cost
# ~140 ms; long turns meet the request's deadline first (router/classifier/README.md, "Every user turn").
MAX_EARLIER_PASSES = 64
# Largest body parsed and read (router/screening.py) on the event loop: a larger one is in a thread (JSON parsing and
# the schema's checks take ~0.1 s a MB of dense JSON, reading it ~20 ms; on the loop every other stream of the worker
# waited for them: README, "Behaviour").
INLINE_BODY_BYTES = 256 * 1024
# A guard under a `flag` action lets the request through and says so in the response (shadow mode).
FLAG_HEADERS = {"jailbreak": "x-vsr-jailbreak-flagged", "content_safety": "x-vsr-content-flagged"}


@dataclass
class RequestState:
    """What the request phases learned; read by the response phases and the final record."""

    headers: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    signal: Classification = NO_SIGNAL
    decision: Decision | None = None
    cache_key: Any = None
    cache_control: frozenset[str] = frozenset()  # the client's no-store / no-cache (cache.cache_control)
    outcome: Outcome = Outcome.PASSTHROUGH
    classifier_error: str | None = None  # "Type: message" when classification failed
    classifier_failure: Failure | None = None  # an exception, or out of its time budget
    cache_result: str = "off"  # off | skip:<reason> | hit | miss
    cache_hit: CacheHit | None = None  # what a hit matched (entry, scores): the log line names it
    cache_stored: bool = False  # the answer was queued for the cache under cache_key
    affinity: str | None = None  # new | sticky | rederived | switched | none (router/affinity.py)
    # What the screen made of each earlier text it read (bounded as the classifier read it): affinity looks for the
    # conversation's first decisive turn here, at no cost of its own.
    earlier_signals: dict[str, Classification] = field(default_factory=dict)
    api: apis.Api = "chat"  # chat completions, OpenAI Responses or Anthropic Messages (router/apis.py)
    caller: keys.Caller = keys.ANONYMOUS  # who sent it: the classification memo and affinity are per caller
    stateful: bool = False  # the answer depends on server-side state: never cached
    stream_usage: bool = True  # a streamed answer carries usage to count (a chat stream: include_usage asked)
    model_only: apis.ModelOnly | None = None  # /v1/completions, /v1/embeddings: routed by their `model` alone
    error_code: str | None = None
    error_category: str | None = None  # the category whose rules blocked the request (no Decision then)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ResponseState:
    status: int = 0
    streaming: bool = False
    complete: bool = False  # the answer's last byte passed the router (end_of_stream): else it was cut
    unread: bool = False  # the body went to the client without passing the router: whether it was cut is unknown
    body: bytearray = field(default_factory=bytearray)
    decoder: wire.SSEDecoder = field(default_factory=wire.SSEDecoder)
    assembler: apis.Assembler = field(default_factory=wire.StreamAssembler)
    usage: dict[str, Any] | None = None
    answered_by: str | None = None  # the model that answered, after any fallback (Envoy says)
    response_id: str | None = None  # a Responses answer's id (affinity for previous_response_id)
    attempts: int = 1


class StreamSession:
    """Turns the ProcessingRequests of one stream into ProcessingResponses."""

    def __init__(self, runtime: Runtime, executor: EncoderQueue):
        self.runtime = runtime
        self.executor = executor
        self.request = RequestState()
        self.response = ResponseState()
        self.busy = 0.0  # time spent in our handlers: the latency the sidecar adds
        self.trace: RequestTrace = NO_TRACE
        self.trace_carrier: dict[str, str] = {}  # the stream's gRPC metadata: Envoy's trace context

    async def handle(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        start = time.perf_counter()
        try:
            return await self._dispatch(req)
        finally:
            self.busy += time.perf_counter() - start

    async def _dispatch(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        phase = req.WhichOneof("request")
        try:
            if phase == "request_headers":
                return await self.on_request_headers(req.request_headers,
                                                     msg.attribute(req, msg.CLIENT_ADDRESS_ATTRIBUTE))
            if phase == "request_body":
                return await self.on_request_body(req.request_body)
            if phase == "response_headers":
                return self.on_response_headers(req.response_headers)
            if phase == "response_body":
                return await self.on_response_body(req.response_body)
        except RouterError as exc:
            return self.reject(exc)
        except Exception:
            log.exception("extproc_phase_failed", phase=phase, request_id=self.request.request_id)
            return self.reject(InternalError("The router failed to process the request"))
        return _continue(phase)

    # ---- request phases ----------------------------------------------------------------------

    async def on_request_headers(self, headers: pb.HttpHeaders, client: str | None) -> pb.ProcessingResponse:
        """`client`: the address Envoy saw the request come from, if it said (the memo scope of an anonymous caller)."""
        self.request.headers = h = msg.header_map(headers)
        self.request.request_id = h.get("x-request-id", "")
        method, path = h.get(":method", ""), h.get(":path", "").split("?", 1)[0]
        if path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            return self._answer_models(method, path)
        if path == apis.COUNT_TOKENS_PATH:
            self.request.api = "messages"
            raise NotServed("This router does not count tokens: /v1/messages/count_tokens is not served")
        api, kind = apis.PATHS.get(path), apis.MODEL_ONLY_PATHS.get(path)
        if api is None and kind is None:
            if methods := apis.stored_response_methods(path):
                if method not in methods:
                    raise MethodNotAllowed(f"{method} is not allowed on {path[:200]}; use {' or '.join(methods)}")
                return await self._route_stored_response(path)
            if path.startswith(apis.MESSAGES_PREFIX):
                self.request.api = "messages"  # an Anthropic client reads Anthropic errors
            raise UnsupportedPath(f"{method} {path[:200]} is not served by this router: {apis.SERVED}")
        c = self.runtime.cfg.semantic_cache
        # Read once: the memo's scope (completions need it as well as the chat-like APIs) and affinity's caller.
        self.request.caller = keys.caller(apis.cache_identity(h), c.tenant_headers, c.user_headers, client)
        if api is not None:
            self.request.api = api
            self.request.cache_control = cache_control(h)  # an unknown directive is refused, cache on or off
            if self.runtime.tracing is not None:
                self.trace = self.runtime.tracing.start(self.trace_carrier, h)
        limit = self.runtime.cfg.envoy.max_headers_count
        if len(headers.headers.headers) + REQUEST_HEADROOM > limit:
            raise TooManyHeaders(f"the request has {len(headers.headers.headers)} headers; at most "
                                 f"{limit - REQUEST_HEADROOM} are accepted")
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use POST")
        if headers.end_of_stream:  # an empty /v1/completions body passed through to the default model
            raise InvalidRequest(f"a request to {path} needs a JSON body")
        encoding = h.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):  # the guards would read compressed bytes as bad JSON, or not at all
            raise UnsupportedEncoding(f"Content-Encoding '{encoding}' is not supported: send the body uncompressed",
                                      param="content-encoding")
        length = h.get("content-length", "")
        if length.isdigit():
            self._check_size(int(length))  # refuse early, before Envoy buffers the body
        if kind is not None:
            self.request.model_only = kind
            return msg.continue_request_headers(msg.ROUTE_BY_BODY)
        return msg.continue_request_headers(msg.SCREEN_AND_READ_ANSWER)

    def _answer_models(self, method: str, path: str) -> pb.ProcessingResponse:
        """GET /v1/models and /v1/models/{name}: the router's names (auto included), which no model server knows."""
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use GET")
        self.request.outcome = Outcome.MODELS
        if path == MODELS_PATH:
            return msg.immediate(200, wire.models_list(self.runtime.policy.public_model_names()), self._id_header())
        name = urllib.parse.unquote(path.removeprefix(MODELS_PATH + "/"))
        if not self.runtime.policy.is_known_model(name):
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")
        return msg.immediate(200, json.dumps(wire.model_object(name)).encode(), self._id_header())

    async def on_request_body(self, body: pb.HttpBody) -> pb.ProcessingResponse:
        deadline = time.monotonic() + self.runtime.cfg.classifier.timeout_ms / 1000  # parsing counts too
        self._check_size(len(body.body))  # chunked uploads carry no content-length
        if self.request.model_only:
            return await self._route_by_model(body.body, deadline)
        parsed, screen = await _off_loop_when_large(len(body.body), _read, self.request.api, body.body)
        chat, self.request.stateful = parsed.chat, parsed.stateful
        self.request.stream_usage = parsed.api != "chat" or chat.include_usage  # Responses, Messages: always
        text = await self._screen(chat, screen, deadline)
        with self.trace.span("vsr.decision"):
            decision = self.runtime.policy.decide(chat, self.request.signal, text)
            if decision.auto and self.runtime.affinity is not None:
                start = time.perf_counter()
                known = self.request.earlier_signals
                turns = [(t, known.get(self._bounded(t), NO_SIGNAL)) for t in screen.user_turns()]
                decision, self.request.affinity = await affinity.resolve(
                    self.runtime.policy, self.runtime.affinity, chat, self.request.headers, decision,
                    self.request.signal, self.request.caller.identity, turns)
                self.request.timings["affinity"] = time.perf_counter() - start
            self.request.decision = decision
            if self.trace.recording:
                self.trace.set(category=decision.category, model=decision.model, reason=decision.reason,
                               route=decision.route, affinity=self.request.affinity, reasoning=decision.reasoning)
        hit = await self._cache_lookup(parsed, decision)
        if hit is not None:
            return hit
        self.request.outcome = Outcome.UPSTREAM
        if parsed.api == "chat":
            routed = self.runtime.policy.rewrite(chat, decision)
        else:
            routed = apis.rewrite(parsed, decision.model, self.runtime.policy.effort_for(decision))
        # The category goes along only for chat bodies whose reasoning the router set: a fallback retry rewrites it.
        switched = decision.auto and not decision.client_reasoning and parsed.api == "chat"
        category = decision.category if switched else None
        headers = {self.runtime.cfg.server.selection_header: decision.route or decision.cluster,
                   **resilience.routed_headers(decision.model, category)}
        return msg.route_request(routed, headers)

    async def _route_stored_response(self, path: str) -> pb.ProcessingResponse:
        """GET/DELETE /v1/responses/{id}[/...]: to the model whose server stored that response, if known."""
        rid = path[len(apis.RESPONSES_ITEM_PREFIX):].split("/", 1)[0]
        store = self.runtime.affinity
        pin = await store.get(affinity.response_key(self.request.headers, rid)) if store is not None and rid else None
        if pin is None or pin.model not in self.runtime.cfg.models:
            return msg.continue_request_headers(msg.PASS_THROUGH)  # unknown here: the default model
        cluster = self.runtime.cfg.cluster_of(pin.model)
        return msg.route_headers({self.runtime.cfg.server.selection_header: cluster}, msg.PASS_THROUGH)

    async def _screen(self, chat: wire.ChatRequest, screen: screening.Screen, deadline: float) -> str:
        """Every text put in front of the model (`screen`, router/screening.py) through the classifier for the guards
        and the PII rules (`request.signal`); returns the classified text, bounded as the classifier read it, which the
        keyword rules scan too."""
        text = self._bounded(screen.latest)
        with self.trace.span("vsr.classify"):
            signal = await self._classify(text, deadline, screen_jailbreak=chat.has_user_turn)
            signal = self._unscreened(signal, len(text) < len(screen.latest), PII_TYPES)
            signal = await self._screen_earlier_turns(screen, signal, deadline)
            signal = await self._screen_other_turns(screen, signal, deadline)
            if screen.unreadable and signal is not NO_SIGNAL:
                signal = dataclasses.replace(signal, unreadable=screen.unreadable)
            self.request.signal = signal
            if self.trace.recording:
                self.trace.set(category=signal.category, confidence=round(signal.confidence, 4),
                               jailbreak_score=round(signal.jailbreak_score, 4),
                               pii_types=",".join(sorted(signal.pii_types)), source=signal.source,
                               guard_turns=",".join(f"{g}:{t}" for g, t in signal.earlier_turns) or None)
        return text

    async def _route_by_model(self, raw: bytes, deadline: float) -> pb.ProcessingResponse:
        """/v1/completions and /v1/embeddings: to the cluster of their explicit `model` (auto: the default).

        A completions prompt reaches the model as surely as a chat turn, so it passes the same guards and the
        model's PII rule first (`apis.completions_turns`), when any of them reads text. The route stays the one
        asked for: no fallback chain on this path."""
        # The chat path's JSON limits: depth, Unicode, an object.
        body = await _off_loop_when_large(len(raw), wire.load_object, raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
        policy = self.runtime.policy
        if not policy.is_known_model(model):
            raise ModelNotFound(f"The model '{model}' does not exist", param="model")
        target = model if model in self.runtime.cfg.models else self.runtime.cfg.default_model
        cluster = self.runtime.cfg.cluster_of(target)
        decision = Decision(model=target, cluster=cluster, category="", confidence=0.0, reasoning=None,
                            auto=target != model, chain=(target,), route=cluster, reason="requested by the client")
        if self.request.model_only == "completions" and policy.checks_text_for(target):
            chat = apis.completions_turns(body, target)
            text = await self._screen(chat, await _off_loop_when_large(len(raw), screening.screen, chat), deadline)
            decision = dataclasses.replace(policy.decide(chat, self.request.signal, text), chain=decision.chain,
                                           route=decision.route, auto=decision.auto)
        self.request.outcome = Outcome.UPSTREAM
        self.request.decision = decision
        # Always the parsed body, never the client's bytes: with a key sent twice ({"prompt": A, "prompt": B}) the
        # guards read B (Python keeps the last), while a model server that keeps the first would have generated from A.
        routed = json.dumps({**body, "model": target}, separators=(",", ":"), ensure_ascii=False).encode()
        return msg.route_request(routed, {self.runtime.cfg.server.selection_header: cluster})

    def _check_size(self, size: int) -> None:
        limit = self.runtime.cfg.server.max_body_bytes
        if size > limit:
            raise BodyTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")

    async def _classify(self, text: str, deadline: float, screen_jailbreak: bool = True) -> Classification:
        """One encoder pass by `deadline`. When it fails or runs late, `classifier.on_failure` decides.

        A request with no user turn (a system prompt alone) is not screened for jailbreaks: instructions
        are what system prompts are made of, and the head scores them as such.
        """
        if self.runtime.classifier is None:
            return NO_SIGNAL
        start = time.perf_counter()
        try:
            result = await self._encode_bounded(text, deadline)
        except TimeoutError:
            budget = self.runtime.cfg.classifier.timeout_ms
            return self._classifier_failed(TimeoutError(f"no result within {budget} ms"), "timeout")
        except Overloaded as exc:
            return self._classifier_failed(exc, "overload")
        except Exception as exc:  # noqa: BLE001 - any failure is handled by the operator's explicit policy
            return self._classifier_failed(exc, "error")
        finally:  # every turn the request screens counts
            timings = self.request.timings
            timings["classify"] = timings.get("classify", 0.0) + time.perf_counter() - start
        self.runtime.classifier_failures.success()
        return result if screen_jailbreak else dataclasses.replace(result, jailbreak_score=0.0)

    def _bounded(self, text: str) -> str:
        """What the classifier reads of a text: its head and tail (classifier.max_scan_chars)."""
        return wire.bounded(text, self.runtime.cfg.classifier.max_scan_chars)

    async def _screen_earlier_turns(self, screen: screening.Screen, signal: Classification,
                                    deadline: float) -> Classification:
        """The guards and the name/address screen read every earlier user turn too: the router is stateless, so a
        client may send a fabricated history whose first turn is a DAN prompt and whose last is innocent. Tool results
        are read alike (a tool's output is attacker-influenced: a web page or file may carry an injected instruction),
        and a last assistant message, which the model continues as its own words (a prefill).

        A genuine conversation's earlier turns were each the latest turn of an earlier request, so the per-caller
        memo (per client address for a caller without identity) answers them on the loop, without a pass. The others
        cost a pass each (the exported graph takes no attention mask: texts of different lengths share no batched
        run), one after another in `_classify`, by the request's deadline and within max_pending. Past
        MAX_EARLIER_PASSES of them, or at a pass that fails, the request is decided by `classifier.on_failure` like the
        latest turn's failure: closed refuses (503, Retry-After), open goes on with what was screened and says
        x-vsr-guards-skipped. The passes spent are memoised, so a long conversation sent cold (a new replica) gets
        further at each retry instead of being refused for ever; a caller the memo cannot scope, whose retries would
        get no further, gets a 400 at once. The category stays the latest turn's; each text's classification is kept
        in `request.earlier_signals` for affinity."""
        clf = self.runtime.classifier
        if clf is None or signal is NO_SIGNAL:
            return signal  # no classifier, or it failed: the guards are off for this request either way
        scope = self.request.caller.memo_scope
        turns: dict[str, screening.Other] = {}  # a text repeated in the history is screened once
        cut: set[str] = set()  # those bounded by max_scan_chars
        for other in screen.earlier:
            text = self._bounded(other.text)
            if text not in turns or other.asks and not turns[text].asks:
                # One pass per text, judged where it asks: a user turn repeating a tool result's text is a request
                # for the content-safety guard (keeping the first place, the tool's, zeroed its score).
                turns[text] = other
            if len(text) < len(other.text):
                cut.add(text)
        if len(turns) > MAX_ITEMS:  # blocks of one message are not messages: 55k tool results needed ~860 retries
            raise TooManyUnscreenedTurns(f"the conversation holds {len(turns)} texts the guards read (earlier user "
                                         f"turns, tool results, documents); at most {MAX_ITEMS} are accepted",
                                         param="messages")
        unknown = {text for text in turns if clf.cached(text, scope) is None}  # one memo lookup each, here
        if scope is None and len(unknown) > MAX_EARLIER_PASSES and self.runtime.cfg.classifier.on_failure == "closed":
            # Nothing is remembered for a caller without identity or address: each retry would start again at the
            # first turn, refused with a 503 its client retries for ever.
            raise TooManyUnscreenedTurns(
                f"{len(unknown)} earlier turns and tool results are new to this router, which screens at most "
                f"{MAX_EARLIER_PASSES} a request and remembers them only for a caller it can tell apart: send an API "
                f"key, or at most {MAX_EARLIER_PASSES} earlier turns and tool results", param="messages")
        screened: list[tuple[str, Classification]] = []
        passes = 0
        for text, other in turns.items():
            if text in unknown:
                if passes == MAX_EARLIER_PASSES:  # the passes spent are memoised: a retry gets further
                    left = len(unknown) - passes
                    self._classifier_failed(Overloaded(
                        f"{len(unknown)} earlier turns and tool results were not known to this router; "
                        f"{MAX_EARLIER_PASSES} are classified per request"), "overload",
                        f"{len(unknown)} earlier turns and tool results were new to this router, which screens "
                        f"{MAX_EARLIER_PASSES} a request and remembers them: {left} remain, retry to go on")
                    break
                passes += 1
            result = await self._classify(text, deadline)
            if result is NO_SIGNAL:
                break  # on_failure decided it (open: the turns screened so far still count)
            self.request.earlier_signals[text] = result
            if not other.asks:  # a tool's output: the jailbreak guard only
                result = dataclasses.replace(result, content_safety_score=0.0)
            screened.append((other.label, self._unscreened(result, text in cut, PII_TYPES)))
        return with_earlier_turns(signal, screened)

    async def _screen_other_turns(self, screen: screening.Screen, signal: Classification,
                                  deadline: float) -> Classification:
        """Structured PII (cards, IBANs, SSNs, e-mails, phones, IPs: the exact validators) in the rest of the
        conversation joins the user turns', so the PII policy sees what the model would; so do the parts of each message
        run together (a value split over two parts). Names and addresses need an encoder pass and are found in the
        texts `_screen_earlier_turns` reads. A short text is scanned on the loop (~10 us per 2 kB), a long one in the
        executor by the request's deadline (up to ~60 ms for 128k digit-dense chars)."""
        if signal is NO_SIGNAL or not self.runtime.cfg.classifier.pii_enabled:
            return signal  # no classifier, or it failed: the guards are off for this request either way
        raw = screen.structured
        other = self._bounded(raw)
        signal = self._unscreened(signal, len(other) < len(raw), STRUCTURED_TYPES)
        if len(other) <= INLINE_SCAN_CHARS:
            found = _find_structured(other)
        else:
            try:
                found = await self._in_executor_by(deadline, len(other), None, _find_structured, other)
            except TimeoutError:
                budget = self.runtime.cfg.classifier.timeout_ms
                return self._classifier_failed(TimeoutError(f"no PII screen within {budget} ms"), "timeout")
        return dataclasses.replace(signal, pii=signal.pii + tuple(found)) if found else signal

    def _unscreened(self, signal: Classification, cut: bool, types: tuple[str, ...]) -> Classification:
        """`signal` of a text that classifier.max_scan_chars `cut` (its head and tail were read): the detectors of
        `types` never read its middle, which the PII rule and the cache then take as unscreened."""
        if not cut or signal is NO_SIGNAL or not self.runtime.cfg.classifier.pii_enabled:
            return signal
        return dataclasses.replace(signal, unscreened=signal.unscreened | frozenset(types))

    async def _encode_bounded(self, text: str, deadline: float) -> Classification:
        """One encoder pass in the executor, within `classifier.max_pending` and by `deadline` (else raises).

        A text the memo already holds is answered here, on the loop: no pass, so no executor round trip
        (two thread wake-ups) and no place in the pending bound.
        """
        rt = self.runtime
        assert rt.classifier is not None
        scope = self.request.caller.memo_scope
        if (known := rt.classifier.cached(text, scope)) is not None:
            return known
        bound = rt.cfg.classifier.max_pending
        return await self._in_executor_by(deadline, len(text), bound, rt.classifier.classify, text, scope)

    async def _in_executor_by(self, deadline: float, chars: int, bound: int | None, fn: Callable[..., T],
                              *args: Any) -> T:
        """`fn(*args)` on the encoder thread, off the event loop, in its turn by size (`chars` of text: shorter texts
        go first, encoder_queue.py) within `bound` passes pending; TimeoutError past `deadline` (a time.monotonic()
        value). Nothing is started once the deadline has passed: a thread cannot be stopped, and its result would
        go unread."""
        loop = asyncio.get_running_loop()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        async with asyncio.timeout_at(loop.time() + left):
            return await self.executor.run(chars, bound, deadline, fn, *args)

    def _classifier_failed(self, exc: Exception, reason: Failure, hint: str = "retry later") -> Classification:
        policy = self.runtime.cfg.classifier.on_failure
        self.request.classifier_error = f"{type(exc).__name__}: {exc}"[:300]
        self.request.classifier_failure = reason
        self.runtime.classifier_failures.failure(reason, error=self.request.classifier_error, on_failure=policy,
                                                 request_id=self.request.request_id)
        if policy == "closed":
            raise ClassifierUnavailable(f"The request could not be screened by the router's guards; {hint}")
        return NO_SIGNAL

    async def _cache_lookup(self, parsed: apis.ApiRequest, decision: Decision) -> pb.ProcessingResponse | None:
        cache, chat = self.runtime.cache, parsed.chat
        if cache is None:
            return None
        signal = self.request.signal
        switch = self.runtime.policy.reasoning_switch(decision)
        key = build_cache_request(chat.body, apis.cache_identity(self.request.headers), decision.model,
                                  decision.category, signal.embedding, self.runtime.cfg, encoder=signal.encoder,
                                  pii_types=signal.pii_types if self.request.classifier_failure is None
                                  and signal.read_whole else None,
                                  stateful=self.request.stateful, turn_category=decision.turn_category,
                                  control=self.request.cache_control,
                                  reasoning=switch and (switch[0].parameter, switch[1]))
        if isinstance(key, str):  # a skip reason: this request is not cacheable
            self.request.cache_result = f"skip:{key}"
            return None
        self.request.cache_key = key
        start = time.perf_counter()
        with self.trace.span("vsr.cache_lookup"):
            hit = await cache.lookup(key)
            result = "miss" if hit is None else f"skip:{hit}" if isinstance(hit, str) else "hit"
            self.trace.set(cache_result=result)
        self.request.timings["cache_lookup"] = time.perf_counter() - start
        self.request.cache_result = result
        if hit is None or isinstance(hit, str):  # a miss, or the backend is down (skip:backend_down)
            return None
        self.request.cache_hit = hit
        self.request.outcome = Outcome.CACHE
        self.response.status = 200
        headers = {**self._decision_headers(), "x-vsr-cache-hit": "true",
                   "x-vsr-cache-similarity": f"{hit.similarity:.4f}"}
        sent = apis.upstream_body(parsed, decision.model, self.runtime.policy.effort_for(decision))
        body = apis.render_hit(self.request.api, hit.completion, decision.model, chat.stream, chat.include_usage, sent)
        return msg.immediate(200, body, headers, msg.SSE if chat.stream else msg.JSON)

    # ---- response phases ---------------------------------------------------------------------

    def on_response_headers(self, headers: pb.HttpHeaders) -> pb.ProcessingResponse:
        h = msg.header_map(headers)
        status = h.get(":status", "0")
        self.response.status = int(status) if status.isdigit() else 0
        self.response.complete = headers.end_of_stream  # an answer without a body
        out = self._decision_headers()
        if self.request.decision is not None and self.request.outcome is Outcome.UPSTREAM:
            out |= self._fallback_headers(h, self.request.decision)
        out |= self._cache_headers()
        if len(headers.headers.headers) + len(out) > self.runtime.cfg.envoy.max_headers_count:
            out = self._id_header()  # informational headers must never cost the client its answer
        if not 200 <= self.response.status < 300 or self.request.model_only:  # a completions answer: headers only
            return msg.continue_response_headers(out, msg.SKIP_RESPONSE_BODY)
        if h.get("content-type", "").startswith(msg.SSE):
            self.response.streaming = True
            if self.request.cache_key is None and not self.request.stream_usage:
                # Nothing in it to store or count: each chunk would cost a round trip to the router (~0.35 ms of
                # its CPU, bench/README.md "What a streamed answer costs"), one per token from vLLM.
                self.response.unread = True
                return msg.continue_response_headers(out, msg.SKIP_RESPONSE_BODY)
            self.response.assembler = apis.assembler(self.request.api)
            return msg.continue_response_headers(out, msg.STREAM_RESPONSE)
        return msg.continue_response_headers(out)

    def _cache_headers(self) -> dict[str, str]:
        """Every answer the cache was asked about says so, a skipped one with why (README "Headers"): the header was
        absent on a skip, which a client could not tell from a router without a cache."""
        result = self.request.cache_result
        if result == "off":  # no cache, or an API it does not serve
            return {}
        reason = result.removeprefix("skip:")
        return {"x-vsr-cache-hit": "false", **({"x-vsr-cache-skip": reason} if reason != result else {})}

    def _fallback_headers(self, headers: dict[str, str], decision: Decision) -> dict[str, str]:
        """Which model answered and in how many attempts; a fallback answer is never cached."""
        r = self.response
        r.answered_by, r.attempts = resilience.answered(headers, decision.model)
        out = {"x-vsr-attempts": str(r.attempts)}
        if r.answered_by != decision.model:
            out["x-vsr-fallback-from"] = decision.model
            self.request.cache_key = None  # the key names the model the policy chose, not this one
        return out

    async def on_response_body(self, body: pb.HttpBody) -> pb.ProcessingResponse:
        r = self.response
        if r.streaming:
            for payload in r.decoder.feed(body.body):
                r.assembler.add(payload)
        else:
            r.body += body.body
        if body.end_of_stream:
            r.complete = True
            await self._finish_response()
        return msg.continue_response_body()

    async def _finish_response(self) -> None:
        """The answer is complete: account its usage and store it in the cache."""
        r = self.response
        if r.streaming:
            completion = r.assembler.completion()
            r.usage = r.assembler.usage
        else:
            answer = _json_object(bytes(r.body))
            completion = apis.to_completion(self.request.api, answer)
            r.usage = completion.get("usage") if completion else None
            r.response_id = apis.response_id(answer)
        if self.request.api == "responses":
            await self._remember_response()
        cache, key = self.runtime.cache, self.request.cache_key
        if cache is not None and key is not None and completion is not None and completion.get("choices"):
            cache.store(key, completion)
            self.request.cache_stored = True

    async def _remember_response(self) -> None:
        """A later `previous_response_id` request must reach the model (and server) that holds this answer."""
        r, d, store = self.response, self.request.decision, self.runtime.affinity
        rid = r.response_id or getattr(r.assembler, "response_id", None)
        if rid and d is not None and store is not None:
            pin = affinity.Pin(r.answered_by if r.answered_by in self.runtime.cfg.models else d.model, d.category)
            await store.put(affinity.response_key(self.request.headers, rid), pin)
            await store.flush()  # stored before the answer's end reaches the client, whose continuation may come at
            # once through another worker (written behind: 1 of 40 did in a test_workers_e2e run, to the other model)

    # ---- helpers -----------------------------------------------------------------------------

    def reject(self, exc: RouterError) -> pb.ProcessingResponse:
        """Answer with an OpenAI-style error; the stream ends here, the server keeps serving."""
        self.request.outcome = exc.outcome
        self.request.error_code = exc.code
        self.request.error_category = exc.category
        self.response.status = exc.status  # no upstream answer will set it: the log line and trace need it
        headers = self._decision_headers()
        if isinstance(exc, ClassifierUnavailable):
            headers["retry-after"] = "1"
        elif exc.code == "jailbreak_detected":
            headers["x-vsr-jailbreak-blocked"] = "true"
        elif exc.code == "content_blocked":
            headers["x-vsr-content-blocked"] = "true"
        elif exc.code == "pii_policy_violation":
            headers["x-vsr-pii-violation"] = ",".join(sorted(self.request.signal.pii_possible))
        return msg.immediate(exc.status, apis.error_body(self.request.api, exc), headers)

    def _id_header(self) -> dict[str, str]:
        return {"x-request-id": self.request.request_id} if self.request.request_id else {}

    def _decision_headers(self) -> dict[str, str]:
        d = self.request.decision
        out = self._id_header()
        if d is not None:
            out["x-vsr-selected-model"] = d.model
            if d.category:  # none for an unscreened /v1/completions or /v1/embeddings request
                out |= {"x-vsr-selected-category": d.category, "x-vsr-selected-confidence": f"{d.confidence:.3f}"}
            if d.reasoning is not None:  # None: the server's default, which the router does not know
                out["x-vsr-selected-reasoning"] = "on" if d.reasoning else "off"
            out |= {FLAG_HEADERS[guard]: "true" for guard in d.flagged}
        if d is not None and d.reason:
            out["x-vsr-decision-reason"] = d.reason
        if self.request.affinity is not None:
            out["x-vsr-affinity"] = self.request.affinity
        if self.request.classifier_failure is not None:
            out["x-vsr-guards-skipped"] = _SKIPPED[self.request.classifier_failure]
        elif self.request.signal.unreadable:  # a document the guards could not read went on
            out["x-vsr-guards-skipped"] = "unreadable_content"
        return out


def _find_structured(text: str) -> list[PIIFinding]:
    return find_structured(canonical(text))


async def _off_loop_when_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` over a body of `size` bytes (parsing it, reading what it puts before the model): inline when
    small (a thread hop costs more), else in a thread, so that the worker's other streams never wait for it."""
    if size <= INLINE_BODY_BYTES:
        return work(*args)
    return await asyncio.to_thread(work, *args)


def _read(api: apis.Api, raw: bytes) -> tuple[apis.ApiRequest, screening.Screen]:
    """A chat-like body parsed, and what it puts in front of the model: one thread hop for both."""
    parsed = apis.parse(api, raw)
    return parsed, screening.screen(parsed.chat)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8, or an integer longer than Python converts
        return None
    return value if isinstance(value, dict) else None


def _continue(phase: str | None) -> pb.ProcessingResponse:
    """Phases we never ask for (trailers) still need an answer to keep the stream in step."""
    if phase == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
