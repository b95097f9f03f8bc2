"""A demo OpenAI-compatible model server: the only stand-in allowed (no GPU here).

Serves chat completions here and, in devstack/demo_formats.py, the Responses API, Anthropic Messages,
completions and embeddings, as vLLM does.

Speaks the real wire format, JSON and SSE streaming, and tells which model answered and what it
received, so tests can prove where the router sent a request and how it rewrote it. Faults on
demand: `x-demo-status: 500` answers an error, `x-demo-delay-ms` adds latency, `x-demo-abort: 1`
cuts a stream before [DONE]. `x-demo-fault: MODEL=ACTION[,MODEL=ACTION]` injects a fault into the named
model only (so a fallback model in the same request answers normally): ACTION is an HTTP status (`503`),
`close` (drop the connection before answering), `midstream` (drop it halfway through a stream) or
`error-event` (send an SSE error event halfway through a stream, then end it), `stall` (hang for
`STALL_S` before answering, or halfway through a stream, with the connection open) or `slow-stream` (a
healthy stream, 0.3 s between chunks). `--fault ACTION` makes every request to this upstream fail that
way (a model that keeps failing). A chat request's `max_tokens` (or `max_completion_tokens`) makes the answer that many
words, one SSE event each when streamed, ending with `finish_reason: length` as a real server's cut answer does:
realistic stream lengths for benchmarks. `x-demo-token-ms` waits that long before each streamed event (a model
generating), so each event is its own write rather than a few coalesced ones. `x-demo-reasoning: TEXT` makes the
model think TEXT first, sent as vLLM's reasoning parser sends it: the message's `reasoning_content`, or in a stream
`delta.reasoning_content` word by word before the content. The Anthropic endpoint honours `stop_sequences` and the
Responses one `include: ["message.output_text.logprobs"]` (devstack/demo_formats.py), and keeps Responses answers
(unless `store: false`) for `GET`/`DELETE /v1/responses/{id}`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack import demo_formats

Handler = Callable[["DemoModel", web.Request, dict[str, Any], str | None], Awaitable[web.StreamResponse]]

ECHO_FIELDS = ("model", "chat_template_kwargs", "reasoning_effort", "stream")
STALL_S = 10.0
MAX_STORED = 10_000


class DemoModel:
    def __init__(self, name: str, delay_ms: float = 0.0, fault: str | None = None):
        self.name = name
        self.delay_ms = delay_ms
        self.fault = fault
        self.requests = 0
        self.stored: dict[str, dict[str, Any]] = {}  # Responses answers by id, the newest MAX_STORED

    def keep(self, response: dict[str, Any]) -> None:
        self.stored[response["id"]] = response
        if len(self.stored) > MAX_STORED:  # benchmarks create many
            del self.stored[next(iter(self.stored))]

    def fault_for(self, request: web.Request) -> str | None:
        """The fault injected into this model for this request, if any."""
        for part in request.headers.get("x-demo-fault", "").split(","):
            model, _, action = part.strip().partition("=")
            if model == self.name and action:
                return action
        return self.fault

    def answer_text(self, body: dict[str, Any]) -> str:
        last = body.get("messages", [{}])[-1].get("content")
        words = len(str(last).split())
        text = f"This is {self.name} answering a {words}-word question."
        limit = max_tokens(body)
        if limit is None:
            return text
        filler = itertools.cycle(text.split())
        return " ".join(itertools.islice(itertools.chain(text.split(), filler), limit))

    async def _prelude(self, request: web.Request) -> tuple[dict[str, Any], str | None, web.Response | None]:
        """The body, the injected fault, and an error response when the fault is an HTTP status."""
        self.requests += 1
        fault = self.fault_for(request)
        if fault == "close":
            request.transport.close()  # type: ignore[union-attr]  # a model server that died
            raise ConnectionResetError("injected close")
        body = await request.json()
        if fault == "stall" and not body.get("stream"):
            await asyncio.sleep(STALL_S)  # a model server that accepted the request and hangs
        delay = float(request.headers.get("x-demo-delay-ms", self.delay_ms))
        if delay:
            await asyncio.sleep(delay / 1000)
        status = int(fault) if fault and fault.isdigit() else int(request.headers.get("x-demo-status", "200"))
        if status >= 400:
            error = {"error": {"message": f"injected failure {status}", "type": "server_error", "code": None}}
            return body, fault, web.json_response(error, status=status)
        return body, fault, None

    def endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An endpoint of another format (devstack/demo_formats.py), with the same fault injection."""
        async def serve(request: web.Request) -> web.StreamResponse:
            body, fault, failed = await self._prelude(request)
            return failed if failed is not None else await handler(self, request, body, fault)
        return serve

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, fault, failed = await self._prelude(request)
        if failed is not None:
            return failed
        received = {k: body[k] for k in ECHO_FIELDS if k in body}
        identity = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-authz-")}
        if identity:
            received["identity_headers"] = identity
        if body.get("stream"):
            return await self._stream(request, body, received, fault)
        text = self.answer_text(body)
        thought = request.headers.get("x-demo-reasoning")
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 **({"reasoning_content": thought} if thought else {})},
                         "finish_reason": "stop" if max_tokens(body) is None else "length",
                         "logprobs": _logprobs(body, _pieces(text))}],
            "usage": _usage(body, text), "x_demo": {"upstream": self.name, "received": received},
        })

    async def _stream(self, request: web.Request, body: dict[str, Any],
                      received: dict[str, Any], fault: str | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.name, "x_demo": {"upstream": self.name,
                                                                            "received": received}}
        text = self.answer_text(body)
        thought = request.headers.get("x-demo-reasoning")
        pieces: list[dict[str, str | None]] = [{"role": "assistant", "content": ""}]
        pieces += [{"reasoning_content": w, "content": None} for w in _pieces(thought)] if thought else []
        pieces += [{"content": w} for w in _pieces(text)]
        abort = request.headers.get("x-demo-abort") == "1" or fault == "midstream"
        token_s = float(request.headers.get("x-demo-token-ms", "0")) / 1000
        for i, delta in enumerate(pieces):
            if token_s:
                await asyncio.sleep(token_s)
            if fault == "stall" and i == len(pieces) // 2:
                await asyncio.sleep(STALL_S)
            if fault == "slow-stream":
                await asyncio.sleep(0.3)
            if abort and i == len(pieces) // 2:
                await asyncio.sleep(0.1)  # the first half reaches the client: a failure after streaming began
                request.transport.close()  # type: ignore[union-attr]  # a dead upstream mid-stream
                return response
            if fault == "error-event" and i == len(pieces) // 2:
                await _send(response, {"error": {"message": "injected failure mid-stream",
                                                 "type": "server_error", "code": None}})
                await response.write_eof()
                return response
            choice = {"index": 0, "delta": delta, "finish_reason": None,
                      "logprobs": _logprobs(body, [delta["content"]] if delta["content"] else [])}
            await _send(response, {**base, "choices": [choice]})
        finish = "stop" if max_tokens(body) is None else "length"
        await _send(response, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await _send(response, {**base, "choices": [], "usage": _usage(body, text)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({"model": self.name, "requests": self.requests})


def max_tokens(body: dict[str, Any]) -> int | None:
    """The answer's length the client asked for, as vLLM reads it (`max_completion_tokens` first); None: not asked."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]


def _logprobs(body: dict[str, Any], tokens: list[str]) -> dict[str, Any] | None:
    """With `logprobs: true`, an entry per token (a word here) as vLLM and OpenAI send them, in a stream each chunk's
    own; made-up but fixed values, so a test can tell one answer's logprobs from none."""
    if body.get("logprobs") is not True:
        return None
    top = int(body.get("top_logprobs") or 0)

    def entry(token: str, rank: int = 0) -> dict[str, Any]:
        return {"token": token, "logprob": -0.01 * (len(token) + rank), "bytes": list(token.encode())}

    return {"content": [{**entry(t), "top_logprobs": [entry(t, r) for r in range(top)]} for t in tokens],
            "refusal": None}


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _send(response: web.StreamResponse, frame: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(frame).encode() + b"\n\n")


async def _healthy(_: web.Request) -> web.Response:
    """vLLM's liveness probe: 200 and no body while the engine runs (Envoy's health check, `models.*.health_check`);
    a frozen process answers nothing, which is what the check is for."""
    return web.Response()


def make_app(model: DemoModel) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", model.chat)
    for path, handler in [("/v1/responses", demo_formats.responses), ("/v1/messages", demo_formats.messages),
                          ("/v1/completions", demo_formats.completions), ("/v1/embeddings", demo_formats.embeddings)]:
        app.router.add_post(path, model.endpoint(handler))
    app.router.add_get("/v1/responses/{id}", functools.partial(demo_formats.stored_response, model))
    app.router.add_delete("/v1/responses/{id}", functools.partial(demo_formats.delete_response, model))
    app.router.add_get("/stats", model.stats)
    app.router.add_get("/health", _healthy)

    async def _tag(_: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-demo-upstream"] = model.name  # even on 404s for paths it does not serve

    app.on_response_prepare.append(_tag)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--fault", help="fail every request: an HTTP status, close, midstream or error-event")
    args = parser.parse_args()
    web.run_app(make_app(DemoModel(args.model, args.delay_ms, args.fault)), host=args.host, port=args.port,
                print=None, backlog=1024)


if __name__ == "__main__":
    main()
