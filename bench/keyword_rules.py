"""What keyword matching costs per request under RE2 and under the Python `re` it replaced (2026-12-02).

The shipped config's rules, each request's whole keyword step (`Policy.keyword_rule`: every rule in order until
one matches) on 1,000 real chat first turns of the eval data (offline/data, `CHAT_SETS` in order): microseconds
per request, the median of `--repeats` timings of each prompt, then p50 / p99 over the prompts; then the longest text
the rules scan (`classifier.max_scan_chars`: those prompts that match no rule, joined and repeated), where every rule
reads it all. Then trial 13's `(a+)+$` on `a` * n + `!`, the prompt that held a worker: Python's time doubles with
each `a`, RE2's does not.

    .venv/bin/python bench/keyword_rules.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.config import KeywordRule, load_config
from router.policy import Policy

CHAT_SETS = ("chat_domain_test", "chat_domain_test_v2", "chat_domain_test_v3", "chat_edgy_test")


def chat_prompts(n: int = 1000) -> list[str]:
    """The first `n` real chat first turns of the eval sets: what keyword rules see in production."""
    rows = [json.loads(line) for name in CHAT_SETS for line in (ROOT / "offline" / "data" / f"{name}.jsonl").open()]
    return [row["text"] for row in rows][:n]


def python_re(rule: KeywordRule) -> re.Pattern[str]:
    """The rule as the router compiled it with Python's `re` until 2026-12-02, where a code point was `\\uHHHH`."""
    regexes = [re.sub(r"\\x\{([0-9a-fA-F]{4})\}", r"\\u\1", r) for r in rule.regex]
    parts = [r"\b" + re.escape(k) + r"\b" for k in rule.keywords] + [f"(?:{r})" for r in regexes]
    return re.compile("|".join(parts), re.IGNORECASE)


def _per_request_us(match: Callable[[str], object], texts: Sequence[str], repeats: int) -> list[float]:
    out = []
    for text in texts:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            match(text)
            runs.append((time.perf_counter_ns() - start) / 1000)
        out.append(statistics.median(runs))
    return out


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cfg = load_config(ROOT / "config" / "config.yaml")
    texts = chat_prompts()
    before = [(rule.category, python_re(rule)) for rule in cfg.keyword_rules]
    engines: dict[str, Callable[[str], object]] = {
        "python_re": lambda t: next((c for c, p in before if p.search(t)), None),
        "re2": Policy(cfg).keyword_rule,
    }
    lengths = sorted(len(t) for t in texts)
    print(f"{len(texts)} prompts, {lengths[len(lengths) // 2]} characters median, {lengths[-1]} max")
    for name, match in engines.items():
        us = _per_request_us(match, texts, args.repeats)
        print(f"{name:10s} p50 {_pct(us, 0.5):7.1f} us  p99 {_pct(us, 0.99):7.1f} us  mean {statistics.fmean(us):7.1f} us")
    unmatched = "\n".join(t for t in texts if engines["re2"](t) is None)
    longest = (unmatched * (1 + cfg.classifier.max_scan_chars // len(unmatched)))[:cfg.classifier.max_scan_chars]
    for name, match in engines.items():
        print(f"{name:10s} {len(longest)} characters, no match: {_per_request_us(match, [longest], 5)[0] / 1000:.2f} ms")
    trial = KeywordRule(category="history", regex=["(a+)+$"])
    for n in (16, 18, 20, 22):
        prompt = "a" * n + "!"
        old, new = _per_request_us(python_re(trial).search, [prompt], 1), _per_request_us(trial.compiled().search,
                                                                                          [prompt], 1)
        print(f"(a+)+$ on {n + 1} characters: python_re {old[0] / 1000:8.1f} ms  re2 {new[0] / 1000:8.3f} ms")


if __name__ == "__main__":
    main()
