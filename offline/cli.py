"""`python -m offline build | eval`: export the encoder, score the heads on held-out data.

Training the heads needs torch and runs in the build venv: `.venv-build/bin/python -m offline.train`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.config import ClassifierConfig, load_config


def _build(args: argparse.Namespace) -> int:
    from offline.build import BuildError, build

    try:
        build(args.out, args.source, fp32=args.fp32, force=args.force)
    except BuildError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from offline.evaluate import run_eval
    from router.classifier.model import shared_models

    settings = load_config(args.config).classifier if Path(args.config).is_file() else ClassifierConfig()
    report = run_eval(
        shared_models(settings), settings.jailbreak_threshold, args.out, with_pii=not args.no_pii
    )
    domain, jailbreak = report["domain"]["question_only"], report["jailbreak"]["test"]
    print(f"domain (held-out, question only): accuracy {domain['accuracy']} macro-F1 {domain['macro_f1']}")
    print(
        f"jailbreak (test sources): recall {jailbreak['recall']} FPR {jailbreak['fpr']} "
        f"precision {jailbreak['precision']}"
    )
    print(f"wrote {args.out / 'classifier_eval.json'} and {args.out / 'domain_confusion.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("build", help="export all-MiniLM-L6-v2 to ONNX (int8) unless the manifest matches")
    p.add_argument("--out", type=Path, default=Path(ClassifierConfig().model_dir))
    p.add_argument("--source", default="package", help="package | package:SPEC | dir:PATH | hub:ID")
    p.add_argument("--fp32", action="store_true", help="also keep model_fp32.onnx")
    p.add_argument("--force", action="store_true", help="rebuild even when the manifest matches")
    p.set_defaults(func=_build)
    p = sub.add_parser("eval", help="held-out accuracy/F1, jailbreak recall/FPR, PII per type -> JSON + PNG")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--no-pii", action="store_true", help="skip the PII part")
    p.set_defaults(func=_eval)
    args = parser.parse_args(argv)
    return int(args.func(args))

