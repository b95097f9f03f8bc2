"""What reading a long prompt's middle for the PII head costs: `classify()` with and without it, alternated.

    PYTHONPATH=. .venv/bin/python bench/pii_middle.py [--repeats 15] [--prefilter]

The same classifier with `pii_enabled` off is the head-and-tail pass alone (the cost before the middle was read);
with it on, the middle windows run too. One thread, as the router runs the encoder. Prints ms per extra window
(one ONNX run of 1 to MIDDLE_WINDOWS windows of 256 tokens) and the p50 of both variants at 4k-40k characters;
past the bound the middle is read around the places an address may stand (address_shapes.address_candidates), at most
MIDDLE_WINDOWS windows of them, else not at all (unscreened).

--prefilter: how many of the address spans the head finds `address_candidates` sees (within 40 characters) on
bench/pii_eval's template sentences (all templates, its structured-eval seed) and offline/data/pii_chat_dev.jsonl
(dev only: the test sets never chose it), all spans and those on a gold address; and, over realistic long tool outputs
(every 40th .py file over 12 kB of the installed packages and the first 40 METADATA files, each cut at 60 kB, as an
agent reads them), how many are unscreened for STREET_ADDRESS without and with it, and what `classify` costs them.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from router.classifier.address_shapes import address_candidates
from router.classifier.encoder import CLS_ID, MIDDLE_WINDOWS, SEP_ID, WINDOW_TOKENS
from router.classifier.model import EncoderClassifier, EncoderModels
from router.classifier.pii import STREET_ADDRESS, detect_pii

NEAR = 40  # characters between a candidate and the span it stands for

REPORT = ("The quarterly report covers revenue, churn and hiring across the three regions, and the board asked for a "
          "clearer breakdown of costs by team before the next planning cycle begins. ")


def ms(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--prefilter", action="store_true")
    args = parser.parse_args()
    models = EncoderModels.load("models/minilm")
    if args.prefilter:
        prefilter(models)
        return
    session = models.encoder._session  # the bare run, without tokenising
    rng = np.random.default_rng(0)
    for n in (1, 4, MIDDLE_WINDOWS):
        ids = rng.integers(2000, 20000, size=(n, WINDOW_TOKENS + 2))
        ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
        session.run(None, {"input_ids": ids})
        p50 = statistics.median(ms(session.run, None, {"input_ids": ids}) for _ in range(args.repeats))
        print(f"one run of {n:2d} windows: {p50:6.1f} ms, {p50 / n:4.1f} ms per window")
    read, unread = EncoderClassifier(models), EncoderClassifier(models, pii_enabled=False)
    for chars in (4_000, 8_000, 12_000, 16_000, 40_000):
        text = (REPORT * (chars // len(REPORT) + 1))[:chars]
        tokens = len(models.encoder.tokenize(text).ids)
        pairs = [(ms(unread.classify, text), ms(read.classify, text)) for _ in range(args.repeats)]  # alternated
        before, after = (statistics.median(x) for x in zip(*pairs, strict=True))
        middle = -(-max(tokens - 2 * WINDOW_TOKENS, 0) // WINDOW_TOKENS)
        unscreened = read.classify(text).unscreened
        said = f"unscreened {sorted(unscreened)}" if unscreened else f"{middle} middle windows"
        print(f"{chars:6d} chars, {tokens} tokens, {said}: classify p50 {before:6.1f} -> {after:6.1f} ms "
              f"(+{after - before:.1f})")


def prefilter(models: EncoderModels) -> None:
    """address_candidates' recall on the head's address spans, and what it changes for long tool outputs."""
    from offline import pii_data
    from offline.pii_eval import EVAL_SEED

    templates = pii_data.load_templates(pii_data.templates_path(Path("var/pii")))
    samples = [(s.text, [(g.start, g.end) for g in s.spans if g.type == STREET_ADDRESS])
               for s in pii_data.generate(templates, range(len(templates)), 20, EVAL_SEED + 1)]
    with open("offline/data/pii_chat_dev.jsonl") as rows:
        samples += [(json.loads(row)["text"], []) for row in rows]
    seen = {"all": [0, 0], "on a gold address": [0, 0]}
    for text, gold in samples:
        for f in detect_pii(text, models.encoder.encode(text)):
            if f.type != STREET_ADDRESS:
                continue
            hit = bool(address_candidates(text, max(0, f.start - NEAR), min(len(text), f.end + NEAR)))
            for kind in ("all", "on a gold address") if any(f.start < e and s < f.end for s, e in gold) else ("all",):
                seen[kind][0] += hit
                seen[kind][1] += 1
    for kind, (hit, n) in seen.items():
        print(f"address spans the head finds, {kind}: {hit} of {n} seen by the prefilter ({hit / n:.4f})")
    packages = Path(glob.glob(".venv/lib/python3*/site-packages")[0])
    sources = sorted(p for p in packages.rglob("*.py") if p.stat().st_size > 12_000)[::40]
    outputs = [p.read_text(errors="replace")[:60_000] for p in [*sources, *sorted(packages.glob("*.dist-info/METADATA"))[:40]]]
    clf, encoder = EncoderClassifier(models), models.encoder
    unread = EncoderClassifier(models, pii_enabled=False)  # the head and tail pass alone
    long = unscreened = 0
    costs, bare = [], []
    for text in outputs:
        encoded = encoder.encode(text)
        if encoded.windows == 1 or encoder.read_middle(text, encoded) is not None:
            continue  # read whole before and after
        long += 1
        unscreened += STREET_ADDRESS in clf.classify(text).unscreened
        bare.append(ms(unread.classify, text))
        costs.append(ms(clf.classify, text))
    print(f"{len(outputs)} tool outputs, {long} past the middle's bound (STREET_ADDRESS unscreened before); "
          f"still unscreened with the prefilter: {unscreened} ({unscreened / max(long, 1):.0%}); classify p50 "
          f"{statistics.median(bare):.0f} -> {statistics.median(costs):.0f} ms, max {max(bare):.0f} -> {max(costs):.0f} ms")


if __name__ == "__main__":
    main()
