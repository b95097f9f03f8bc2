"""The OpenAI chat-completions wire format: parse requests, build responses, speak SSE.

Pure bytes-in, objects-out code with no I/O, so every phase of the ext_proc stream and the cache
share one definition of what a valid request and a complete answer look like.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from router import chat_schema as schema
from router.errors import InvalidJSON, InvalidRequest

ROLES = schema.ROLES
# Optional request fields and the JSON types OpenAI accepts for them.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "stream": (bool,),
    "temperature": (int, float),
    "top_p": (int, float),
    "n": (int,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "seed": (int,),
    "user": (str,),
    "tools": (list,),
    "response_format": (dict,),
    "stream_options": (dict,),
    "stop": (str, list),
    "logit_bias": (dict,),
}


# The reasoning family types (config `reasoning_families.*.type`) whose switch the router can set in a request's body:
# a chat body carries either; Responses only an effort, Messages neither (router/apis.py).
REASONING_SWITCHES = frozenset({"chat_template_kwargs", "reasoning_effort"})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat completion request; `body` is the client's JSON object."""

    body: dict[str, Any]
    model: str
    stream: bool
    reasoning_switches: frozenset[str] = REASONING_SWITCHES  # what the format sent upstream can carry

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages

    @property
    def has_user_turn(self) -> bool:
        return any(m["role"] == "user" for m in self.messages)

    @property
    def include_usage(self) -> bool:
        """A stream ends with a `choices: []` usage chunk only when the client asked for it (OpenAI's rule)."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def latest_user_text(self) -> str:
        """The text the classifier and the cache look at: the last user turn, else the last message."""
        return message_text(self.messages[self.classified_index()])

    def classified_index(self) -> int:
        """The message the category is taken from: the last user turn, else the last message."""
        users = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
        return users[-1] if users else len(self.messages) - 1


def strings(value: Any, skip: Collection[str] = ()) -> Iterator[str]:
    """The strings of a JSON value, in order (texts, tool arguments, tool results), but those under a key in `skip`."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in skip:
                yield from strings(v, skip)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v, skip)


def message_text(message: dict[str, Any]) -> str:
    """Text of a message whose content is a string, a list of parts, or null."""
    return content_text(message.get("content"))


def content_text(content: Any) -> str:
    """Text of a string or of a list of typed parts (text, input_text, output_text: any part with a `text`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def bounded(text: str, max_chars: int) -> str:
    """The head and tail of a long text, max_chars in all: what the classifier scans of a huge prompt."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n{text[-half:]}"


def _not_json(constant: str) -> float:
    """NaN and Infinity parse in Python but are not JSON; a model server may take them past its range checks."""
    raise InvalidJSON(f"request body is not valid JSON: {constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidJSON(f"request body is not valid JSON: {text[:40]} is out of a number's range")
    return value


def load_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: depth and Unicode checked before and after the parse (every API)."""
    schema.check_raw(raw)
    try:
        body = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    except ValueError:  # Python's own bound on integer conversion (a 500 before it was caught here)
        raise InvalidJSON(f"request body holds an integer of more than {sys.get_int_max_str_digits()} digits") from None
    except RecursionError:  # check_raw bounds depth; this is the parser's own backstop
        raise InvalidJSON(f"request body nests deeper than {schema.MAX_DEPTH} levels") from None
    schema.check_unicode(raw, body)
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Parse and validate a request body, raising an InvalidRequest the client can act on."""
    body = load_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    _check_messages(body.get("messages"))
    for field, types in _FIELD_TYPES.items():
        value = body.get(field)
        if value is not None and (not isinstance(value, types) or _is_bool_for_number(value, types)):
            names = " or ".join(_JSON_TYPE_NAMES[t] for t in types)
            raise InvalidRequest(f"'{field}' must be {names}", param=field)
    schema.check_tools(body.get("tools"))
    schema.check_tool_choice(body.get("tool_choice"))
    schema.check_stop(body.get("stop"))
    schema.check_response_format(body.get("response_format"))
    return ChatRequest(body=body, model=model, stream=bool(body.get("stream")))


_JSON_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                    list: "an array", dict: "an object"}


def _is_bool_for_number(value: Any, types: tuple[type, ...]) -> bool:
    """JSON true is not a number, though Python's bool subclasses int."""
    return isinstance(value, bool) and bool not in types


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    schema.check_count(messages, "messages")
    for i, message in enumerate(messages):
        schema.check_message(message, f"messages[{i}]")


def model_object(name: str, owned_by: str = "semantic-router") -> dict[str, Any]:
    """One entry of GET /v1/models, and the body of GET /v1/models/{name}. `created` is 0: the router's names have
    no creation date, and the time of each call (as it was) made the same model look new on every listing."""
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by}


def models_list(names: list[str]) -> bytes:
    """The body of GET /v1/models."""
    return json.dumps({"object": "list", "data": [model_object(n) for n in names]}).encode()


