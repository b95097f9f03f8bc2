"""One ext_proc stream: the phases of one HTTP request, from headers to the last response byte.

Envoy sends request headers, the buffered request body, response headers, then the response body
(buffered JSON, or streamed SSE after a mode override; no SSE body at all when there is nothing in it to store or
count). Each phase has one handler; phases the
router did not ask for never arrive. The session knows the wire format and the policy, not how
classification or caching work inside.

The request phases are here, up to the routing decision; the body's texts go through the classifier in screen.py,
the response phases are in answer.py, and the state all of them share, with the headers reporting it, in state.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router import affinity, apis, resilience, screening
from router import openai_wire as wire
from router.cache import Miss, build_cache_request, cache_control, keys
from router.errors import (
    BodyTooLarge,
    ClassifierUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotServed,
    Outcome,
    RouterError,
    TooManyHeaders,
    UnsupportedEncoding,
    UnsupportedPath,
)
from router.extproc import messages as msg
from router.extproc.answer import AnswerPhases
from router.extproc.screen import Screener
from router.policy import Decision
from router.signals import NO_SIGNAL

log = structlog.get_logger(__name__)
T = TypeVar("T")

MODELS_PATH = "/v1/models"
# Headers the router may add to a routed request: the selection header, x-vsr-routed-model, x-vsr-routed-category
# (router/resilience.py) and content-length for a chunked body. Envoy checks the mutated map against
# max_headers_count (pseudo-headers included, as the router counts them) and fails the request with a 500
# (`header_mutation_result_exceeds_limit`) when it does not fit.
REQUEST_HEADROOM = 4
# Largest body parsed and read (router/screening.py) on the event loop: a larger one is in a thread (JSON parsing and
# the schema's checks take ~0.1 s a MB of dense JSON, reading it ~20 ms; on the loop every other stream of the worker
# waited for them: README, "Behaviour").
INLINE_BODY_BYTES = 256 * 1024


class StreamSession(Screener, AnswerPhases):
    """Turns the ProcessingRequests of one stream into ProcessingResponses (built with a Runtime and the
    EncoderQueue, state.StreamState)."""

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
        c = self.runtime.cfg.semantic_cache
        # Read once: the memo's scope (completions need it as well as the chat-like APIs), and whose sessions and
        # stored responses affinity keys (a stored response's GET too).
        self.request.caller = keys.caller(apis.cache_identity(h), c.tenant_headers, c.user_headers, client)
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
            target = f"{method} {path[:200]}" if path else f"{method} without a path"  # CONNECT has none
            raise UnsupportedPath(f"{target} is not served by this router: {apis.SERVED}")
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
        # A completions answer is read for its usage, as a chat answer is (it was not counted); embeddings' is not.
        return msg.continue_request_headers(msg.ROUTE_BY_BODY if kind == "embeddings" else msg.SCREEN_AND_READ_ANSWER)

    def _answer_models(self, method: str, path: str) -> pb.ProcessingResponse:
        """GET /v1/models and /v1/models/{name}: the router's names (auto included), which no model server knows."""
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use GET")
        self.request.outcome = Outcome.MODELS
        if path == MODELS_PATH:
            return msg.immediate(200, wire.models_list(self.runtime.policy.public_model_names()), self._id_header())
        name = urllib.parse.unquote(path.removeprefix(MODELS_PATH + "/"))
        self.runtime.policy.require_model(name)
        return msg.immediate(200, json.dumps(wire.model_object(name)).encode(), self._id_header())

    async def on_request_body(self, body: pb.HttpBody) -> pb.ProcessingResponse:
        deadline = time.monotonic() + self.runtime.cfg.classifier.timeout_ms / 1000  # parsing counts too
        # Until the decision says otherwise: a stream that ends mid-decision (Envoy past its message timeout cancels
        # it) still gets its line and count; it ended with none, as if never sent.
        self.request.outcome = Outcome.ABANDONED
        self._check_size(len(body.body))  # chunked uploads carry no content-length
        if self.request.model_only:
            return await self._route_by_model(body.body, deadline)
        parsed, screen = await _off_loop_when_large(len(body.body), _read, self.request.api, body.body)
        chat, self.request.stateful = parsed.chat, parsed.stateful
        self.runtime.policy.require_model(chat.model)  # a 404 costs no classifier pass, nor a 503 under load
        previous = parsed.original.get("previous_response_id") if parsed.api == "responses" else None
        held = None
        if isinstance(previous, str) and previous:  # whatever model is asked for: another caller's response is a 404
            held = await affinity.stored_response(self.runtime.affinity, self.request.caller.identity, previous)
        self.request.stream_usage = parsed.api != "chat" or chat.include_usage  # Responses, Messages: always
        text = await self._screen(chat, screen, deadline)
        with self.trace.span("vsr.decision"):
            decision = self.runtime.policy.decide(chat, self.request.signal, text)
            if decision.auto and self.runtime.affinity is not None and self.runtime.cfg.affinity.enabled:
                start = time.perf_counter()
                known = self.request.earlier_signals
                turns = [(t, known.get(self._bounded(t), NO_SIGNAL)) for t in screen.user_turns()]
                decision, self.request.affinity = await affinity.resolve(
                    self.runtime.policy, self.runtime.affinity, chat, self.request.headers, decision,
                    self.request.signal, self.request.caller.identity, turns, held)
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
        """GET/DELETE /v1/responses/{id}[/...]: to the model whose server stored that response, if known; another
        caller's is a 404 (affinity.stored_response)."""
        rid = path[len(apis.RESPONSES_ITEM_PREFIX):].split("/", 1)[0]
        pin = await affinity.stored_response(self.runtime.affinity, self.request.caller.identity, rid)
        if pin is None or pin.model not in self.runtime.cfg.models:
            return msg.continue_request_headers(msg.PASS_THROUGH)  # unknown here: the default model
        cluster = self.runtime.cfg.cluster_of(pin.model)
        return msg.route_headers({self.runtime.cfg.server.selection_header: cluster}, msg.PASS_THROUGH)

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
        policy.require_model(model)
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
        options = body.get("stream_options")  # a completions stream carries usage when asked, as a chat stream does
        self.request.stream_usage = isinstance(options, dict) and options.get("include_usage") is True
        # Always the parsed body, never the client's bytes: with a key sent twice ({"prompt": A, "prompt": B}) the
        # guards read B (Python keeps the last), while a model server that keeps the first would have generated from A.
        routed = json.dumps({**body, "model": target}, separators=(",", ":"), ensure_ascii=False).encode()
        return msg.route_request(routed, {self.runtime.cfg.server.selection_header: cluster})

    def _check_size(self, size: int) -> None:
        limit = self.runtime.cfg.server.max_body_bytes
        if size > limit:
            raise BodyTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")

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
                                  reasoning=switch and (switch[0].parameter, switch[1]),
                                  encoder_reads=signal.encoder_reads)
        if isinstance(key, str):  # a skip reason: this request is not cacheable
            self.request.cache_result = f"skip:{key}"
            return None
        self.request.cache_key = key
        start = time.perf_counter()
        with self.trace.span("vsr.cache_lookup"):
            hit = await cache.verdict(key)
            if isinstance(hit, Miss):
                self.request.cache_miss, hit = hit, None
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

    # ---- helpers -----------------------------------------------------------------------------

    def reject(self, exc: RouterError) -> pb.ProcessingResponse:
        """Answer with an OpenAI-style error; the stream ends here, the server keeps serving."""
        self.request.outcome = exc.outcome
        self.request.error_code = exc.code
        self.request.error_category = exc.category
        self.response.status = exc.status  # no upstream answer will set it: the log line and trace need it
        headers = self._decision_headers()
        headers.pop("x-vsr-guards-skipped", None)  # it says a request went on unguarded: a refused one did not
        if isinstance(exc, ClassifierUnavailable):
            headers["retry-after"] = "1"
        elif exc.code == "jailbreak_detected":
            headers["x-vsr-jailbreak-blocked"] = "true"
        elif exc.code == "content_blocked":
            headers["x-vsr-content-blocked"] = "true"
        elif exc.code == "pii_policy_violation":
            headers["x-vsr-pii-violation"] = ",".join(sorted(self.request.signal.pii_possible))
        return msg.immediate(exc.status, apis.error_body(self.request.api, exc), headers)

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


def _continue(phase: str | None) -> pb.ProcessingResponse:
    """Phases we never ask for (trailers) still need an answer to keep the stream in step."""
    if phase == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
