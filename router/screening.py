"""What the guards and the PII screen read of a request: every text a user or a tool puts in front of the model.

A message's content is read part by part: text parts, the text of documents and files whose media type is text
(decoded from base64 or a data URL), tool results apart (a tool's output is attacker-influenced: indirect prompt
injection). What the router cannot read (a PDF, an image file, a file id or URL it never sees, a part of a type it
does not know) is named in `Reading.unreadable`: the request is then unscreened content (router/extproc/screen.py).
The classifier reads every text in its canonical form (router/classifier/canonical.py): what the model reads as
"ignore" is screened as "ignore" however it is spelt.

Pure code, no I/O; what is forwarded upstream is never changed here.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from router.openai_wire import ChatRequest, strings

# Media types whose bytes are text the model reads as such, beside text/*.
_TEXT_MEDIA = frozenset({"application/json", "application/xml", "application/yaml", "application/x-yaml",
                         "application/x-ndjson", "application/csv", "application/javascript", "application/sql"})
# Decoded characters kept of one document: its head and tail, as the classifier reads a long prompt
# (classifier.max_scan_chars' default), so a document costs bounded work whatever its size.
MAX_DOCUMENT_CHARS = 131_072
_HALF = MAX_DOCUMENT_CHARS // 2 // 3 * 3  # bytes kept of each end: whole base64 quanta
_OCTETS = "application/octet-stream"
# A byte-order mark decides a document's encoding before any charset (UTF-32 first: its LE mark starts as UTF-16's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_UNIT = {"utf-16-le": 2, "utf-16-be": 2, "utf-32-le": 4, "utf-32-be": 4}  # bytes per code unit
_TEXT_PARTS = ("text", "input_text", "output_text", "refusal")
_TYPE_NAME = re.compile(r"[a-z0-9_.-]{1,40}")  # a part type named in a block message and a header as sent
# Parts and blocks that are read as nothing, and not counted unreadable: images, audio and video (README), and an
# assistant's own tool calls and reasoning, which the PII validators read as every string of an earlier message
# does. Any other type the router does not read is unreadable: it may carry text the model reads.
_NOT_READ = frozenset({
    "image_url", "input_image", "image", "audio_url", "video_url", "input_audio",
    "function_call", "custom_tool_call", "tool_use", "server_tool_use", "mcp_tool_use", "computer_call",
    "local_shell_call", "image_generation_call", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "reasoning", "thinking", "redacted_thinking",
})
# An assistant message's reasoning as a chat body carries it (openai_wire._TEXT_FIELDS reads the same from an answer).
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _field(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


# The outputs of tools the model provider runs itself (Anthropic's server tools, the Responses API's hosted tools),
# sent back in a later request's history: what each holds that the model reads, as strings, content lists or blocks.
# A web search result's page text is `encrypted_content`, ciphertext only Anthropic's API decrypts: no model server
# behind the router reads it, so it is not read (nor is an encrypted stdout). Output files (`file_id`) are names of
# files the model wrote, not their text. An error holds a code only.
_SERVER_TOOL_RESULTS: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
    "web_search_tool_result": lambda b: [s for r in _items(b.get("content")) for s in (r.get("title"), r.get("url"))],
    "web_fetch_tool_result": lambda b: [_field(b.get("content"), "url"), _field(b.get("content"), "content")],
    "mcp_tool_result": lambda b: [b.get("content")],
    "code_execution_tool_result": lambda b: [_field(b.get("content"), "stdout"), _field(b.get("content"), "stderr")],
    "bash_code_execution_tool_result": lambda b: [_field(b.get("content"), "stdout"),
                                                  _field(b.get("content"), "stderr")],
    # Responses: the call's own arguments (code, queries) are the model's, as a function_call's are
    "code_interpreter_call": lambda b: [o.get("logs") for o in _items(b.get("outputs"))],
    "file_search_call": lambda b: [s for r in _items(b.get("results")) for s in (r.get("filename"), r.get("text"))],
    "web_search_call": lambda b: [s.get("url") for s in _items(_field(b.get("action"), "sources"))],
}
# Parts holding text the user did not type (with every "*_output" part: a tool's output in a Responses item).
_FOREIGN_PARTS = frozenset({"file", "input_file", "document", "tool_result", "search_result", "mcp_call",
                            *_SERVER_TOOL_RESULTS})
_URLSAFE = str.maketrans("-_", "+/")  # the URL-safe alphabet decodes to the same bytes


@dataclass(frozen=True, slots=True)
class Reading:
    """What the router can read of one message's content, in order."""

    texts: tuple[str, ...] = ()  # its text parts and the text of its documents
    tool_results: tuple[str, ...] = ()  # the text of each tool result block it holds (Anthropic tool_result)
    unreadable: tuple[str, ...] = ()  # each document it holds that the router cannot read, as the client named it
    decoded: bool = False  # a document was decoded: its text is in no string of the body
    parts: tuple[str, ...] = ()  # every text read, tool results' own parts included, in order
    foreign: bool = False  # it holds text the user did not type: a document, file, search result or tool output

    @property
    def text(self) -> str:
        """The parts as the encoder reads them: apart, as a model server's chat template shows them."""
        return "\n".join(self.texts)


