"""`python -m offline build | eval`: export the encoder, score the heads on held-out data.

Training the heads needs torch and runs in the build venv: `.venv-build/bin/python -m offline.train`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.config import ClassifierConfig, load_config
from router.policy import Policy


def _build(args: argparse.Namespace) -> int:
    from offline.build import BuildError, build, build_pair

    try:
        build(args.out, args.source, fp32=args.fp32, force=args.force)
        build_pair(args.out.parent / "cache-pair", force=args.force)
    except BuildError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from offline.evaluate import run_eval
    from router.classifier.model import shared_models

    cfg = load_config(args.config) if Path(args.config).is_file() else None
    settings = cfg.classifier if cfg is not None else ClassifierConfig()
    report = run_eval(
        shared_models(settings), settings.jailbreak_threshold, args.out, with_pii=not args.no_pii,
        policy=Policy(cfg) if cfg is not None else None,
    )
    for line in summary_lines(report):
        print(line)
    print(f"wrote {args.out / 'classifier_eval.json'} and PNGs in {args.out}")
    return 0


def _routed(result: dict) -> str:
    return f", routed by the config's policy {result['routed_accuracy']}" if "routed_accuracy" in result else ""


def summary_lines(report: dict) -> list[str]:
    """Every figure issue 10's "Done when" asks for, one line each."""
    domain, jailbreak = report["domain"]["question_only"], report["jailbreak"]["test"]
    guards = report["guards_real_chat"]
    blocks = guards["false_blocks"]
    lines = [
        (
            f"domain (MMLU held-out, question only): accuracy {domain['accuracy']} macro-F1 {domain['macro_f1']}"
            f"{_routed(domain)}"
        ),
        *(
            f"domain ({name}, {chat['set'].split(': ')[0]}, n={chat['n']}): accuracy {chat['accuracy']} "
            f"macro-F1 {chat['macro_f1']}{_routed(chat)}"
            for name, chat in report["domain"].items() if name.startswith("chat")
        ),
        f"jailbreak (test sources, MMLU/contradish benign): recall {jailbreak['recall']} FPR {jailbreak['fpr']}",
        (
            f"false blocks, jailbreak or content safety: real chat {blocks['real_chat']:.2%} of "
            f"{blocks['real_chat_n']}, support/how-to {blocks['support']:.2%} of {blocks['support_n']}, "
            f"risky-sounding written asks {blocks['edgy']:.2%} of {blocks['edgy_n']}"
        ),
    ]
    for guard in ("jailbreak", "content_safety"):
        result = guards[guard]
        lines.append(
            f"{guard}: held-out recall {result['recall']} of {result['positives']} "
            f"(by source {result['recall_by_source']})"
            + (
                f"; written harmful asks (edgy) {result['edgy_harmful_recall']} of {result['edgy_harmful_n']}"
                if "edgy_harmful_recall" in result
                else ""
            )
        )
    if "pii_chat" in report:
        chat, head = report["pii_chat"], report["pii"]
        lines += [
            (
                f"PII false alarms: hand-read chat {chat['negative_read']['false_alarm_rate']:.2%} of "
                f"{chat['negative_read']['n']}, rule-selected chat {chat['negative_rule']['false_alarm_rate']:.2%} "
                f"of {chat['negative_rule']['n']}, public figures "
                f"{chat['negative_public_figures']['false_alarm_rate']:.0%} of {chat['negative_public_figures']['n']}"
            ),
            (
                f"PII recall: chat names {chat['chitchat_names']['recall']:.3f}, held-out templates PERSON "
                f"{head['head']['PERSON']['recall']:.3f} STREET_ADDRESS {head['head']['STREET_ADDRESS']['recall']:.3f}"
            ),
            "PII structured recall: " + ", ".join(f"{t} {v['recall']:.3f}" for t, v in head["structured"].items()),
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "build", help="export all-MiniLM-L6-v2 to ONNX (int8), or install a trained one, and install the cache's pair "
                      "model (offline/trained/cache-pair) beside it, unless the manifests match"
    )
    p.add_argument("--out", type=Path, default=Path(ClassifierConfig().model_dir))
    p.add_argument(
        "--source",
        default="package",
        help="package | package:SPEC | dir:PATH | hub:ID | trained (offline/trained/minilm-chat, copied) | trained:PATH",
    )
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

