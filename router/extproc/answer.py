"""The response phases: the answer's headers, then its body, reassembled to count its usage and to store it.

Envoy sends a response body only where the answer to its headers asks for it (buffered JSON, or SSE streamed
chunk by chunk); once complete, the answer is stored in the cache under the key its request was looked up with,
and a Responses answer's id is pinned to the model that produced it.
"""

from __future__ import annotations

import json
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router import affinity, apis, resilience
from router.errors import Outcome
from router.extproc import messages as msg
from router.extproc.state import StreamState
from router.policy import Decision


class AnswerPhases(StreamState):
    """The response phases of StreamSession."""

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
        if not 200 <= self.response.status < 300 or self.request.model_only == "embeddings":  # headers only
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
            if self.request.cache_key is not None:  # the key names the model the policy chose, not this one
                self.request.cache_key, self.request.cache_unstored = None, "fallback"
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
            why = r.assembler.unstored
        else:
            answer = _json_object(bytes(r.body))
            completion = apis.to_completion(self.request.api, answer)
            r.usage = completion.get("usage") if completion else None
            r.response_id = apis.response_id(answer)
            why = apis.unstored(self.request.api, answer)
        if self.request.api == "responses":
            await self._remember_response()
        cache, key = self.runtime.cache, self.request.cache_key
        if cache is not None and key is not None and completion is not None and completion.get("choices"):
            cache.store(key, completion)
            self.request.cache_stored = True
        elif key is not None:  # looked up, missed, and not stored: the log line says why (README, "Logs")
            self.request.cache_unstored = why

    async def _remember_response(self) -> None:
        """A later `previous_response_id` request must reach the model (and server) that holds this answer, and only
        its creator's may (affinity.stored_response)."""
        r, d, store = self.response, self.request.decision, self.runtime.affinity
        streamed = r.assembler.response_id if isinstance(r.assembler, apis.ResponsesAssembler) else None
        rid = r.response_id or streamed
        if rid and d is not None and store is not None:
            pin = affinity.Pin(r.answered_by if r.answered_by in self.runtime.cfg.models else d.model, d.category,
                               affinity.response_owner(self.request.caller.identity, rid))
            await store.put(affinity.response_key(rid), pin)
            await store.flush()  # stored before the answer's end reaches the client, whose continuation may come at
            # once through another worker (written behind: 1 of 40 did in a test_workers_e2e run, to the other model)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8, or an integer longer than Python converts
        return None
    return value if isinstance(value, dict) else None
