"""What one ext_proc stream knows: the request phases' findings, the answer's, and the headers that report them.

The phases are split over modules named for what they do (session.py: the request phases; screen.py: the body's
texts through the classifier; answer.py: the response phases), and all of them read and write this state, so it
lives apart from each: StreamSession is the one class they make together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from router import apis
from router import openai_wire as wire
from router.cache import CacheHit, Miss, keys
from router.errors import Outcome
from router.extproc.encoder_queue import EncoderQueue
from router.policy import Decision
from router.runtime import Runtime
from router.signals import NO_SIGNAL, Classification
from router.tracing import NO_TRACE, RequestTrace

Failure = Literal["error", "timeout", "overload"]
_SKIPPED: dict[Failure, str] = {"error": "classifier_failed", "timeout": "classifier_timeout",
                                "overload": "classifier_overload"}
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
    cache_miss: Miss | None = None  # why a lookup served nothing, with its nearest candidate's figures
    cache_stored: bool = False  # the answer was queued for the cache under cache_key
    # Why a miss's answer was not stored: tool_calls, not_text, incomplete (apis.unstored), fallback (another model
    # answered than the key names).
    cache_unstored: str | None = None
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


class StreamState:
    """One stream's state, and the x-vsr-* headers every answer reports it with; the phases' classes extend it."""

    def __init__(self, runtime: Runtime, executor: EncoderQueue):
        self.runtime = runtime
        self.executor = executor
        self.request = RequestState()
        self.response = ResponseState()
        self.busy = 0.0  # time spent in our handlers: the latency the sidecar adds
        self.trace: RequestTrace = NO_TRACE
        self.trace_carrier: dict[str, str] = {}  # the stream's gRPC metadata: Envoy's trace context

    def _id_header(self) -> dict[str, str]:
        return {"x-request-id": self.request.request_id} if self.request.request_id else {}

    def _decision_headers(self) -> dict[str, str]:
        d = self.request.decision
        out = self._id_header()
        if d is not None:
            out["x-vsr-selected-model"] = d.model
            if d.category:  # none for an unscreened /v1/completions or /v1/embeddings request
                out["x-vsr-selected-category"] = d.category
            if d.category and d.turn_category is None:  # else the confidence is another category's (the reason's)
                out["x-vsr-selected-confidence"] = f"{d.confidence:.3f}"
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
