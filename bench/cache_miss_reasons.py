"""Why rewordings of one question miss the cache, by the miss reasons the router logs (`cache_miss`).

Per intent of a set (`bench/data/cache_shop_paraphrases.json`: 10 shop-support intents, each worded 9-12 ways by a
new-user trial's support lead, 2026-12-02, trial 18), the first wording is decided and an answer stored for it as the
router would, then every other wording is looked up through `semantic-router explain --after`'s code (the router's
own session, classifier, policy and cache with the shipped pair model; no Envoy or Milvus). A rewording the policy
routes to another model can never be served (the model is part of the cache scope): it is counted apart.

    PYTHONPATH=$PWD .venv/bin/python bench/cache_miss_reasons.py [--config config/config.yaml]

writes bench/results/cache_miss_reasons.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.config import load_config  # after the sys.path line: run as a script
from router.explain import explain
from router.observability import logs

KEY = {"authorization": "Bearer sk-shop-a"}  # one tenant: every wording in one cache scope but for the model


def _chat(text: str) -> bytes:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()


async def _reasons(config: Path, intents: dict[str, list[str]]) -> dict[str, int]:
    cfg = load_config(config)
    counts: collections.Counter[str] = collections.Counter()
    for wordings in intents.values():
        for text in wordings[1:]:
            report = await explain(cfg, _chat(text), KEY, after=_chat(wordings[0]))
            after = report["cache"].get("after", {"served": False, "miss": report["cache"].get("reason", "off")})
            if after["served"]:
                counts["hit"] += 1
            elif after.get("miss") == "no_candidate" and after.get("model") != report.get("model"):
                counts["routed_to_another_model"] += 1
            else:
                counts[str(after.get("miss"))] += 1
    return dict(counts.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--set", type=Path, default=ROOT / "bench" / "data" / "cache_shop_paraphrases.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache_miss_reasons.json")
    args = parser.parse_args()
    logs.configure(level="error")
    intents = json.loads(args.set.read_text())
    counts = asyncio.run(_reasons(args.config, intents))
    result = {"set": args.set.name, "config": str(args.config.resolve().relative_to(ROOT)) if args.config.resolve().is_relative_to(ROOT) else str(args.config), "lookups": sum(counts.values()), "outcomes": counts}
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
