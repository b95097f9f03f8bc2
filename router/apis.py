"""The other request formats agents use, on the chat-completions pipeline: OpenAI Responses, Anthropic Messages.

Each format is parsed into the normalised chat request the classifier, the policy, affinity and the
cache already understand (system prompt, turns, answer-changing fields), while the client's own body
is what goes upstream with only `model` (and, for Responses, `reasoning.effort`) rewritten: the model
servers (vLLM) serve these endpoints themselves. On the way back an answer in the format is turned into
a chat.completion for the cache and the usage metrics, and a cache hit is replayed in the format the
client asked for, as JSON or as that format's SSE events. Anthropic clients get Anthropic error bodies.

Pure bytes-in, objects-out code: no I/O.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from router import openai_wire as wire
from router.cache.keys import NON_ANSWER_FIELDS
from router.chat_schema import check_count
from router.errors import InvalidRequest, RouterError

Api = Literal["chat", "responses", "messages"]
MESSAGES_PATH = "/v1/messages"
PATHS: dict[str, Api] = {"/v1/chat/completions": "chat", "/v1/responses": "responses", MESSAGES_PATH: "messages"}
# Anthropic clients (Claude Code) call it to size a prompt; the count is the served model's tokenizer's, which the
# router does not have: refused with an Anthropic 404 instead of the default model server's plain-text one.
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# GET/DELETE of a stored response (and its input items, cancel): routed to the server that holds it.
RESPONSES_ITEM_PREFIX = "/v1/responses/"
# The calls on a stored response, with the methods OpenAI serves them on: another method (a POST with a prompt to
# /v1/responses/{id}) passed through to the default model unscreened.
_RESPONSE_CALLS = {"": ("GET", "DELETE"), "input_items": ("GET",), "cancel": ("POST",)}
MESSAGES_PREFIX = MESSAGES_PATH + "/"  # an unserved path below it is refused in Anthropic's shape
# Paths the router routes by their explicit `model` only, never cached. A completions prompt is screened by the guards
# first (`completions_turns`); nothing is generated from an embeddings input, so it is not.
ModelOnly = Literal["completions", "embeddings"]
MODEL_ONLY_PATHS: dict[str, ModelOnly] = {"/v1/completions": "completions", "/v1/embeddings": "embeddings"}
# The allow-list, as a refusal says it. Paths match exactly (case, trailing slash) after Envoy's normalisation
# (escapes decoded, slashes merged, dot segments removed); the query string is not part of the path. Any other path
# is refused: passed through to the default model, vLLM generated from some (/invocations, a batch of conversations,
# token ids) and a model server from who knows which others, all unscreened.
SERVED = (f"it serves POST {', '.join([*PATHS, *MODEL_ONLY_PATHS])}, GET /v1/models and the stored responses "
          f"({RESPONSES_ITEM_PREFIX}{{id}}); paths are exact (case, no trailing slash)")


def stored_response_methods(path: str) -> tuple[str, ...]:
    """The methods of /v1/responses/{id}, its /input_items or its /cancel (calls on a response a model server
    stored); () for any other path."""
    rid, _, rest = path.removeprefix(RESPONSES_ITEM_PREFIX).partition("/")
    return _RESPONSE_CALLS.get(rest, ()) if path.startswith(RESPONSES_ITEM_PREFIX) and rid else ()


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A request in any format: `chat` is its normalised form, `original` the client's body."""

    api: Api
    chat: wire.ChatRequest
    original: dict[str, Any]
    stateful: bool = False  # depends on server-side state (previous_response_id): never cached


def _load(raw: bytes) -> dict[str, Any]:
    body = wire.load_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    return body


_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_RESPONSES_ROLES = ("user", "assistant", "system", "developer")


def _check_part_types(content: Any, param: str) -> None:
    """A part's `type` must be a string: a list or an object there was hashed into a 500 (`_content`)."""
    if isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict) and not isinstance(part.get("type", ""), str):
                raise InvalidRequest(f"{param}[{j}].type must be a string", param=f"{param}[{j}].type")