@dataclass
class _Reader:
    texts: list[str] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    decoded: bool = False
    parts: list[str] = field(default_factory=list)
    foreign: bool = False

    def reading(self) -> Reading:
        return Reading(tuple(self.texts), tuple(self.tool_results), tuple(self.unreadable), self.decoded,
                       tuple(self.parts), self.foreign)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.parts.append(text)

    def content(self, content: Any) -> None:
        if isinstance(content, str):
            self.add(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    self.part(part)

    def part(self, part: dict[str, Any]) -> None:
        kind = part.get("type") if isinstance(part.get("type"), str) else None  # a list or an object: unknown
        self.foreign |= kind in _FOREIGN_PARTS or isinstance(kind, str) and kind.endswith("_output")
        if kind in _TEXT_PARTS and isinstance(part.get(kind if kind == "refusal" else "text"), str):
            self.add(part[kind if kind == "refusal" else "text"])
        elif kind == "file" and isinstance(part.get("file"), dict):  # chat completions
            self.file(part["file"], part["file"].get("file_data"))
        elif kind == "input_file":  # Responses
            self.file(part, part.get("file_data"))
        elif kind == "document":  # Anthropic
            self.strings(part.get("title"), part.get("context"))
            self.document(part.get("source"))
        elif kind == "tool_result":  # Anthropic: a tool's output inside a user turn
            self.tool_result(read(part.get("content")))
        elif kind in _SERVER_TOOL_RESULTS:
            inner = _Reader()
            for piece in _SERVER_TOOL_RESULTS[kind](part):
                if isinstance(piece, dict):  # a fetched page: a document block
                    inner.part(piece)
                else:
                    inner.content(piece)
            self.tool_result(inner.reading())
        elif kind == "search_result":  # Anthropic: a search result the client supplies, as text blocks
            self.strings(part.get("source"), part.get("title"))
            self.content(part.get("content"))
        elif kind == "mcp_call" or isinstance(kind, str) and kind.endswith("_output"):  # Responses: a tool's output
            self.content(part.get("output"))
        elif kind not in _NOT_READ:  # an item_reference (stored content), a type the router does not know
            self.unreadable.append(f"a part of type {kind}" if isinstance(kind, str) and _TYPE_NAME.fullmatch(kind)
                                   else "a part of an unknown type")

    def tool_result(self, inner: Reading) -> None:
        self.tool_results.append("\n".join((*inner.texts, *inner.tool_results)))
        self.unreadable += inner.unreadable
        self.decoded |= inner.decoded
        self.parts += inner.parts

    def strings(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and value:
                self.add(value)

    def file(self, file: dict[str, Any], data: Any) -> None:
        """A chat `file` part or a Responses `input_file`: inline data (a data URL or bare base64) is read when it is
        text; a file id or URL names a file the router never sees, also beside inline data (a server may prefer it)."""
        name, ref = file.get("filename"), file.get("file_id") or file.get("file_url")
        if ref or not isinstance(data, str) or not data:
            self.unreadable.append(_describe(name, None, ref))
        if not isinstance(data, str) or not data:
            return
        if (url := _data_url(data)) is not None:
            self.bytes(url[1], url[0], name)
        elif (raw := _b64(data)) is not None:
            self.bytes(raw, mimetypes.guess_type(name)[0] if isinstance(name, str) else None, name)
        else:  # neither a data URL nor base64: plain text the model reads
            self.add(data)

    def document(self, source: Any) -> None:
        if not isinstance(source, dict):
            return
        kind, media = source.get("type"), source.get("media_type")
        media = media if isinstance(media, str) else None
        if kind == "text" and isinstance(source.get("data"), str):
            self.add(source["data"])
        elif kind == "content":
            self.content(source.get("content"))
        elif kind == "base64" and isinstance(source.get("data"), str):
            self.bytes(_b64(source["data"]), media, None)
        else:  # url, file: a document the router never sees
            self.unreadable.append(_describe(None, media, source.get("url") or source.get("file_id")))

    def bytes(self, raw: tuple[bytes, ...] | None, media: str | None, name: Any) -> None:
        text = _text_of(raw, media) if raw is not None else None
        if text is None:
            self.unreadable.append(_describe(name, media.split(";", 1)[0].strip() if media else None, None))
        else:
            self.add(text)
            self.decoded = True


def read(content: Any) -> Reading:
    """What the router can read of a message's content (a string, a list of parts or blocks, or anything else)."""
    reader = _Reader()
    reader.content(content)
    return reader.reading()


class Other(NamedTuple):
    """A text the guards read besides the classified turn."""

    label: str  # how a block names it: "user turn 2", "tool result 1", "the assistant prefill"
    text: str
    # A request the content-safety guard judges (a user turn, a prefill), not a tool's output: a page about a harmful
    # topic that a tool fetched is not the user asking for it. The jailbreak guard reads every one.
    asks: bool
    # Text the client typed (a user turn or prefill without a document, file or search result in it): a plain override
    # in it counts only with the head's agreement (injection_rules.in_request).
    typed: bool = True


@dataclass(frozen=True, slots=True)
class Screen:
    """What one chat request puts in front of the model, as the session screens it. The texts are as sent: the session
    bounds them, then the classifier takes their canonical form (bounded work for a huge prompt)."""

    latest: str  # the classified turn (the latest user turn, else the last message): category and guards
    # what the guards and the name/address detection read besides, in order: every earlier user turn, every
    # tool result (role tool, function_call_output, tool_result blocks) and an assistant prefill (a last assistant
    # message, which the model continues as its own words)
    earlier: tuple[Other, ...]
    # For the exact PII validators, the strings no text above holds (`_unread`): a system prompt, assistant turns, tool
    # calls' arguments, ids, and where a message's parts meet, run together. The texts above are scanned by the
    # classifier's pass over each (which runs them), so a long conversation costs no rescan of every earlier text.
    structured: tuple[str, ...]
    unreadable: tuple[str, ...]  # documents anywhere in the conversation the router cannot read
    # The request holds instructions the user did not type: a system or developer prompt, a tool result, a document,
    # file or search result. A plain override ("ignore all previous instructions") is a jailbreak only then
    # (router/classifier/injection_rules.py); in a plain chat it redirects the user's own earlier asks.
    foreign: bool
    # `latest` is a tool's output (a request with no user turn: a Responses continuation of tool outputs alone), which
    # the guards read as the tool result it also is in `earlier`: the content-safety guard does not judge it.
    latest_tool: bool = False
    latest_typed: bool = True  # `latest` is text the client typed (Other.typed)

    def user_turns(self) -> list[str]:
        """The earlier user turns' texts, in order, as the guards read them (affinity's first decisive turn is
        looked up in the memo by this text)."""
        return [other.text for other in self.earlier if other.label.startswith(_USER_TURN)]


_USER_TURN = "user turn "
_TOOL_ROLES = ("tool", "function")


def screen(chat: ChatRequest) -> Screen:
    """Every text of `chat` a guard or the PII screen must read, and what it cannot read."""
    classified, last = chat.classified_index(), len(chat.messages) - 1
    readings = [read(m.get("content")) for m in chat.messages]
    earlier: list[Other] = []
    structured: list[str] = []
    users = tools = 0
    for i, (message, reading) in enumerate(zip(chat.messages, readings, strict=True)):
        role = message["role"]
        users += role == "user"
        if role == "user" and i != classified and reading.texts:
            earlier.append(Other(f"{_USER_TURN}{users}", reading.text, asks=True, typed=not reading.foreign))
        elif role in _TOOL_ROLES and reading.texts:
            tools += 1
            earlier.append(Other(f"tool result {tools}", reading.text, asks=False, typed=False))
        elif role == "assistant" and i == last and (prefill := _prefill(message, reading)):  # also with no user turn
            earlier.append(Other("the assistant prefill", prefill, asks=True, typed=not reading.foreign))
        for result in filter(None, reading.tool_results):
            tools += 1
            earlier.append(Other(f"tool result {tools}", result, asks=False, typed=False))
        prefilled = role == "assistant" and i == last != classified  # its parts are in the prefill's text
        structured += _unread(message, reading, role == "user" or role in _TOOL_ROLES or prefilled)
    foreign = tools > 0 or any(r.foreign for r in readings) or any(
        m["role"] in ("system", "developer") and r.texts for m, r in zip(chat.messages, readings, strict=True))
    return Screen(readings[classified].text, tuple(earlier), tuple(filter(None, structured)),
                  tuple(u for r in readings for u in r.unreadable), foreign,
                  latest_tool := chat.messages[classified]["role"] in _TOOL_ROLES,
                  not (latest_tool or readings[classified].foreign))


# Characters read on each side of the point where two parts of a message meet: the longest value the validators
# find (an IBAN, a spaced card number) fits many times over.
SEAM_CHARS = 128


def _unread(message: dict[str, Any], reading: Reading, screened: bool) -> list[str]:
    """What the exact validators must read of `message` beside the texts the classifier reads: every string of it
    (tool calls' arguments, names, a system prompt) but its parts when they are `screened` (a user turn's, a tool
    message's, the prefill's: the classifier's pass over each runs the validators; a decoded document, in no string,
    is read whole otherwise), and where its parts meet."""
    parts = set(reading.parts) if screened else set()
    unread = [s for s in strings(message) if s not in parts]
    if reading.decoded and not screened:
        unread += reading.parts
    return unread + _seams(reading.parts)


def _seams(parts: tuple[str, ...]) -> list[str]:
    """The text around each point where two parts meet, run together (SEAM_CHARS each side, widened to whitespace):
    "536-22-" + "1234" is one SSN to the model, whichever parts each half is in."""
    joined, at = "".join(parts), 0
    spans: list[tuple[int, int]] = []
    for part in parts[:-1]:
        at += len(part)
        lo = max(at - SEAM_CHARS, 0)
        start = max(joined.rfind(" ", 0, lo), joined.rfind("\n", 0, lo), 0)
        ends = [i for i in (joined.find(" ", at + SEAM_CHARS), joined.find("\n", at + SEAM_CHARS)) if i >= 0]
        end = min(ends, default=len(joined))
        if spans and start <= spans[-1][1]:
            start = spans.pop()[0]
        spans.append((start, end))
    return [joined[start:end] for start, end in spans]


def _prefill(message: dict[str, Any], reading: Reading) -> str:
    """A prefill as the model continues it: a chat template (vLLM's Qwen3 and others) shows the last assistant
    message's reasoning (`reasoning_content`, or `reasoning` in newer vLLM) before its content, as its own thoughts."""
    thoughts = [message[f] for f in _REASONING_FIELDS if isinstance(message.get(f), str) and message[f]]
    return "\n".join([*thoughts, *reading.texts])


def _data_url(value: str) -> tuple[str, tuple[bytes, ...] | None] | None:
    """(media type with its parameters, bytes) of an RFC 2397 data URL: scheme and `;base64` in any case, a payload
    percent-encoded when not base64; the bytes are None when the payload does not decode. None for anything else."""
    if value[:5].lower() != "data:" or "," not in value:
        return None
    head, _, payload = value[5:].partition(",")
    params = head.split(";")
    if params[-1].strip().lower() == "base64":
        return ";".join(params[:-1]) or _OCTETS, _b64(payload)
    raw = unquote_to_bytes(payload)
    return head or _OCTETS, (raw,) if len(raw) <= 2 * _HALF else (raw[:_HALF], raw[-_HALF:])


def _b64(payload: str) -> tuple[bytes, ...] | None:
    """The bytes of base64 `payload` (standard or URL-safe, padded or not): all of them, or the head and tail that
    MAX_DOCUMENT_CHARS bytes come from; None when it is not base64."""
    compact = payload.replace("\r", "").replace("\n", "").translate(_URLSAFE)  # line breaks only: text has spaces
    compact += "=" * (-len(compact) % 4)
    half = _HALF // 3 * 4
    try:
        if len(compact) <= 2 * half:
            return (base64.b64decode(compact, validate=True),)
        return base64.b64decode(compact[:half], validate=True), base64.b64decode(compact[-half:], validate=True)
    except (binascii.Error, ValueError):
        return None


def _text_of(pieces: tuple[bytes, ...], media: str | None) -> str | None:
    """The text of a document's bytes (one piece, or its head and tail) when its media type is text (or unknown and
    the bytes are text), decoded as its byte-order mark, else its charset, else UTF-8 says; None when it is not text,
    or in a charset Python does not know."""
    kind, charset = _media_type(media)
    readable = kind is not None and (kind.startswith("text/") or kind in _TEXT_MEDIA or kind.endswith(("+json", "+xml")))
    if kind is not None and not readable:
        return None
    if (codec := _codec(pieces[0], charset)) is None:
        return None
    name, bom = codec
    unit = _UNIT.get(name, 1)  # a tail piece starts on a code unit: its end is the document's
    pieces = (pieces[0][bom:], *(piece[len(piece) % unit:] for piece in pieces[1:]))
    try:  # declared text keeps a character cut at the bound, or latin-1 sent as UTF-8, as U+FFFD
        text = "\n".join(piece.decode(name, "replace" if readable else "strict") for piece in pieces)
    except (UnicodeError, LookupError):  # not text in that encoding; a codec that is no text encoding (base64)
        return None
    if "\x00" in text:  # text in an encoding it does not say (UTF-16 without a BOM or charset), never guessed
        return None
    if not readable and any(not (c.isprintable() or c.isspace()) for c in text[:4096]):
        return None  # bytes of no stated type that are not text (an image sent without its media type)
    return text


def _media_type(media: str | None) -> tuple[str | None, str | None]:
    """(type, charset) of a media type with its parameters: "text/plain; charset=utf-16" is text/plain in UTF-16."""
    if media is None:
        return None, None
    kind, *params = media.split(";")
    charsets = [v.strip().strip('"') for k, _, v in (p.partition("=") for p in params) if k.strip().lower() == "charset"]
    return kind.strip().lower() or None, charsets[0] if charsets else None


def _codec(head: bytes, charset: str | None) -> tuple[str, int] | None:
    """(codec, length of its byte-order mark) of a document starting with `head`; None for an unknown charset."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    if charset is None:
        return "utf-8", 0
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return None
    if name in ("utf-16", "utf-32"):  # no byte order marked or named: the one whose high bytes are the zeros
        unit = 2 if name == "utf-16" else 4
        return name + ("-le" if head[unit - 1::unit].count(0) >= head[::unit].count(0) else "-be"), 0
    return name, 0


def _describe(name: Any, media: str | None, ref: Any) -> str:
    """How a message names an unreadable document: its media type, else its file name's extension (never the name,
    which may itself be personal data), else how it was sent."""
    media = media or (mimetypes.guess_type(name)[0] if isinstance(name, str) else None)
    if media:
        return f"a document of type {media[:60]}"
    if isinstance(name, str) and "." in name:
        return f"a .{name.rsplit('.', 1)[1][:10]} file"
    return "a file by reference" if ref else "a document"
