"""Subcommand `classify`, registered into `semantic-router` by router/cli.py (build and eval: `python -m offline`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from router.config import DEFAULT_CONFIG, ClassifierConfig, ConfigError, RouterConfig, load_config
from router.policy import Policy, confident_category

NO_CONFIG_DEFAULT: str = RouterConfig.model_fields["default_category"].default


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "classify", help="classify text as the router would (category after keyword rules and the confidence "
                         "threshold, beside the head's top_category); one JSON line each"
    )
    p.add_argument("text", nargs="?", help="the text to classify")
    p.add_argument("--jsonl", type=Path, help='file with one {"text": ...} per line (- for stdin)')
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"router config (categories with examples, thresholds; default: {DEFAULT_CONFIG})")
    p.set_defaults(func=_classify)


def _config(path: str) -> RouterConfig | None:
    """The router config when the file exists; the classifier defaults otherwise."""
    return load_config(path) if Path(path).is_file() else None


def _texts(args: argparse.Namespace) -> Iterator[str]:
    if args.jsonl is None:
        if args.text is None:
            raise SystemExit("classify: give TEXT or --jsonl FILE")
        yield args.text
        return
    handle = sys.stdin if str(args.jsonl) == "-" else args.jsonl.open(encoding="utf-8")
    with handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield str(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError):
                    raise SystemExit(
                        f'{args.jsonl}:{number}: expected a JSON object with a "text" field'
                    ) from None


def _classify(args: argparse.Namespace) -> int:
    from router.classifier.encoder import ModelMissingError
    from router.classifier.model import EncoderClassifier, load_classifier, shared_models

    try:
        cfg = _config(args.config)
        if cfg is not None:
            classifier, settings = load_classifier(cfg), cfg.classifier
        else:
            settings = ClassifierConfig()
            classifier = EncoderClassifier(shared_models(settings))
    except (ConfigError, ModelMissingError) as exc:
        print(exc, file=sys.stderr)
        return 1
    policy = Policy(cfg) if cfg is not None else None
    for text in _texts(args):
        result = classifier.classify(text)
        if policy is not None:
            category, confidence = policy.category_for(text, result)
        else:  # no config: every head category counts, the schema's threshold and default category apply
            confident = confident_category(result, settings.confidence_threshold, lambda _: True)
            category = (confident if result.encoder_reads else None) or NO_CONFIG_DEFAULT
            confidence = result.confidence
        row = {
            "category": category,  # what the router routes on: keyword rules, then the head above the threshold
            "confidence": round(confidence, 4),
            "top_category": result.category,
            "top_confidence": round(result.confidence, 4),
            "jailbreak": result.jailbreak_score >= settings.jailbreak_threshold,
            "jailbreak_score": round(result.jailbreak_score, 4),  # as a plain chat's user turn
            # "ignore all previous instructions" in plain words: a jailbreak in a request with a system prompt,
            # tool result or document (router/classifier/injection_rules.py)
            "overrides": result.overrides,
            "content_flagged": result.content_safety_score >= settings.content_safety_threshold,
            "content_safety_score": round(result.content_safety_score, 4),
            "pii": sorted(result.pii_types),
            "pii_unscreened": sorted(result.unscreened),  # types text too long for the PII screen may hold
            "encoder_reads": result.encoder_reads,  # False: the default category, exact cache hits only (reading.py)
            "source": result.source,
        }
        if isinstance(classifier, EncoderClassifier) and len(classifier.examples.owners) and result.embedding is not None:
            # What `example_threshold` is compared with, whichever head won: an operator tuning it had only the
            # outcome to go by (trial 13: 0 of 6 contract questions reached their example category, and no tool said
            # how near they came).
            nearest, similarity = classifier.examples.predict(result.embedding)
            row |= {"nearest_example_category": nearest, "example_similarity": round(similarity, 4)}
        print(json.dumps(row), flush=True)
    return 0
