"""Dev figures of the operational-harm rule (offline/harm_rules.py): alone, and OR the content-safety head.

`python -m offline.harm_rule_eval` (runtime venv). DEV rows only (guard_data.guard_splits("content_safety")["dev"]
and support_rows(DEV)): per harmful source the share the rule, the head at its shipped operating point (p >= 0.5)
and either catches, and per benign group (real chat, support, edgy) the share flagged, against DEV_BUDGETS.
`--show` prints the dev rows the rule flags among the benign groups and misses among the harmful ones (to write the
rule from); `--test` prints the same figures on the held-out TEST split once (no rows). Both also print the rule's CPU
cost per call on two 500-character prompts written here (an ordinary ask, a how-to ask full of ask words).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from offline.chat_data import DEV, TEST
from offline.features import embed
from offline.guard_data import DEV_BUDGETS, EDGY, LABELS, REAL_CHAT, guard_splits, support_rows
from offline.harm_rules import harm_class
from offline.train_data import Example
from router.classifier.encoder import Encoder
from router.classifier.heads import HEADS_DIR, MLPHead
from router.config import ClassifierConfig

GUARD = "content_safety"


def head_scores(examples: list[Example]) -> np.ndarray:
    """The shipped head's positive probability on pooled features (cached per text by offline.features)."""
    encoder = Encoder(ClassifierConfig().model_dir)
    head = MLPHead.load(HEADS_DIR / f"{GUARD}.npz")
    return head.probabilities(embed(encoder, [e.text for e in examples], pooled=True))[:, 1]


def figures(split: str, show: bool) -> dict:
    rows = guard_splits(GUARD)[split]
    benign = {
        "real_chat": [e for e in rows if e.label == LABELS[GUARD][0] and e.group in REAL_CHAT],
        "support": support_rows(split),
        EDGY: [e for e in rows if e.group == EDGY],
    }
    harmful = [e for e in rows if e.label == LABELS[GUARD][1]]
    everything = harmful + [e for group in benign.values() for e in group]
    head = dict(zip([e.text for e in everything], head_scores(everything) >= 0.5, strict=True))
    rule = {e.text: harm_class(e.text) for e in everything}
    report: dict = {"split": split, "recall": {}, "false_block": {}}
    for source in sorted({e.group for e in harmful}):
        texts = [e.text for e in harmful if e.group == source]
        report["recall"][source] = _rates(texts, head, rule) | {"n": len(texts)}
        if show:
            for text in texts:
                if rule[text] is None:
                    print("MISS", source, "|", text[:150].replace("\n", " "))
    per_source = list(report["recall"].values())
    report["recall"]["mean_over_sources"] = {k: round(float(np.mean([r[k] for r in per_source])), 4)
                                             for k in ("head", "rule", "either")}
    for group, examples in benign.items():
        texts = [e.text for e in examples]
        report["false_block"][group] = _rates(texts, head, rule) | {"n": len(texts), "budget": DEV_BUDGETS[group]}
        if show:
            for text in texts:
                if rule[text] is not None:
                    print("FLAG", group, rule[text], "|", text[:150].replace("\n", " "))
    return report


def _rates(texts: list[str], head: dict[str, bool], rule: dict[str, str | None]) -> dict:
    if not texts:
        return {"head": 0.0, "rule": 0.0, "either": 0.0}
    return {
        "head": round(float(np.mean([head[t] for t in texts])), 4),
        "rule": round(float(np.mean([rule[t] is not None for t in texts])), 4),
        "either": round(float(np.mean([head[t] or rule[t] is not None for t in texts])), 4),
    }


COST_PROMPTS = {
    "ordinary": "I am planning a two-week trip through northern Italy in May with my parents, who are in their seventies "
                "and do not like long drives. We want to see Milan, Lake Como, Verona and Venice, and maybe the "
                "Dolomites if the weather is good. How should we split the days, which trains are easiest with luggage, "
                "and which towns are good bases so we do not have to change hotels every night? Also, what should we "
                "book ahead, and how do we get from the airport to the city centre cheaply?",
    "how_to": "How do I write a Python script that reads a CSV of orders, groups them by customer, and makes a summary "
              "table? Give me step by step instructions, then show me how to build a small web page that displays it, "
              "how to make the page refresh every minute, and how to create a cron job that emails me the report. "
              "Explain how to get the SMTP settings from my provider and how to handle errors so that a failed run "
              "does not lose data. Can you also tell me how to test it on my own laptop first?",
}


def cost_ms(text: str, calls: int = 300) -> float:
    """CPU milliseconds per harm_class() call on the first 500 characters of `text` (process time: another process
    on the shared cores does not count)."""
    text = text[:500]
    started = time.process_time()
    for _ in range(calls):
        harm_class(text)
    return round((time.process_time() - started) / calls * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print the dev rows flagged (benign) and missed (harmful)")
    parser.add_argument("--test", action="store_true", help="the held-out TEST figures, once, no rows printed")
    args = parser.parse_args()
    report = figures(TEST if args.test else DEV, show=args.show and not args.test)
    report["cpu_ms_per_call_500_chars"] = {name: cost_ms(text) for name, text in COST_PROMPTS.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
