"""What the classifiers tell the policy about one request.

Every signal (keyword rules, the ONNX encoder heads, example utterances) produces the same
`Classification`, so the policy and the cache never care which one answered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# The categories the shipped domain head answers (router/classifier/heads/domain.npz; a unit test keeps them equal):
# a configured category is chosen by one of these names, by its own `examples`, or by a keyword rule.
DOMAIN_CATEGORIES = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health", "history", "law",
    "math", "other", "philosophy", "physics", "psychology",
)


# What the PII rule sees for a document the router cannot read (a PDF, a file by id): no pii_policy lists it, so only
# models that allow any PII receive such a request; also the x-vsr-pii-violation value of its refusal.
UNSCREENED_CONTENT = "unscreened"


@dataclass(frozen=True, slots=True)
class PIIFinding:
    """One span of personal data found in the classified text."""

    type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The result of one classification pass over the latest user turn, joined by the request path with the
    guard scores and PII of the earlier user turns and the structured PII of the rest (`with_earlier_turns`)."""

    category: str | None
    confidence: float
    jailbreak_score: float = 0.0
    pii: tuple[PIIFinding, ...] = ()
    # L2-normalised sentence embedding of the classified text; the cache reuses it as its key.
    embedding: np.ndarray | None = None
    source: str = "none"
    encoder: str = ""  # hash of the model that produced `embedding` (part of the cache scope)
    # Probability that the text is a plain request for harmful content (weapons, drugs, theft, sexual content),
    # with or without jailbreak framing; its operating point is 0.5 like the jailbreak score's.
    content_safety_score: float = 0.0
    # The text tells the model in plain words to ignore instructions or rules ("ignore all previous instructions"):
    # a jailbreak only in a request holding instructions the user did not type (injection_rules.in_request), the
    # user's own redirect in a plain chat; `jailbreak_score` does not count it.
    overrides: bool = False
    # (guard, "user turn 2" / "tool result 1" / "the assistant prefill") for each guard score that came from another
    # text than the classified turn (router/screening.py): the block message, decision reason, log line and trace
    # name it, never its text.
    earlier_turns: tuple[tuple[str, str], ...] = ()
    # PII types the conversation may hold in text no detector read: a long prompt's middle past the token head's
    # windows (names, addresses), anything past classifier.max_scan_chars (every type). The PII rule takes them as
    # found (`pii_possible`), and the cache keeps such a request out as unscreened.
    unscreened: frozenset[str] = frozenset()
    # Documents in the conversation the router cannot read (a PDF, a file by id), as router/screening.py names them:
    # unscreened content of any kind, taken by the PII rule as UNSCREENED_CONTENT (`pii_possible`), never cached.
    unreadable: tuple[str, ...] = ()
    # The encoder reads the classified text (router/classifier/reading.py): False for text mostly in scripts its English
    # vocabulary cuts into single letters or [UNK] (Arabic, Hangul, CJK, ...), whose embedding and domain scores say
    # little about what it asks: the cache serves it exact repeats only, the policy routes it to the default category.
    encoder_reads: bool = True

    @property
    def pii_types(self) -> frozenset[str]:
        return frozenset(f.type for f in self.pii)

    @property
    def pii_possible(self) -> frozenset[str]:
        """The types the PII rule must assume the conversation holds: those found, those unread text may hold, and
        UNSCREENED_CONTENT for a document no screen could read (no model lists it: only allow_by_default models take
        it)."""
        document = frozenset({UNSCREENED_CONTENT}) if self.unreadable else frozenset()
        return self.pii_types | self.unscreened | document

    @property
    def read_whole(self) -> bool:
        """No text of the conversation went unread by the PII screen (nothing `unscreened`, no `unreadable`
        document): else the cache keeps the request out as unscreened, as the PII rule assumes the worst of it."""
        return not self.unscreened and not self.unreadable

    def earlier_turn(self, guard: str) -> str | None:
        """The text `guard`'s score came from ("user turn 1", "tool result 2"), or None (the classified turn's own)."""
        return next((turn for g, turn in self.earlier_turns if g == guard), None)


def with_earlier_turns(latest: Classification, earlier: list[tuple[str, Classification]]) -> Classification:
    """`latest` (routing stays the current question's) with each guard's highest score over the other texts screened
    (earlier user turns, tool results, a prefill) when one is higher, and their PII findings (names, addresses) and
    unscreened types added: every one reaches the model alike."""
    scores = {"jailbreak": latest.jailbreak_score, "content_safety": latest.content_safety_score}
    turns: dict[str, str] = {}
    for turn, result in earlier:
        for guard, score in (("jailbreak", result.jailbreak_score), ("content_safety", result.content_safety_score)):
            if score > scores[guard]:
                scores[guard], turns[guard] = score, turn
    return dataclasses.replace(latest, jailbreak_score=scores["jailbreak"], content_safety_score=scores["content_safety"],
                               pii=latest.pii + tuple(f for _, r in earlier for f in r.pii),
                               unscreened=latest.unscreened.union(*(r.unscreened for _, r in earlier)),
                               earlier_turns=tuple(turns.items()))


# What the policy sees when no classifier ran (disabled, or it failed): keyword rules and defaults.
NO_SIGNAL = Classification(category=None, confidence=0.0, source="none")


class Classifier(Protocol):
    """Anything that turns text into a Classification; called from a worker thread."""

    def classify(self, text: str) -> Classification: ...