def fresh_completion(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored completion re-issued as new: fresh id and timestamp; its model stays the one that answered, as on
    the miss that stored it (a client counting cost by `model` would otherwise book hits under `auto`)."""
    return {**stored, "id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time())}


# ---- Server-sent events -------------------------------------------------------------------

DONE = b"[DONE]"


class SSEDecoder:
    """Incremental SSE parser: feed body chunks as they arrive, get complete `data:` payloads."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                yield b"\n".join(data)


# Message texts a stream spells out in pieces, joined as a non-streamed answer holds them: the content, a refusal, vLLM's
# reasoning parser output (`reasoning_content`, or `reasoning` in newer versions; dropped until 2026-12-02, a hit had
# no reasoning though a non-streamed miss's JSON has it).
_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


class StreamAssembler:
    """Rebuilds one chat.completion from chat.completion.chunk frames, so streams can be cached. A choice's logprobs
    are the chunks' `content` and `refusal` token lists joined in order, as a non-streamed answer carries them: they
    were dropped (`null`), and a client that asked for logprobs got a cached answer without them. Likewise the
    `delta.refusal` texts become the message's `refusal`: dropped, a cached refusal replayed as an empty answer; and a
    legacy `delta.function_call` the message's `function_call`: dropped, a hit was an empty turn for a function loop."""

    def __init__(self) -> None:
        self.done = False
        self.failed = False
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None

    def add(self, payload: bytes) -> None:
        if payload == DONE:
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            self.failed = True
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self.failed = True
            return
        self._meta = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk}
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self._merge_choice(choice)

    def _merge_choice(self, choice: dict[str, Any]) -> None:
        slot = self._choices.setdefault(choice.get("index", 0), {"content": [], "role": "assistant",
                                                                 "finish_reason": None})
        delta = choice.get("delta") or {}
        if delta.get("role"):
            slot["role"] = delta["role"]
        for part in _TEXT_FIELDS:
            if isinstance(delta.get(part), str):
                slot.setdefault(part, []).append(delta[part])
        if isinstance(call := delta.get("function_call"), dict):  # a legacy function call: name, arguments in pieces
            kept = slot.setdefault("function_call", {})
            kept |= {k: kept.get(k, "") + v for k, v in call.items() if k in ("name", "arguments") and isinstance(v, str)}
        if delta.get("tool_calls"):
            slot["tool_calls"] = True  # streamed tool calls are not reassembled: never cached
        if choice.get("finish_reason"):
            slot["finish_reason"] = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):  # each chunk carries the token entries of its own delta, in order
            kept = slot.setdefault("logprobs", {})
            for part in ("content", "refusal"):
                if isinstance(tokens := logprobs.get(part), list):
                    kept.setdefault(part, []).extend(tokens)

    def completion(self) -> dict[str, Any] | None:
        """The reassembled answer, or None when the stream was cut, failed or is not cacheable."""
        slots = self._choices.values()
        if not self.done or self.failed or not self._choices:
            return None
        if any(s.get("tool_calls") or not s["finish_reason"] for s in slots):
            return None
        choices = [{"index": i, "message": _message(s), "finish_reason": s["finish_reason"], "logprobs": _logprobs(s)}
                   for i, s in sorted(self._choices.items())]
        out = {**self._meta, "object": "chat.completion", "choices": choices}
        if self._usage:
            out["usage"] = self._usage
        return out

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._usage

    @property
    def unstored(self) -> str:
        """Why `completion` is None: tool_calls (streamed tool calls are not reassembled), else incomplete."""
        return "tool_calls" if any(slot.get("tool_calls") for slot in self._choices.values()) else "incomplete"


def _message(slot: dict[str, Any]) -> dict[str, Any]:
    """A choice's message; each field but the content only when a chunk carried it, as the content-only answers
    stored so far. An empty content beside a function call or a refusal is null, as in the non-streamed answer (it
    was "": a hit differed from the miss it replays)."""
    text = "".join(slot["content"])
    message = {"role": slot["role"], "content": None if not text and ("function_call" in slot or "refusal" in slot)
               else text}
    message |= {field: "".join(slot[field]) for field in _TEXT_FIELDS if field != "content" and field in slot}
    if "function_call" in slot:
        message["function_call"] = slot["function_call"]
    return message


def _logprobs(slot: dict[str, Any]) -> dict[str, Any] | None:
    """A choice's logprobs as a non-streamed answer has them; None when no chunk carried any."""
    kept = slot.get("logprobs")
    return None if kept is None else {"content": kept.get("content"), "refusal": kept.get("refusal")}


def completion_to_sse(completion: dict[str, Any], include_usage: bool) -> bytes:
    """Replays a complete answer as a valid chat.completion.chunk stream ending in [DONE]. With `include_usage`, as
    OpenAI streams it: every chunk has `usage: null` but the last, `choices: []` with the answer's usage. Every field of
    the message travels in the one delta (tool calls with their stream `index`, reasoning, refusal) and the choice's
    logprobs with it: a cached tool call replayed as content only was an empty turn for an agent loop."""
    base: dict[str, Any] = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")
                            if k in completion}
    base["object"] = "chat.completion.chunk"
    if include_usage:
        base["usage"] = None
    frames: list[dict[str, Any]] = []
    for choice in completion.get("choices", []):
        message = choice.get("message") or {}
        index = choice.get("index", 0)
        delta = {"role": message.get("role", "assistant"), "content": message.get("content"),
                 **{k: v for k, v in message.items() if k not in ("role", "content") and v is not None}}
        if isinstance(delta.get("tool_calls"), list):
            delta["tool_calls"] = [{"index": i, **call} if isinstance(call, dict) else call
                                   for i, call in enumerate(delta["tool_calls"])]
        first = {"index": index, "delta": delta, "finish_reason": None}
        if choice.get("logprobs") is not None:
            first["logprobs"] = choice["logprobs"]
        frames.append({**base, "choices": [first]})
        frames.append({**base, "choices": [{"index": index, "delta": {},
                                            "finish_reason": choice.get("finish_reason", "stop")}]})
    if include_usage:
        frames.append({**base, "choices": [], "usage": completion.get("usage")})
    out = b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames)
    return out + b"data: " + DONE + b"\n\n"
