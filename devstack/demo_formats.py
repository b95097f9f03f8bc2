"""The demo model server's other endpoints: OpenAI Responses, Anthropic Messages, completions, embeddings.

Written from the public wire formats, apart from the router's own renderers (router/apis.py), so a
test through the official SDKs checks both sides. Streams go word by word, like a model.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from devstack.demo_upstream import DemoModel

RESPONSES_ECHO = ("model", "reasoning", "stream", "previous_response_id", "thinking", "max_tokens")


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]


def _last_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


async def _event(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())


async def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    return response


def _token_logprobs(words: list[str]) -> list[dict[str, Any]]:
    """A made-up but fixed entry per word, as Responses sends them when `include` asks for logprobs."""
    return [{"token": w, "logprob": -0.01 * len(w), "bytes": list(w.encode()), "top_logprobs": []} for w in words]


async def responses(model: DemoModel, request: web.Request, body: dict[str, Any], fault: str | None) -> web.StreamResponse:
    items = body.get("input")
    last = items if isinstance(items, str) else _last_text((items or [{}])[-1].get("content"))
    text = f"This is {model.name} answering a {len(last.split())}-word question."
    logprobs = _token_logprobs(_words(text)) if "message.output_text.logprobs" in (body.get("include") or []) else []
    received = {k: body[k] for k in RESPONSES_ECHO if k in body}
    usage = {"input_tokens": len(last.split()), "output_tokens": len(text.split()),
             "total_tokens": len(last.split()) + len(text.split()),
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    message = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": [],
                            "logprobs": logprobs}]}
    resp = {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model.name, "output": [message], "usage": usage, "error": None,
            "incomplete_details": None, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "x_demo": {"upstream": model.name, "received": received}}
    if body.get("store") is not False:
        model.keep(resp)
    if not body.get("stream"):
        return web.json_response(resp)
    out = await _start(request)
    ids = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    seq = iter(range(1000))
    pending = {**resp, "status": "in_progress", "output": [], "usage": None}
    await _event(out, "response.created", {"sequence_number": next(seq), "response": pending})
    await _event(out, "response.output_item.added", {"sequence_number": next(seq), "output_index": 0,
                                                     "item": {**message, "status": "in_progress", "content": []}})
    await _event(out, "response.content_part.added", {"sequence_number": next(seq), **ids,
                                                      "part": {"type": "output_text", "text": "", "annotations": []}})
    pieces = _words(text)
    for i, piece in enumerate(pieces):
        if fault == "error-event" and i == len(pieces) // 2:
            await _event(out, "error", {"sequence_number": next(seq), "code": "server_error",
                                        "message": "injected failure mid-stream", "param": None})
            await out.write_eof()
            return out
        await _event(out, "response.output_text.delta", {"sequence_number": next(seq), **ids, "delta": piece,
                                                         "logprobs": _token_logprobs([piece]) if logprobs else []})
    await _event(out, "response.output_text.done", {"sequence_number": next(seq), **ids, "text": text,
                                                    "logprobs": logprobs})
    await _event(out, "response.output_item.done", {"sequence_number": next(seq), "output_index": 0, "item": message})
    await _event(out, "response.completed", {"sequence_number": next(seq), "response": resp})
    await out.write_eof()
    return out


def _not_found(rid: str) -> web.Response:
    error = {"message": f"No response found with id '{rid}'.", "type": "invalid_request_error", "param": None,
             "code": None}
    return web.json_response({"error": error}, status=404)


async def stored_response(model: DemoModel, request: web.Request) -> web.Response:
    """GET /v1/responses/{id}: a response this server stored (`store` not false), as the model servers keep them."""
    rid = request.match_info["id"]
    resp = model.stored.get(rid)
    return web.json_response(resp) if resp is not None else _not_found(rid)


async def delete_response(model: DemoModel, request: web.Request) -> web.Response:
    rid = request.match_info["id"]
    if model.stored.pop(rid, None) is None:
        return _not_found(rid)
    return web.json_response({"id": rid, "object": "response.deleted", "deleted": True})


async def messages(model: DemoModel, request: web.Request, body: dict[str, Any], fault: str | None) -> web.StreamResponse:
    last = _last_text((body.get("messages") or [{}])[-1].get("content"))
    text = f"This is {model.name} answering a {len(last.split())}-word question."
    # The first of `stop_sequences` the answer holds ends it there, as Anthropic stops on one.
    stop = min(((text.find(s), s) for s in body.get("stop_sequences") or [] if s in text), default=None)
    text, reason, sequence = (text[:stop[0]], "stop_sequence", stop[1]) if stop else (text, "end_turn", None)
    received = {k: body[k] for k in RESPONSES_ECHO if k in body}
    usage = {"input_tokens": len(last.split()), "output_tokens": len(text.split())}
    msg = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": model.name,
           "content": [{"type": "text", "text": text}], "stop_reason": reason, "stop_sequence": sequence,
           "usage": usage, "x_demo": {"upstream": model.name, "received": received}}
    if not body.get("stream"):
        return web.json_response(msg)
    out = await _start(request)
    await _event(out, "message_start", {"message": {**msg, "content": [], "stop_reason": None,
                                                    "usage": {**usage, "output_tokens": 1}}})
    await _event(out, "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    await _event(out, "ping", {})
    for piece in _words(text):
        await _event(out, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    await _event(out, "content_block_stop", {"index": 0})
    await _event(out, "message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence},
                                        "usage": {"output_tokens": usage["output_tokens"]}})
    await _event(out, "message_stop", {})
    await out.write_eof()
    return out


async def completions(model: DemoModel, request: web.Request, body: dict[str, Any], fault: str | None) -> web.StreamResponse:
    """A text_completion with usage, as vLLM answers; streamed word by word, its usage in a last `choices: []` chunk
    when `stream_options.include_usage` asks for it."""
    prompt = body.get("prompt")
    text = f" from {model.name}"
    usage = {"prompt_tokens": len(" ".join(prompt if isinstance(prompt, list) else [str(prompt)]).split()),
             "completion_tokens": len(text.split())}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model.name}
    if not body.get("stream"):
        return web.json_response({**base, "usage": usage, "x_demo": {"upstream": model.name,
                                                                     "received": {"model": body.get("model")}},
                                  "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]})
    out = await _start(request)
    words = _words(text)
    for i, word in enumerate(words):
        finish = "stop" if i == len(words) - 1 else None
        chunk = {**base, "choices": [{"index": 0, "text": word, "finish_reason": finish, "logprobs": None}]}
        await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if (body.get("stream_options") or {}).get("include_usage"):
        await out.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
    await out.write(b"data: [DONE]\n\n")
    await out.write_eof()
    return out


async def embeddings(model: DemoModel, request: web.Request, body: dict[str, Any], fault: str | None) -> web.StreamResponse:
    return web.json_response({"object": "list", "model": model.name,
                              "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
                              "usage": {"prompt_tokens": 1, "total_tokens": 1},
                              "x_demo": {"upstream": model.name, "received": {"model": body.get("model")}}})