def _content(content: Any) -> str | list[Any]:
    """A turn's content as the chat pipeline sees it: its text parts as chat text parts (kept apart: a value split
    over two parts is screened run together, router/screening.py), or, when it holds anything but text (an image, a
    file, a tool result), its parts as sent, so that the cache keys all of it and never serves one picture's
    answer for another (a non-text latest turn is not cached at all)."""
    if not isinstance(content, list):
        return wire.content_text(content)
    if any(not isinstance(p, dict) or p.get("type") not in _TEXT_PARTS for p in content):
        return content
    return [{"type": "text", "text": p["text"]} for p in content if isinstance(p.get("text"), str)]


def _normalised(body: dict[str, Any], messages: list[dict[str, Any]], fields: dict[str, Any],
                mapped: frozenset[str], switches: frozenset[str]) -> wire.ChatRequest:
    """`fields` are the body's fields in chat terms; every other field outside `mapped` and the fields known not to
    change the answer goes along as `api_params`, so the cache keys it (thinking, top_k, reasoning effort, ...).
    `switches`: the reasoning family types `rewrite` can set in this format's body."""
    rest = {k: v for k, v in body.items() if k not in mapped and k not in NON_ANSWER_FIELDS}
    chat_body = {"model": body["model"], "messages": messages, **{k: v for k, v in fields.items() if v is not None}}
    if rest:
        chat_body["api_params"] = rest
    return wire.ChatRequest(body=chat_body, model=body["model"], stream=bool(body.get("stream")),
                            reasoning_switches=switches)


