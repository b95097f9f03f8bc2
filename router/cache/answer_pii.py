"""The answer's PII screen: a stored answer is replayed to the tenant's other callers, so one in which the exact
validators find personal data (pii_rules.find_structured: an SSN, a card, an IBAN, an e-mail, a phone number, an IP
address, a date of birth, an ID a cue word names) is not stored.

The request's PII screen keeps prompts holding PII out of the cache; a model answering from retrieved documents,
tools or what it memorised can still say some. Only the validators run here, no encoder pass: a name or a street
address in an answer is not caught. Cost per 4 KB answer (best of 3, a shared 2-core machine at load ~3, 2026-12-02):
0.04 ms for prose without a digit, '@' or ':', 0.9 ms for prose full of numbers, 2.2 ms for code; so SemanticCache
runs them in a thread of its own, never on the event loop: `store` there took 57 us per 4 KB answer, 45 us before.
"""

from __future__ import annotations

from typing import Any

from router import openai_wire as wire
from router.classifier.canonical import canonical
from router.classifier.pii_rules import find_structured

_NOT_TEXT = frozenset({"role", "type", "id"})  # the message's own fields, never the model's words


def replayed_text(completion: dict[str, Any]) -> str:
    """Every string of the answer's messages a replay returns: content, reasoning, refusal, tool-call and
    function-call arguments."""
    messages = [c.get("message") for c in completion.get("choices") or [] if isinstance(c, dict)]
    return "\n".join(wire.strings(messages, _NOT_TEXT))


def pii_types(completion: dict[str, Any]) -> set[str]:
    """The PII types the validators find in what a replay of `completion` would say, read as the request's screen
    reads a prompt (canonical: NFKC folds a full-width "ｚｈａｎｇ＠ｑｑ．ｃｏｍ" to the e-mail it is)."""
    return {f.type for f in find_structured(canonical(replayed_text(completion)))}
