"""What the classifiers tell the policy about one request.

Every signal (keyword rules, the ONNX encoder heads, example utterances) produces the same
`Classification`, so the policy and the cache never care which one answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class PIIFinding:
    """One span of personal data found in the classified text."""

    type: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The result of one classification pass over the latest user turn."""

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

    @property
    def pii_types(self) -> frozenset[str]:
        return frozenset(f.type for f in self.pii)


# What the policy sees when no classifier ran (disabled, or it failed): keyword rules and defaults.
NO_SIGNAL = Classification(category=None, confidence=0.0, source="none")


class Classifier(Protocol):
    """Anything that turns text into a Classification; called from a worker thread."""

    def classify(self, text: str) -> Classification: ...
