"""Subcommands `classify`, `models build` and `eval`, registered into `semantic-router` by router/cli.py."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from router.config import ClassifierConfig, ConfigError, RouterConfig, load_config

DEFAULT_CONFIG = "config/config.yaml"
RESULTS_DIR = Path("bench/results")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classify", help="classify text with the ONNX encoder heads; one JSON line each"
    )
    p.add_argument("text", nargs="?", help="the text to classify")
    p.add_argument("--jsonl", type=Path, help='file with one {"text": ...} per line (- for stdin)')
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help="router config (categories with examples, thresholds)"
    )
    p.set_defaults(func=_classify)

    models = subparsers.add_parser("models", help="build the ONNX encoder").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    p = models.add_parser("build", help="export all-MiniLM-L6-v2 to ONNX (int8) unless the manifest matches")
    p.add_argument("--out", type=Path, default=Path(ClassifierConfig().model_dir))
    p.add_argument("--source", default="package", help="package | package:SPEC | dir:PATH | hub:ID")
    p.add_argument("--fp32", action="store_true", help="also keep model_fp32.onnx")
    p.add_argument("--force", action="store_true", help="rebuild even when the manifest matches")
    p.set_defaults(func=_models_build)

    p = subparsers.add_parser(
        "eval", help="held-out accuracy/F1, jailbreak recall/FPR, PII per type -> JSON + PNG"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-pii", action="store_true", help="skip the PII part")
    p.set_defaults(func=_eval)


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
    for text in _texts(args):
        result = classifier.classify(text)
        row = {
            "category": result.category,
            "confidence": round(result.confidence, 4),
            "jailbreak": result.jailbreak_score >= settings.jailbreak_threshold,
            "jailbreak_score": round(result.jailbreak_score, 4),
            "pii": sorted(result.pii_types),
            "source": result.source,
        }
        print(json.dumps(row), flush=True)
    return 0


def _models_build(args: argparse.Namespace) -> int:
    from router.classifier.build import BuildError, build

    try:
        build(args.out, args.source, fp32=args.fp32, force=args.force)
    except BuildError as exc:
        print(f"models build: {exc}", file=sys.stderr)
        return 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from router.classifier.evaluate import run_eval
    from router.classifier.model import shared_models

    cfg = _config(args.config)
    settings = cfg.classifier if cfg is not None else ClassifierConfig()
    report = run_eval(
        shared_models(settings), settings.jailbreak_threshold, args.out, with_pii=not args.no_pii
    )
    domain, jailbreak = report["domain"]["question_only"], report["jailbreak"]["test"]
    print(f"domain (held-out, question only): accuracy {domain['accuracy']} macro-F1 {domain['macro_f1']}")
    print(
        f"jailbreak (test sources): recall {jailbreak['recall']} FPR {jailbreak['fpr']} precision {jailbreak['precision']}"
    )
    print(f"wrote {args.out / 'classifier_eval.json'} and {args.out / 'domain_confusion.png'}")
    return 0