def parse(api: Api, raw: bytes) -> ApiRequest:
    """Parse and validate a request body of `api`, raising an InvalidRequest the client can act on."""
    if api == "chat":
        chat = wire.parse_chat_request(raw)
        return ApiRequest("chat", chat, chat.body)
    body = _load(raw)
    if not isinstance(body.get("stream", False), bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    return _parse_responses(body) if api == "responses" else _parse_messages(body)


# The body fields each parser turns into chat terms itself (`text` stays whole: its verbosity counts too).
_RESPONSES_MAPPED = frozenset({"model", "input", "instructions", "temperature", "top_p", "tools", "max_output_tokens",
                               "previous_response_id"})
_MESSAGES_MAPPED = frozenset({"model", "messages", "system", "temperature", "top_p", "tools", "max_tokens",
                              "stop_sequences"})
# A Responses body carries a reasoning effort (`reasoning.effort`), no chat-template flag; the router sets no Anthropic
# `thinking` (its budget is the client's to choose), so a Messages body carries none of the router's.
_EFFORT_ONLY = frozenset({"reasoning_effort"})


def _parse_responses(body: dict[str, Any]) -> ApiRequest:
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise InvalidRequest("'input' must be a non-empty string or array", param="input")
    check_count(items, "input")
    messages: list[dict[str, Any]] = []
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        # anything else went upstream unread: no screen saw it, nor did it count as instructions beside a user's
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    tool_items = False
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]")
        role = item.get("role")
        if item.get("type", "message") == "message":
            if role not in _RESPONSES_ROLES:  # else it went on as a tool item: never screened
                raise InvalidRequest(f"input[{i}].role must be one of {', '.join(_RESPONSES_ROLES)}",
                                     param=f"input[{i}].role")
            _check_part_types(item.get("content"), f"input[{i}].content")
            messages.append({"role": role, "content": _content(item.get("content"))})
        else:  # function calls and their outputs: screened as tool results (router/screening.py) and keyed whole
            tool_items = True
            messages.append({"role": "tool", "content": [item]})
    # A continuation of a stored response may hold tool outputs alone (function_call_output, mcp_approval_response,
    # computer_call_output, ...): the agent loop of the Responses API and the Agents SDK. It was refused, and every
    # such agent died at its first tool call. Its outputs are screened as tool results (router/screening.py).
    continues = bool(body.get("previous_response_id") or body.get("conversation"))
    if not continues and not any(m["role"] == "user" for m in messages):
        raise InvalidRequest("'input' needs at least one user message, or previous_response_id to continue a stored "
                             "response", param="input")
    tools = body.get("tools") or ([{"type": "input_items"}] if tool_items else None)
    reasoning = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    fields = {"temperature": body.get("temperature"), "top_p": body.get("top_p"), "tools": tools,
              "max_tokens": body.get("max_output_tokens"), "user": body.get("user"),
              "previous_response_id": body.get("previous_response_id"),  # affinity: the state's server
              "reasoning_effort": reasoning.get("effort"),  # the client's choice, which the router keeps
              "response_format": (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None}
    # A cached answer has no server-side twin a later `previous_response_id` could continue, so only
    # requests that neither continue nor create stored state (store: false) are served from the cache.
    stateful = continues or body.get("store") is not False
    return ApiRequest("responses", _normalised(body, messages, fields, _RESPONSES_MAPPED, _EFFORT_ONLY), body, stateful)


def _tool_results_only(role: str, content: Any) -> bool:
    """A user turn of tool_result blocks alone is a chat `tool` message: the tools' outputs, not words of the user. As
    a user turn it was the classified turn (no text: the default category), so a conversation's step moved off its
    category, and a tool result's PII read as a switch to it rather than as PII (trial 12, finding 6)."""
    return role == "user" and isinstance(content, list) and bool(content) and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _parse_messages(body: dict[str, Any]) -> ApiRequest:
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    check_count(turns, "messages")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("'max_tokens' is required and must be a positive integer", param="max_tokens")
    messages: list[dict[str, Any]] = []
    if body.get("system") is not None and not isinstance(body["system"], (str, list)):  # went upstream unread
        raise InvalidRequest("'system' must be a string or an array of content blocks", param="system")
    _check_part_types(body.get("system"), "system")
    if body.get("system"):
        messages.append({"role": "system", "content": _content(body["system"])})
    tool_blocks = False
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages[{i}].role must be 'user' or 'assistant'", param=f"messages[{i}].role")
        content = turn.get("content")
        if not isinstance(content, (str, list)):
            raise InvalidRequest(f"messages[{i}].content must be a string or an array of content blocks",
                                 param=f"messages[{i}].content")
        _check_part_types(content, f"messages[{i}].content")
        tool_blocks |= isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") not in ("text", None) for b in content)
        messages.append({"role": "tool" if _tool_results_only(turn["role"], content) else turn["role"],
                         "content": _content(content)})
    metadata: dict[str, Any] = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
    fields = {"temperature": body.get("temperature"), "top_p": body.get("top_p"), "max_tokens": max_tokens,
              "tools": body.get("tools") or ([{"type": "content_blocks"}] if tool_blocks else None),
              "stop": body.get("stop_sequences"), "user": metadata.get("user_id")}
    return ApiRequest("messages", _normalised(body, messages, fields, _MESSAGES_MAPPED, frozenset()), body)


def completions_turns(body: dict[str, Any], model: str) -> wire.ChatRequest:
    """A legacy completions request as the user turns the chat path's guards screen: each prompt string, then the
    `suffix` (the model reads both). Token ids and `prompt_embeds` are nothing a text classifier can read: refused,
    rather than passed unscreened."""
    if body.get("prompt_embeds") is not None:
        raise InvalidRequest("'prompt_embeds' cannot be screened by the router's guards: send the prompt as text",
                             param="prompt_embeds")
    prompt = body.get("prompt")
    texts = [prompt] if isinstance(prompt, str) else prompt
    if isinstance(texts, list):
        check_count(texts, "prompt")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        tokens = isinstance(texts, list) and any(isinstance(t, (int, list)) for t in texts)
        raise InvalidRequest("'prompt' holds token ids, which the router's guards cannot screen: send it as text"
                             if tokens else "'prompt' is required and must be a string or a non-empty array of strings",
                             param="prompt")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise InvalidRequest("'suffix' must be a string", param="suffix")
    turns = [{"role": "user", "content": text} for text in [*texts, *([suffix] if suffix else [])]]
    return wire.ChatRequest(body={"model": model, "messages": turns}, model=model, stream=False)


def upstream_body(req: ApiRequest, model: str, effort: str | None) -> dict[str, Any]:
    """The client's body for the chosen model; Responses also gets the reasoning effort when the router chose it."""
    body: dict[str, Any] = {**req.original, "model": model}
    if req.api == "responses" and effort is not None:
        reasoning = body.get("reasoning")
        body["reasoning"] = {**(reasoning if isinstance(reasoning, dict) else {}), "effort": effort}
    return body


def rewrite(req: ApiRequest, model: str, effort: str | None) -> bytes:
    """`upstream_body` as the bytes sent."""
    return json.dumps(upstream_body(req, model, effort), separators=(",", ":"), ensure_ascii=False).encode()


# ---- answers: format -> chat.completion (cache, usage) --------------------------------------------

def _completion(model: str, text: str, finish: str, usage: dict[str, Any] | None,
                choice: dict[str, Any] | None = None, message: dict[str, Any] | None = None) -> dict[str, Any]:
    """`choice`, `message`: further fields of the answer, in chat terms (`stop_reason`, `logprobs`, `annotations`)."""
    out: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                           "created": int(time.time()), "model": model,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **(message or {})},
                                        "finish_reason": finish, "logprobs": None, **(choice or {})}]}
    if usage:
        out["usage"] = usage
    return out


