"""What the guards and the PII screen read of a request: every text a user or a tool puts in front of the model.

A message's content is read part by part: text parts, the text of documents and files whose media type is text
(decoded from base64 or a data URL), tool results apart (a tool's output is attacker-influenced: indirect prompt
injection). What the router cannot read (a PDF, an image file, a file id or URL it never sees) is named in
`Reading.unreadable`: the request is then unscreened content (router/extproc/session.py). Every text is read in its
canonical form (`canonical`): what the model reads as "ignore" is screened as "ignore" however it is spelt.

Pure code, no I/O; what is forwarded upstream is never changed here.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from router.openai_wire import ChatRequest

# Zero-width and bidirectional format characters: invisible to a reader, they split a word the guards would know
# ("ig\u200bnore"). The tag characters (U+E0000 block) are kept: the injection rules decode text smuggled in them.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
# Media types whose bytes are text the model reads as such, beside text/*.
_TEXT_MEDIA = frozenset({"application/json", "application/xml", "application/yaml", "application/x-yaml",
                         "application/x-ndjson", "application/csv", "application/javascript", "application/sql"})
# Decoded characters kept of one document: its head and tail, as the classifier reads a long prompt
# (classifier.max_scan_chars' default), so a document costs bounded work whatever its size.
MAX_DOCUMENT_CHARS = 131_072
_TEXT_PARTS = ("text", "input_text", "output_text", "refusal")
_URLSAFE = str.maketrans("-_", "+/")  # the URL-safe alphabet decodes to the same bytes


def canonical(text: str) -> str:
    """`text` as the guards and the PII rules read it: invisible format characters removed, then NFKC (fullwidth and
    compatibility forms folded: "ｉｇｎｏｒｅ" is "ignore", "１２３" is "123")."""
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))


@dataclass(frozen=True, slots=True)
class Reading:
    """What the router can read of one message's content, in order."""

    texts: tuple[str, ...] = ()  # its text parts and the text of its documents
    tool_results: tuple[str, ...] = ()  # the text of each tool result block it holds (Anthropic tool_result)
    unreadable: tuple[str, ...] = ()  # each document it holds that the router cannot read, as the client named it
    decoded: bool = False  # a document was decoded: its text is in no string of the body
    parts: tuple[str, ...] = ()  # every text read, tool results' own parts included, in order

    @property
    def text(self) -> str:
        """The parts as the encoder reads them: apart, as a model server's chat template shows them."""
        return "\n".join(self.texts)

    @property
    def joined(self) -> str:
        """The parts run together, for the exact PII validators: "123-45-" + "6789" is one SSN to the model."""
        return "".join(self.parts)


