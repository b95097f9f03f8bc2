"""Classification on one shared MiniLM encoder pass: domain, jailbreak, PII and operator example heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.classifier.model import EncoderClassifier
    from router.config import RouterConfig


def load_classifier(cfg: RouterConfig) -> EncoderClassifier:
    """Imported lazily so the build and training tools (other venvs) can use this package without onnx/PII deps."""
    from router.classifier.model import load_classifier as load

    return load(cfg)