def _chat_usage(prompt: Any, completion: Any) -> dict[str, int] | None:
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    p, c = int(prompt or 0), int(completion or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _usage_of(answer: dict[str, Any]) -> dict[str, int] | None:
    """Chat usage from a Responses or Messages answer: both count input_tokens / output_tokens."""
    usage = answer.get("usage") or {}
    return _chat_usage(usage.get("input_tokens"), usage.get("output_tokens"))


def to_completion(api: Api, answer: dict[str, Any] | None) -> dict[str, Any] | None:
    """A complete non-streamed answer of `api` as a chat.completion; None when it is not a plain text answer."""
    if answer is None or api == "chat":
        return answer
    if api == "responses":
        return _response_to_completion(answer)
    return _message_to_completion(answer)


def _response_to_completion(resp: dict[str, Any]) -> dict[str, Any] | None:
    if resp.get("object") != "response":
        return None
    chat_usage = _usage_of(resp)
    output = resp.get("output") or []
    if resp.get("status") != "completed" or any(o.get("type") != "message" for o in output if isinstance(o, dict)):
        return {"usage": chat_usage}  # usage only: tool calls, reasoning items or an unfinished answer
    text = "".join(wire.content_text(o.get("content")) for o in output if isinstance(o, dict))
    parts = [p for o in output if isinstance(o, dict) and isinstance(o.get("content"), list)
             for p in o["content"] if isinstance(p, dict)]
    logprobs = [t for p in parts if isinstance(p.get("logprobs"), list) for t in p["logprobs"]]
    notes = [_chat_annotation(a) for p in parts if isinstance(p.get("annotations"), list) for a in p["annotations"]]
    return _completion(str(resp.get("model", "")), text, "stop", chat_usage,
                       {"logprobs": {"content": logprobs, "refusal": None}} if logprobs else None,
                       {"annotations": notes} if notes else None)


# A url_citation is the one annotation both APIs have: chat nests its fields, Responses does not. Others stay as sent.
def _chat_annotation(note: Any) -> Any:
    if isinstance(note, dict) and note.get("type") == "url_citation" and "url_citation" not in note:
        return {"type": "url_citation", "url_citation": {k: v for k, v in note.items() if k != "type"}}
    return note


def _responses_annotation(note: Any) -> Any:
    if isinstance(note, dict) and note.get("type") == "url_citation" and isinstance(note.get("url_citation"), dict):
        return {"type": "url_citation", **note["url_citation"]}
    return note


_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def _message_to_completion(msg: dict[str, Any]) -> dict[str, Any] | None:
    if msg.get("type") != "message":
        return None
    chat_usage = _usage_of(msg)
    blocks = msg.get("content") or []
    finish = _STOP.get(str(msg.get("stop_reason")))
    if finish is None or any(b.get("type") != "text" for b in blocks if isinstance(b, dict)):
        return {"usage": chat_usage}
    return _completion(str(msg.get("model", "")), wire.content_text(blocks), finish, chat_usage,
                       _stop_reason(msg.get("stop_reason"), msg.get("stop_sequence")))


def _stop_reason(reason: Any, sequence: Any) -> dict[str, Any] | None:
    """The stop sequence an Anthropic answer ended on, as vLLM's chat choice names it (`stop_reason`, the matched
    stop string), so that a hit replays it: it replayed as a natural end (`end_turn`, `stop_sequence: null`)."""
    return {"stop_reason": sequence} if reason == "stop_sequence" and isinstance(sequence, str) else None


class Assembler(Protocol):
    """Rebuilds a streamed answer from its SSE `data:` payloads (router/openai_wire.SSEDecoder)."""

    def add(self, payload: bytes) -> None: ...

    def completion(self) -> dict[str, Any] | None: ...

    @property
    def usage(self) -> dict[str, Any] | None: ...

    @property
    def unstored(self) -> str:
        """Why `completion` is None (`unstored`)."""


_TOOL_USE = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def unstored(api: Api, answer: dict[str, Any] | None) -> str:
    """Why an answer of `api` is not stored (its `to_completion` has no choices), for the log line: tool_calls (a
    Responses function or hosted tool call, an Anthropic tool_use; a chat answer's are stored, not streamed ones),
    not_text (a finished answer holding reasoning items, thinking or other blocks beside its text), else incomplete
    (unfinished, failed, not JSON)."""
    if not isinstance(answer, dict) or api == "chat":
        return "incomplete"
    responses = api == "responses"
    items = answer.get("output" if responses else "content")
    kinds = {str(i.get("type")) for i in items if isinstance(i, dict)} if isinstance(items, list) else set()
    if any(k.endswith("_call") if responses else k in _TOOL_USE for k in kinds):
        return "tool_calls"
    finished = answer.get("status") == "completed" if responses else str(answer.get("stop_reason")) in _STOP
    return "not_text" if finished and kinds - {"message" if responses else "text"} else "incomplete"


def _event(payload: bytes) -> tuple[dict[str, Any], str | None] | None:
    """One SSE event and its `type`; None when the payload is not JSON (the stream is broken). A JSON value
    that is not an object is an event of no type."""
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        return None
    return (event, event.get("type")) if isinstance(event, dict) else ({}, None)


class ResponsesAssembler:
    """Responses events: the final `response.completed` event carries the whole response."""

    def __init__(self) -> None:
        self._final: dict[str, Any] | None = None
        self.failed = False

    @property
    def response_id(self) -> str | None:
        return response_id(self._final)

    def add(self, payload: bytes) -> None:
        decoded = _event(payload)
        if decoded is None:
            self.failed = True
            return
        event, kind = decoded
        if kind in ("error", "response.failed") or ("error" in event and not kind):
            self.failed = True
        elif kind in ("response.completed", "response.incomplete") and isinstance(event.get("response"), dict):
            self._final = event["response"]

    def completion(self) -> dict[str, Any] | None:
        found = None if self.failed else to_completion("responses", self._final)
        return found if found and found.get("choices") else None

    @property
    def usage(self) -> dict[str, Any] | None:
        found = to_completion("responses", self._final)
        return found.get("usage") if found else None

    @property
    def unstored(self) -> str:
        return "incomplete" if self.failed else unstored("responses", self._final)


class MessagesAssembler:
    """Anthropic events: text deltas, input tokens at message_start, output tokens at message_delta."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._model = ""
        self._input: int | None = None
        self._output: int | None = None
        self._stop: str | None = None
        self._stop_sequence: str | None = None
        self._other_blocks = False
        self._blocks: set[str] = set()
        self.done = self.failed = False

    def add(self, payload: bytes) -> None:
        decoded = _event(payload)
        if decoded is None:
            self.failed = True
            return
        event, kind = decoded
        if kind == "message_start":
            message = event.get("message") or {}
            self._model = str(message.get("model", ""))
            self._input = (message.get("usage") or {}).get("input_tokens")
        elif kind == "content_block_start":
            block = (event.get("content_block") or {}).get("type")
            self._other_blocks |= block != "text"
            self._blocks.add(str(block))
        elif kind == "content_block_delta" and (event.get("delta") or {}).get("type") == "text_delta":
            self._text.append(str(event["delta"].get("text", "")))
        elif kind == "message_delta":
            self._stop = (event.get("delta") or {}).get("stop_reason")
            self._stop_sequence = (event.get("delta") or {}).get("stop_sequence")
            self._output = (event.get("usage") or {}).get("output_tokens")
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.failed = True

    def completion(self) -> dict[str, Any] | None:
        finish = _STOP.get(str(self._stop))
        if not self.done or self.failed or self._other_blocks or finish is None:
            return None
        return _completion(self._model, "".join(self._text), finish, self.usage,
                           _stop_reason(self._stop, self._stop_sequence))

    @property
    def usage(self) -> dict[str, Any] | None:
        return _chat_usage(self._input, self._output)

    @property
    def unstored(self) -> str:
        if self._blocks & _TOOL_USE:
            return "tool_calls"
        finished = self.done and not self.failed and self._stop in _STOP
        return "not_text" if finished and self._other_blocks else "incomplete"


def response_id(answer: dict[str, Any] | None) -> str | None:
    """The id of a Responses answer, which a later request may continue with `previous_response_id`."""
    rid = answer.get("id") if isinstance(answer, dict) and answer.get("object") == "response" else None
    return rid if isinstance(rid, str) else None


def assembler(api: Api) -> Assembler:
    if api == "responses":
        return ResponsesAssembler()
    if api == "messages":
        return MessagesAssembler()
    return wire.StreamAssembler()


# ---- cache hits: chat.completion -> format ---------------------------------------------------------

HIT_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

def _choice(completion: dict[str, Any]) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    return choice if isinstance(choice, dict) else {}


def _text_of(completion: dict[str, Any]) -> tuple[str, str]:
    choice = _choice(completion)
    return str((choice.get("message") or {}).get("content") or ""), str(choice.get("finish_reason") or "stop")


# The request parameters a Response object repeats (OpenAI's and vLLM's do), with the defaults of the three it always
# has. A hit said `tools: []`, `tool_choice: "auto"` whatever was sent and repeated none of the others.
_RESPONSE_ECHO = ("background", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "prompt",
                  "prompt_cache_key", "reasoning", "safety_identifier", "service_tier", "store", "temperature", "text",
                  "top_logprobs", "top_p", "truncation", "user")
_RESPONSE_DEFAULTS = {"parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def as_response(completion: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A stored chat.completion as a Responses API object answering `request` (the body sent, or that would have been
    sent, upstream), whose parameters it repeats; its `model` is the one `render_hit` settled on."""
    text, finish = _text_of(completion)
    choice = _choice(completion)
    notes = (choice.get("message") or {}).get("annotations") or []
    logprobs = (choice.get("logprobs") or {}).get("content") or []
    part = {"type": "output_text", "text": text, "annotations": [_responses_annotation(a) for a in notes],
            "logprobs": logprobs}
    usage = completion.get("usage") or {}
    p, c = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "status": "completed" if finish == "stop" else "incomplete", "model": completion["model"], "error": None,
            "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
            "output": [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed",
                        "role": "assistant", "content": [part]}],
            **{k: request.get(k, v) for k, v in _RESPONSE_DEFAULTS.items()},
            **{k: request[k] for k in _RESPONSE_ECHO if k in request},
            "usage": {"input_tokens": p, "output_tokens": c, "total_tokens": p + c,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}


