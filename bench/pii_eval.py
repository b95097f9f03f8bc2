"""PII accuracy on held-out synthetic data and real chat, and the PII part's latency: bench/results/pii_eval.json.

    python bench/pii_eval.py [--model-dir models/minilm] [--per-template 20] [--repeats 300]

Accuracy: offline.pii_eval (templates, splits described there) and offline.pii_chat (real-chat test sets:
false alarms on PII-free prompts, public figures, chitchat names); the PII-only path of `python -m offline eval`.
System prompts: offline.pii_system's options on its DEV set (names and addresses in system prompts, which the router
does not read with the head: classifier README, "System prompts"); its test set is kept for the option that passes.
Latency: detect_pii only (validators +
token head on an already computed EncodedText), 1 thread, at ~16/64/256 tokens; the encoder pass is
timed beside it for scale. Needs Faker (train extra) and the exported encoder.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency_stats import summary_ms, time_calls

from offline.pii_chat import evaluate_chat
from offline.pii_eval import evaluate_encoder
from offline.pii_system import option_table
from router.classifier.encoder import Encoder
from router.classifier.pii import default_head, detect_pii
from router.classifier.pii_rules import find_structured

PROMPT = (
    "Hi, I'm Margaret Thompson. Please send the new card to 742 Evergreen Terrace, Springfield, and call me "
    "at (415) 682-2671 if there is a problem; my old card 4111 1111 1111 1111 was stolen in Lisbon. "
)


def _text_with_tokens(encoder: Encoder, tokens: int) -> str:
    words = (PROMPT * 20).split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # longest word prefix with at most `tokens` content tokens
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if encoder.count_tokens(" ".join(words[:mid])) <= tokens else (lo, mid - 1)
    return " ".join(words[:lo])


def latency(encoder: Encoder, repeats: int) -> dict[str, dict[str, object]]:
    head = default_head()
    out: dict[str, dict[str, object]] = {}
    for tokens in (16, 64, 256):
        text = _text_with_tokens(encoder, tokens)
        encoded = encoder.encode(text)
        out[str(tokens)] = {
            "tokens": len(encoded.offsets),
            "detect_pii": summary_ms(time_calls(partial(detect_pii, text, encoded, head), repeats)),
            "validators_only": summary_ms(time_calls(partial(find_structured, text), repeats)),
            "token_head_only": summary_ms(time_calls(partial(head.spans, text, encoded), repeats)),
            "encoder_for_scale": summary_ms(time_calls(partial(encoder.encode, text), repeats)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "minilm")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "pii")
    parser.add_argument("--per-template", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pii_eval.json")
    args = parser.parse_args()
    encoder = Encoder(args.model_dir, threads=1)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": 1},
        "accuracy": evaluate_encoder(encoder, args.cache_dir, args.per_template),
        "chat": evaluate_chat(lambda text: detect_pii(text, encoder.encode(text))),
        "system_dev": option_table(encoder, "dev"),
        "latency": latency(encoder, args.repeats),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    acc = result["accuracy"]
    for group in ("head", "structured"):
        for kind, m in acc[group].items():  # type: ignore[index]
            print(f"{kind:15s} P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.3f} n={m['support']}")
    print("benign flag rate:", acc["benign_flag_rate"])  # type: ignore[index]
    for name, row in result["chat"].items():  # type: ignore[union-attr]
        print(name, {k: v for k, v in row.items() if k != "examples"})
    for option, row in result["system_dev"].items():  # type: ignore[union-attr]
        print("system dev", option, {k: v for k, v in row.items() if k != "alarms"})
    for tokens, row in result["latency"].items():
        print(tokens, {k: v for k, v in row.items() if k != "tokens"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
