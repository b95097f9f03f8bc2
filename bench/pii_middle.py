"""What reading a long prompt's middle for the PII head costs: `classify()` with and without it, alternated.

    PYTHONPATH=. .venv/bin/python bench/pii_middle.py [--repeats 15]

The same classifier with `pii_enabled` off is the head-and-tail pass alone (the cost before the middle was read);
with it on, the middle windows run too. One thread, as the router runs the encoder. Prints ms per extra window
(one ONNX run of 1 to MIDDLE_WINDOWS windows of 256 tokens) and the p50 of both variants at 4k-16k characters;
past the bound the middle is not read (unscreened), which costs nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from router.classifier.encoder import CLS_ID, MIDDLE_WINDOWS, SEP_ID, WINDOW_TOKENS
from router.classifier.model import EncoderClassifier, EncoderModels

REPORT = ("The quarterly report covers revenue, churn and hiring across the three regions, and the board asked for a "
          "clearer breakdown of costs by team before the next planning cycle begins. ")


def ms(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    models = EncoderModels.load("models/minilm")
    session = models.encoder._session  # the bare run, without tokenising
    rng = np.random.default_rng(0)
    for n in (1, 4, MIDDLE_WINDOWS):
        ids = rng.integers(2000, 20000, size=(n, WINDOW_TOKENS + 2))
        ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
        session.run(None, {"input_ids": ids})
        p50 = statistics.median(ms(session.run, None, {"input_ids": ids}) for _ in range(args.repeats))
        print(f"one run of {n:2d} windows: {p50:6.1f} ms, {p50 / n:4.1f} ms per window")
    read, unread = EncoderClassifier(models), EncoderClassifier(models, pii_enabled=False)
    for chars in (4_000, 8_000, 12_000, 16_000):
        text = (REPORT * (chars // len(REPORT) + 1))[:chars]
        tokens = len(models.encoder.tokenize(text).ids)
        pairs = [(ms(unread.classify, text), ms(read.classify, text)) for _ in range(args.repeats)]  # alternated
        before, after = (statistics.median(x) for x in zip(*pairs, strict=True))
        middle = -(-max(tokens - 2 * WINDOW_TOKENS, 0) // WINDOW_TOKENS)
        said = "unscreened" if read.classify(text).unscreened else f"{middle} middle windows"
        print(f"{chars:6d} chars, {tokens} tokens, {said}: classify p50 {before:6.1f} -> {after:6.1f} ms "
              f"(+{after - before:.1f})")


if __name__ == "__main__":
    main()