def as_message(completion: dict[str, Any]) -> dict[str, Any]:
    """A stored chat.completion as an Anthropic message; its `model` is the one `render_hit` settled on."""
    text, finish = _text_of(completion)
    sequence = _choice(completion).get("stop_reason")
    sequence = sequence if isinstance(sequence, str) and finish == "stop" else None
    usage = completion.get("usage") or {}
    reason = "max_tokens" if finish == "length" else "end_turn" if sequence is None else "stop_sequence"
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
            "model": completion["model"], "content": [{"type": "text", "text": text}],
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": {"input_tokens": int(usage.get("prompt_tokens", 0)),
                      "output_tokens": int(usage.get("completion_tokens", 0))}}


def _sse(events: Iterator[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def response_events(resp: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A complete response replayed as the Responses streaming events, in order."""
    message = resp["output"][0]
    done = message["content"][0]
    text, logprobs = done["text"], done["logprobs"]
    started = {**resp, "status": "in_progress", "output": [], "usage": None}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ids = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": {**message, "status": "in_progress",
                                                                    "content": []}}),
        ("response.content_part.added", {**ids, "part": part}),
        ("response.output_text.delta", {**ids, "delta": text, "logprobs": logprobs}),
        ("response.output_text.done", {**ids, "text": text, "logprobs": logprobs}),
        ("response.content_part.done", {**ids, "part": done}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
        ("response.completed", {"response": resp}),
    ]
    for seq, (name, data) in enumerate(events):
        yield name, {"type": name, "sequence_number": seq, **data}


def message_events(msg: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A complete message replayed as Anthropic's streaming events, in order."""
    usage = msg["usage"]
    yield "message_start", {"type": "message_start", "message": {
        **msg, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 0}}}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": msg["content"][0]["text"]}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"],
                                                               "stop_sequence": msg["stop_sequence"]},
                            "usage": {"output_tokens": usage["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


def render_hit(api: Api, completion: dict[str, Any], routed: str, stream: bool, include_usage: bool = False,
               request: dict[str, Any] | None = None) -> bytes:
    """A cached answer (a chat.completion) in the client's format, naming the model that answered it: the stored
    answer's own `model`, else `routed`, the model the request was routed to (part of the entry's scope), so an
    upstream answer without one is never replayed with none, null, "" or "None". `include_usage` is the chat
    `stream_options.include_usage` (the other APIs' streams always carry usage). `request`: the body the request would
    have sent upstream (`upstream_body`), whose parameters a Response repeats.

    A hit reports zero usage in every format: no model spent tokens on it, so a client billing from `usage` pays
    nothing for it. It replayed the stored answer's usage, and none at all (`usage: null`, no usage chunk) for an
    answer stored from a stream the client had not asked usage of."""
    answered = completion.get("model")
    completion = {**completion, "usage": dict(HIT_USAGE)}
    if not isinstance(answered, str) or not answered:
        completion["model"] = routed
    if api == "chat":
        fresh = wire.fresh_completion(completion)
        return wire.completion_to_sse(fresh, include_usage) if stream else json.dumps(fresh).encode()
    if api == "responses":
        resp = as_response(completion, request or {})
        return _sse(response_events(resp)) if stream else json.dumps(resp).encode()
    msg = as_message(completion)
    return _sse(message_events(msg)) if stream else json.dumps(msg).encode()


def cache_identity(headers: dict[str, str]) -> dict[str, str]:
    """Anthropic clients send their API key as `x-api-key`: the cache scopes it like a bearer token."""
    if "authorization" in headers or not headers.get("x-api-key"):
        return headers
    return {**headers, "authorization": "Bearer " + headers["x-api-key"]}


# ---- errors ---------------------------------------------------------------------------------------

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


def error_body(api: Api, exc: RouterError) -> bytes:
    """The error body the client's SDK parses: OpenAI's for chat and Responses, Anthropic's for Messages."""
    if api != "messages":
        return exc.body()
    kind = _ANTHROPIC_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": exc.message}}).encode()
