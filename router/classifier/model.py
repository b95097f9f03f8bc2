"""The classifier the router serves: one encoder pass, then every head on its output.

`classify()` runs the ONNX encoder exactly once; the domain, example, jailbreak and PII heads all read that
single `EncodedText`, and its embedding goes out with the result as the semantic-cache key. The jailbreak
score is the larger of the head's and the exact injection rules' (encoded overrides, extraction requests); a plain
override ("ignore all previous instructions") is reported apart (`overrides`) and counts by the request; the
content-safety head (plain harmful requests) is a separate score. Both guard heads read heads.pooled_features
(embedding | max over token states: a decisive word such as "meth" or "system prompt" survives the max where
the mean blurs it), computed once per request; a head only as wide as the embedding reads the embedding alone.
A guard with a shipped lexical score (heads/{guard}_lexical.npz, router.classifier.lexical) adds it to the head's
logit; it reads the wordpiece ids of the same encoder run.
PII is the one exception to the single pass: in a long English text the PII token head also reads the middle between
the encoder's head and tail windows, encoded in one more run for it alone (`Encoder.read_middle`, bounded by
MIDDLE_WINDOWS); past that bound the head's types are reported as unscreened (Classification.unscreened).
Safe to call from several executor threads at once: everything it touches after construction is read-only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from router.classifier.address_shapes import address_candidates
from router.classifier.canonical import canonical
from router.classifier.encoder import EncodedText, Encoder
from router.classifier.examples import NO_EXAMPLES, ExampleHead, fit_example_head
from router.classifier.heads import HEADS_DIR, JAILBREAK, MLPHead, pooled_features
from router.classifier.injection_rules import injection_score, overrides_instructions
from router.classifier.lexical import LexicalScore
from router.classifier.pii import PERSON, default_head, detect_pii
from router.classifier.pii_language import is_english
from router.classifier.reading import reads
from router.config import ClassifierConfig, RouterConfig
from router.signals import Classification, PIIFinding


@dataclass(frozen=True)
class EncoderModels:
    """What is expensive to load (ONNX session, trained heads): shared across config reloads."""

    encoder: Encoder
    domain: MLPHead
    jailbreak: MLPHead
    content_safety: MLPHead
    # A guard's lexical score (heads/{guard}_lexical.npz) when one was shipped: it joins that head's logit.
    jailbreak_lexical: LexicalScore | None = None
    content_safety_lexical: LexicalScore | None = None

    @classmethod
    def load(cls, model_dir: str | Path, threads: int = 1, precision: str = "int8") -> EncoderModels:
        # The heads are tiny matrix-vector products: OpenBLAS's thread pool makes each one ~50x slower on a
        # busy machine (measured 8 ms vs 0.15 ms), so BLAS runs on the calling thread, process-wide.
        threadpool_limits(limits=1, user_api="blas")
        return cls(
            encoder=Encoder(model_dir, threads=threads, precision=precision),
            domain=MLPHead.load(HEADS_DIR / "domain.npz"),
            jailbreak=MLPHead.load(HEADS_DIR / "jailbreak.npz"),
            content_safety=MLPHead.load(HEADS_DIR / "content_safety.npz"),
            jailbreak_lexical=_lexical("jailbreak"),
            content_safety_lexical=_lexical("content_safety"),
        )


class EncoderClassifier:
    """Implements router.signals.Classifier on the shared MiniLM pass."""

    def __init__(
        self,
        models: EncoderModels,
        examples: ExampleHead = NO_EXAMPLES,
        example_threshold: float = 1.0,
        pii_enabled: bool = True,
    ):
        self.models = models
        self.examples = examples
        self.example_threshold = example_threshold
        self.pii_enabled = pii_enabled
        self._jailbreak_index = models.jailbreak.labels.index(JAILBREAK)

    @property
    def encoder(self) -> Encoder:
        return self.models.encoder

    def classify(self, text: str) -> Classification:
        """Every head reads `text` in its canonical form (router/classifier/canonical.py): "ｉｇｎｏｒｅ" or "Ignоrе" is "ignore"
        to the guards and "５３６" digits to the PII rules, as to the model. PII spans are offsets into that form."""
        sent, text = text, canonical(text)
        encoded = self.models.encoder.encode(text)
        embedding = encoded.embedding
        category, confidence = self.examples.predict(embedding)
        source = "examples"
        if category is None or confidence < self.example_threshold:
            probabilities = self.models.domain.probabilities(embedding)
            best = int(probabilities.argmax())
            category, confidence, source = (
                self.models.domain.labels[best],
                float(probabilities[best]),
                "domain",
            )
        pooled = pooled_features(encoded)
        models = self.models
        head_score = guard_score(models.jailbreak, models.jailbreak_lexical, pooled, encoded.ids, self._jailbreak_index)
        jailbreak = max(head_score, injection_score(text, sent))
        harmful = guard_score(models.content_safety, models.content_safety_lexical, pooled, encoded.ids, 1)
        pii, unscreened = self._pii(text, encoded) if self.pii_enabled else ((), frozenset[str]())
        return Classification(category, confidence, jailbreak, pii, embedding, source=f"encoder:{source}",
                              encoder=self.models.encoder.model_hash, content_safety_score=harmful,
                              unscreened=unscreened, overrides=overrides_instructions(text),
                              encoder_reads=reads(text, encoded.ids, encoded.offsets))

    def _pii(self, text: str, encoded: EncodedText) -> tuple[tuple[PIIFinding, ...], frozenset[str]]:
        """The PII in all of `text`, and the types it may hold unread. The token head reads only English text
        (pii.detect_pii); in a long one it reads the middle too (a name mid-prompt reached a model whose pii_policy
        refuses it). Past the encoder's bound it reads the middle around each place an address may stand
        (address_shapes.address_candidates: the shapes of 0.99 of the addresses it finds), so that middle holds no
        address unread, but it may hold names (no shape tells a name from any capitalised words): PERSON is
        unscreened. Too many such places for the bound: both are."""
        if encoded.windows == 1 or not is_english(text):
            return detect_pii(text, encoded), frozenset()
        encoder = self.models.encoder
        read = encoder.read_middle(text, encoded)
        if read is not None:
            return detect_pii(text, read), frozenset()
        around = encoder.read_around(text, encoded, address_candidates(text, *encoder.middle(encoded)))
        if around is None:
            return detect_pii(text, encoded), default_head().emit
        return detect_pii(text, around), frozenset({PERSON})


def guard_score(
    head: MLPHead, lexical: LexicalScore | None, pooled: np.ndarray, ids: np.ndarray, positive: int
) -> float:
    """A binary guard head's probability of label `positive`, joined with its lexical score when it has one."""
    if lexical is None:
        return float(head.probabilities(_input(head, pooled))[positive])
    logits = head.logits(_input(head, pooled))
    return lexical.probability(float(logits[positive] - logits[1 - positive]), ids)


