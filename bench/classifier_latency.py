"""Latency of one classify() call: tokenisation + the one ONNX encoder run + domain, example, jailbreak, PII heads.

onnxruntime on 1 intra-op thread (the serving default), prompts cut to an exact content-token count.
Targets (issue 3): p50 <= 2 ms at <= 32 tokens, p50 <= 30 ms at 256 tokens. 512 tokens exercises the
head+tail long-input path (two 256-token windows in one run).

    .venv/bin/python bench/classifier_latency.py [--precision int8|fp32] [--iterations 300]
Writes bench/results/classifier_latency.json and classifier_latency.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latency_stats import summary_ms, time_calls

from router.classifier.examples import fit_example_head
from router.classifier.model import EncoderClassifier, EncoderModels

TOKENS = (16, 32, 64, 256, 512)
RESULTS = Path(__file__).resolve().parent / "results"
SOURCE_TEXT = (
    "A patient aged 54 reports chest pain radiating to the left arm after climbing stairs; the resting ECG is "
    "normal. Which investigation should come next, and how would the answer change if troponin were raised? "
    "Meanwhile our quarterly revenue grew 12% while operating costs rose 4%, so explain the effect on margin. "
    "Prove that the sum of the first n odd numbers equals n squared, then write a Python function that checks "
    "it for n up to one thousand. "
)
EXAMPLES = {
    "password_reset": ["I forgot my password", "reset my login credentials", "I am locked out of my account"],
    "billing": ["why was I charged twice", "update my credit card on file", "cancel my subscription"],
}


def prompt_of(classifier: EncoderClassifier, tokens: int) -> str:
    """SOURCE_TEXT repeated and cut at a token boundary so it has exactly `tokens` content tokens."""
    text = SOURCE_TEXT * (tokens // 40 + 2)
    cut = text[: classifier.encoder.tokenize(text).offsets[tokens - 1][1]]
    if len(classifier.encoder.tokenize(cut).ids) != tokens:
        raise RuntimeError(f"cutting at a token boundary did not give {tokens} tokens")
    return cut


def measure(classifier: EncoderClassifier, text: str, iterations: int) -> dict[str, float]:
    return {**summary_ms(time_calls(lambda: classifier.classify(text), iterations)), "iterations": iterations}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    labels = [str(row["tokens"]) for row in rows]
    axes.bar([i - 0.2 for i in range(len(rows))], [r["p50_ms"] for r in rows], 0.4, label="p50")
    axes.bar([i + 0.2 for i in range(len(rows))], [r["p99_ms"] for r in rows], 0.4, label="p99")
    axes.set_xticks(range(len(rows)), labels)
    axes.set_xlabel("prompt tokens")
    axes.set_ylabel("ms per classify() (1 thread)")
    axes.set_yscale("log")
    axes.legend()
    axes.set_title("Encoder + all heads, tokenisation included")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/minilm")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    models = EncoderModels.load(args.model_dir, threads=1, precision=args.precision)
    classifier = EncoderClassifier(models, fit_example_head(EXAMPLES, models.encoder), 0.6, pii_enabled=True)
    rows = []
    for tokens in TOKENS:
        iterations = args.iterations if tokens <= 64 else max(50, args.iterations // 3)
        row = {"tokens": tokens, **measure(classifier, prompt_of(classifier, tokens), iterations)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "what": "classify(): tokenise + 1 ONNX run + domain/example/jailbreak/PII heads",
        "precision": args.precision,
        "intra_op_threads": 1,
        "onnxruntime": onnxruntime.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.precision == "int8" else "_fp32"
    (RESULTS / f"classifier_latency{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, RESULTS / f"classifier_latency{suffix}.png")


if __name__ == "__main__":
    main()