@dataclass
class _Reader:
    texts: list[str] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    decoded: bool = False
    parts: list[str] = field(default_factory=list)

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
        kind = part.get("type")
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
            inner = read(part.get("content"))
            self.tool_results.append("\n".join((*inner.texts, *inner.tool_results)))
            self.unreadable += inner.unreadable
            self.decoded |= inner.decoded
            self.parts += inner.parts
        elif isinstance(kind, str) and kind.endswith("_output"):  # Responses function_call_output and the like
            self.content(part.get("output"))

    def strings(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and value:
                self.add(value)

    def file(self, file: dict[str, Any], data: Any) -> None:
        """A chat `file` part or a Responses `input_file`: inline data (a data URL or bare base64) is read when it is
        text; a file id or URL names a file the router never sees."""
        name = file.get("filename")
        if not isinstance(data, str) or not data:
            self.unreadable.append(_describe(name, None, file.get("file_id") or file.get("file_url")))
            return
        media, payload = _data_url(data)
        if media is None:
            media = mimetypes.guess_type(name)[0] if isinstance(name, str) else None
            if (raw := _b64(payload)) is None:  # neither a data URL nor base64: plain text the model reads
                self.add(payload)
                return
        else:
            raw = _b64(payload)
        self.bytes(raw, media, name)

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

    def bytes(self, raw: bytes | None, media: str | None, name: Any) -> None:
        text = _text_of(raw, media) if raw is not None else None
        if text is None:
            self.unreadable.append(_describe(name, media, None))
        else:
            self.add(text)
            self.decoded = True


def read(content: Any) -> Reading:
    """What the router can read of a message's content (a string, a list of parts or blocks, or anything else)."""
    reader = _Reader()
    reader.content(content)
    return Reading(tuple(reader.texts), tuple(reader.tool_results), tuple(reader.unreadable), reader.decoded,
                   tuple(reader.parts))


class Other(NamedTuple):
    """A text the guards read besides the classified turn."""

    label: str  # how a block names it: "user turn 2", "tool result 1", "the assistant prefill"
    text: str
    # A request the content-safety guard judges (a user turn, a prefill), not a tool's output: a page about a harmful
    # topic that a tool fetched is not the user asking for it. The jailbreak guard reads every one.
    asks: bool


@dataclass(frozen=True, slots=True)
class Screen:
    """What one chat request puts in front of the model, as the session screens it. The texts are as sent: the session
    bounds them, then takes their `canonical` form (bounded work for a huge prompt)."""

    latest: str  # the classified turn (the latest user turn, else the last message): category and guards
    # what the guards and the name/address detection read besides, in order: every earlier user turn, every
    # tool result (role tool, function_call_output, tool_result blocks) and an assistant prefill (a last assistant
    # message, which the model continues as its own words)
    earlier: tuple[Other, ...]
    structured: str  # for the exact PII validators: every string of the other messages, and the parts run together
    unreadable: tuple[str, ...]  # documents anywhere in the conversation the router cannot read

    def user_turns(self) -> list[str]:
        """The earlier user turns' texts, in order, as the guards read them (affinity's first decisive turn is
        looked up in the memo by this text)."""
        return [other.text for other in self.earlier if other.label.startswith(_USER_TURN)]


_USER_TURN = "user turn "


def screen(chat: ChatRequest) -> Screen:
    """Every text of `chat` a guard or the PII screen must read, and what it cannot read."""
    classified, last = chat.classified_index(), len(chat.messages) - 1
    readings = [read(m.get("content")) for m in chat.messages]
    earlier: list[Other] = []
    users = tools = 0
    for i, (message, reading) in enumerate(zip(chat.messages, readings, strict=True)):
        role = message["role"]
        users += role == "user"
        if role == "user" and i != classified and reading.texts:
            earlier.append(Other(f"{_USER_TURN}{users}", reading.text, asks=True))
        elif role in ("tool", "function") and reading.texts:
            tools += 1
            earlier.append(Other(f"tool result {tools}", reading.text, asks=False))
        elif role == "assistant" and i == last != classified and reading.texts:
            earlier.append(Other("the assistant prefill", reading.text, asks=True))
        for result in filter(None, reading.tool_results):
            tools += 1
            earlier.append(Other(f"tool result {tools}", result, asks=False))
    joined = [r.joined for r in readings if len(r.parts) > 1 or r.decoded]
    return Screen(readings[classified].text, tuple(earlier), "\n".join(filter(None, [chat.other_text(), *joined])),
                  tuple(u for r in readings for u in r.unreadable))


def _data_url(value: str) -> tuple[str | None, str]:
    """(media type, payload) of a base64 data URL; (None, value) for anything else."""
    head, sep, payload = value.partition(",")
    if value.startswith("data:") and sep and head.endswith(";base64"):
        media = head[5:].split(";", 1)[0].strip().lower()
        return media or "application/octet-stream", payload
    return None, value


def _b64(payload: str) -> bytes | None:
    """The bytes of base64 `payload` (standard or URL-safe, padded or not), at most the head and tail that
    MAX_DOCUMENT_CHARS bytes come from; None when it is not base64."""
    compact = payload.replace("\r", "").replace("\n", "").translate(_URLSAFE)  # line breaks only: text has spaces
    compact += "=" * (-len(compact) % 4)
    half = MAX_DOCUMENT_CHARS // 2 // 3 * 4  # whole base64 quanta on each side
    try:
        if len(compact) <= 2 * half:
            return base64.b64decode(compact, validate=True)
        head, tail = compact[:half], compact[-half:]
        return base64.b64decode(head, validate=True) + b"\n" + base64.b64decode(tail, validate=True)
    except (binascii.Error, ValueError):
        return None


def _text_of(raw: bytes, media: str | None) -> str | None:
    """The text of a document's bytes when its media type is text (or unknown and the bytes are UTF-8 text)."""
    readable = media is not None and (media.startswith("text/") or media in _TEXT_MEDIA
                                      or media.endswith(("+json", "+xml")))
    if media is not None and not readable:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if not readable:
            return None
        text = raw.decode("utf-8", errors="replace")  # a cut multibyte character at the bound, or latin-1 text
    if not readable and any(not (c.isprintable() or c.isspace()) for c in text[:4096]):
        return None  # bytes of no stated type that are not text (an image sent without its media type)
    return text


def _describe(name: Any, media: str | None, ref: Any) -> str:
    """How a message names an unreadable document: its media type, else its file name's extension (never the name,
    which may itself be personal data), else how it was sent."""
    media = media or (mimetypes.guess_type(name)[0] if isinstance(name, str) else None)
    if media:
        return f"a document of type {media[:60]}"
    if isinstance(name, str) and "." in name:
        return f"a .{name.rsplit('.', 1)[1][:10]} file"
    return "a file by reference" if ref else "a document"