def _lexical(guard: str) -> LexicalScore | None:
    path = HEADS_DIR / f"{guard}_lexical.npz"
    return LexicalScore.load(path) if path.is_file() else None


def _input(head: MLPHead, pooled: np.ndarray) -> np.ndarray:
    """What the head was trained on: pooled features, or (a head as wide as the embedding) the embedding alone."""
    return pooled if head.mean.shape[-1] == pooled.shape[-1] else pooled[: head.mean.shape[-1]]


_LOADED: dict[tuple[str, int, str], EncoderModels] = {}
_LOAD_LOCK = threading.Lock()


def shared_models(cfg: ClassifierConfig) -> EncoderModels:
    """Load the encoder and heads once per (model dir, threads, precision); reloads reuse them."""
    key = (str(Path(cfg.model_dir).resolve()), cfg.threads, cfg.precision)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = EncoderModels.load(cfg.model_dir, cfg.threads, cfg.precision)
        return _LOADED[key]


def load_classifier(cfg: RouterConfig) -> EncoderClassifier:
    """The runtime's classifier for `cfg`; the example head is refitted from the YAML on every call."""
    categories = {category.name: list(category.examples) for category in cfg.categories}
    models = shared_models(cfg.classifier)
    head = fit_example_head(categories, models.encoder)
    return EncoderClassifier(models, head, cfg.classifier.example_threshold, cfg.classifier.pii_enabled)
