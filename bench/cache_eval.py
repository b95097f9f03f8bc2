"""Semantic-cache hit precision and recall: the learned verifier against the fixed cosine threshold.

Protocol (pairwise, as a cache sees it): the cache holds prompt `a`; prompt `b` hits when both are
cacheable the same way as in production: an exact match after normalisation; else, if both fit the
semantic window and their cosine reaches the candidate floor (the verifier's 0.70 or the pair model's operating
point's), when the verifier's score clears its threshold (`verifier`), or, for the baseline, when the cosine reaches a fixed threshold and the
guard's `reject_reason` is None (`cosine_guard`, today's design before the verifier) or alone
(`cosine`). With the pair model (`--pair-model`, on by default as in the router's config; `--no-pair`: the verifier
alone) the operating point decides (router/cache/pair.py); the `pair` curves set every step's pair threshold to
the swept value; `--stages` also scores each earlier stage of the dev choice (bench/results/cache_pair_dev.json), in
the same run. A hit on a label-1 pair is a true hit, on a label-0 pair a false (wrong-answer) hit.
  precision = true hits / hits;  recall = true hits / label-1 pairs.
Data: the test split of QQP (../shared/data/qqp_pairs.jsonl.gz split by question component,
offline/cache_pairs.py: no test question is in the verifier's training or dev data; crowd labels,
noisy), the hand-written held-out pairs bench/data/cache_heldout_pairs.jsonl (written before the
verifier was trained, never trained or tuned on) and the older hand-written set
bench/data/cache_hard_pairs.jsonl (used to tune the guard and the verifier's operating point).
Each text is embedded alone with the production encoder, as the request path does.

    .venv/bin/python bench/cache_eval.py [--qqp PATH]
writes bench/results/cache_eval.json and bench/results/cache_eval.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from offline.cache_pair_dev import OUT as DEV_OUT
from offline.cache_pair_dev import recorded_stages
from offline.cache_pairs import load_jsonl, split_by_question
from offline.train_cache_verifier import QQP, assessed, embeddings, hits, pair_table
from router.cache.guard import VETO_CHECKS, features, reject_reason
from router.cache.keys import normalise
from router.cache.pair import OperatingPoint, PairModel
from router.cache.verifier import FLOOR, Verifier, _view
from router.config import CacheConfig

COSINES = [round(t, 3) for t in np.arange(0.70, 1.0001, 0.005)]
SCORES = [round(t, 3) for t in np.arange(0.0, 1.0001, 0.01)]
HELDOUT = ROOT / "bench" / "data" / "cache_heldout_pairs.jsonl"
HARD = ROOT / "bench" / "data" / "cache_hard_pairs.jsonl"
AUDIT = ROOT / "bench" / "data" / "qqp_false_hit_audit.jsonl"
# 40 false hits of the verifier's default on the QQP test split (random, seed 20261129), judged by hand.
VERIFIER_AUDIT = ROOT / "bench" / "data" / "qqp_verifier_false_hit_audit.jsonl"
BASELINE = 0.92  # the fixed cosine threshold the cache used before the verifier


def score(rows: list[dict[str, Any]], emb: dict[str, np.ndarray], max_chars: int,
          verifier: Verifier, floor: float) -> dict[str, np.ndarray]:
    """Per pair: the verifier's table (offline/train_cache_verifier.pair_table, candidates at `floor`, the lowest any
    decision uses) with its assessment of each candidate, and for the baseline the similarity (1.0 exact, -1 not
    comparable: exact-only in production) and the guard's verdict."""
    table = pair_table(rows, emb, floor=floor)
    long = np.array([max(len(normalise(r["a"])), len(normalise(r["b"]))) > max_chars for r in rows])
    table["candidate"] &= ~long
    table["verifier"], table["state"] = assessed(table, verifier)
    table["sim"] = np.where(table["exact"], 1.0, np.where(long, -1.0, table["cos"]))
    table["guard_ok"] = np.array([e or reject_reason(normalise(r["b"]), normalise(r["a"])) is None
                                  for e, r in zip(table["exact"], rows, strict=True)])
    return table


def pair_column(rows: list[dict[str, Any]], s: dict[str, np.ndarray], model: PairModel) -> np.ndarray:
    """The pair model's score of every candidate (stored `a`, query `b`), 0 elsewhere."""
    out = np.zeros(len(rows))
    for i in np.flatnonzero(s["candidate"]):
        out[i] = model.score(normalise(rows[i]["a"]), normalise(rows[i]["b"]))
    return out


def alone(s: dict[str, np.ndarray], verifier: Verifier, threshold: float) -> np.ndarray:
    """The hits of the verifier alone at `threshold` (candidates at its own floor)."""
    return hits(s | {"candidate": s["candidate"] & (s["cos"] >= FLOOR)}, verifier, threshold)


def decision(s: dict[str, np.ndarray], op: OperatingPoint, threshold: float | None = None) -> np.ndarray:
    """The hits of an operating point; with `threshold`, every step's pair threshold set to it (the curves)."""
    if threshold is not None:
        op = replace(op, steps=tuple((bound, threshold if need > 0 else need) for bound, need in op.steps))
    return s["exact"] | (s["candidate"] & op.serves(s["verifier"], s["state"], s["pair"], s["cos"]))


def point(hit: np.ndarray, label: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Hits, false hits, precision and recall of one decision (`threshold`: the swept value, for a curve)."""
    tp, fp, positives = int((hit & (label == 1)).sum()), int((hit & (label == 0)).sum()), int(label.sum())
    out = {"hits": tp + fp, "false_hits": fp,
           "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / positives if positives else 0.0}
    return out if threshold is None else {"threshold": threshold, **out}


def cosine_curve(s: dict[str, np.ndarray], guard: bool) -> list[dict[str, float]]:
    return [point((s["sim"] >= t) & (s["guard_ok"] if guard else True), s["label"], t) for t in COSINES]


def verifier_curve(s: dict[str, np.ndarray], verifier: Verifier) -> list[dict[str, float]]:
    return [point(alone(s, verifier, t), s["label"], t) for t in SCORES]


def at(points: list[dict[str, float]], threshold: float) -> dict[str, float]:
    return min(points, key=lambda p: abs(p["threshold"] - threshold))


def check_cost_us(rows: list[dict[str, Any]], verifier: Verifier) -> dict[str, float]:
    """Mean cost of one guard check and of one verifier score on unseen texts (feature caches cleared)."""
    out = {}
    for name, fn in (("guard", lambda a, b: reject_reason(b, a)),
                     ("verifier", lambda a, b: verifier.judge(b, [(a, 0.9)]))):
        features.cache_clear()
        _view.cache_clear()
        start = time.perf_counter()
        for r in rows:
            fn(normalise(r["a"]), normalise(r["b"]))
        out[f"{name}_us_per_pair"] = round((time.perf_counter() - start) / max(len(rows), 1) * 1e6, 1)
    return out


def by_kind(rows: list[dict[str, Any]], s: dict[str, np.ndarray], verifier: Verifier,
            model: PairModel | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hit_v, hit_b = alone(s, verifier, verifier.threshold), (s["sim"] >= BASELINE) & s["guard_ok"]
    hit_p = None if model is None else decision(s, model.operating_point)
    for kind in sorted({r["kind"] for r in rows}):
        idx = np.array([r["kind"] == kind for r in rows])
        out[kind] = {"pairs": int(idx.sum()), "verifier_hits": int(hit_v[idx].sum()),
                     f"cosine_{BASELINE}_guard_hits": int(hit_b[idx].sum())}
        if hit_p is not None:
            out[kind]["verifier_pair_hits"] = int(hit_p[idx].sum())
    return out


def audited_precision(s: dict[str, np.ndarray], audit: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """QQP labels are noisy: re-estimate the baseline's false hits from a hand audit of sampled false hits.

    bench/data/qqp_false_hit_audit.jsonl holds 40 random guard-passing label-0 pairs per similarity
    band, each judged by hand (`really_different`). Audited pairs the current guard now rejects
    are left out. Estimated real false hits = sum over bands of false hits x judged-real rate."""
    est_false, bands = 0.0, {}
    hit = (s["sim"] >= threshold) & s["guard_ok"]
    for band in sorted({r["band"] for r in audit}):
        lo, hi = (float(x) for x in band.split("-"))
        judged = [r for r in audit if r["band"] == band
                  and reject_reason(normalise(r["b"]), normalise(r["a"])) is None]
        rate = sum(r["really_different"] for r in judged) / max(len(judged), 1)
        in_band = hit & (s["sim"] >= max(lo, threshold)) & (s["sim"] < (hi + 1e-9 if hi < 1 else 2))
        false = int((in_band & (s["label"] == 0)).sum())
        est_false += false * rate
        bands[band] = {"judged": len(judged), "really_different": round(rate, 3), "false_hits": false}
    hits_ = int(hit.sum())
    valid = threshold >= min(float(b.split("-")[0]) for b in bands)
    return {"bands": bands, "estimated_precision": round(1 - est_false / hits_, 4) if hits_ and valid else None}


def verifier_audited(point_: dict[str, float]) -> dict[str, Any]:
    """The verifier's QQP precision with its false hits discounted by the hand-judged share really different."""
    judged = load_jsonl(VERIFIER_AUDIT)
    rate = sum(r["really_different"] for r in judged) / len(judged)
    return {"judged": len(judged), "really_different": round(rate, 3),
            "estimated_precision": round(1 - point_["false_hits"] * rate / max(point_["hits"], 1), 4)}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    d = result["default"]
    for ax, name, title in ((axes[0], "qqp_test", "QQP test split (raw labels)"),
                            (axes[1], "heldout", "held-out hand-written pairs")):
        if f"{name}_verifier" not in result["curves"]:
            continue
        for curve_name, style, label in (("pair", "-.", "verifier + pair model (pair threshold sweep)"),
                                         ("verifier", "-", "learned verifier (score sweep)"),
                                         ("cosine_guard", "--", "fixed cosine + guard (threshold sweep)"),
                                         ("cosine", ":", "fixed cosine alone (threshold sweep)")):
            pts = result["curves"].get(f"{name}_{curve_name}")
            if pts is None:
                continue
            ys = [p["precision"] for p in pts] if name == "qqp_test" else [p["false_hits"] for p in pts]
            ax.plot([p["recall"] for p in pts], ys, style, label=label)
        marks = [(d[name]["verifier"], "red", f"verifier alone (score {d['verifier_threshold']})"),
                 (d[name][f"cosine_{BASELINE}_guard"], "black", f"old default (cosine {BASELINE} + guard)")]
        if "pair" in d[name]:
            marks.append((d[name]["pair"], "green", "verifier + pair model, default operating point"))
        for pt, colour, label in marks:
            y = pt["precision"] if name == "qqp_test" else pt["false_hits"]
            ax.scatter([pt["recall"]], [y], color=colour, zorder=3, label=label)
        if name == "qqp_test":
            ax.axhline(0.95, color="grey", lw=0.8)
            ax.set(xlabel="recall", ylabel="precision", title=f"{title}: precision vs recall", ylim=(0.3, 1.01))
        else:
            ax.set(xlabel="paraphrase recall", ylabel="wrong answers served (of the hard negatives)",
                   title=f"{title}: wrong answers vs recall")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qqp", type=Path, default=QQP)
    p.add_argument("--heldout", type=Path, default=HELDOUT)
    p.add_argument("--hard", type=Path, default=HARD)
    p.add_argument("--model-dir", type=Path, default=ROOT / "models" / "minilm")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache_eval.json")
    p.add_argument("--pair-model", type=Path, default=Path(CacheConfig().pair_model_dir or "models/cache-pair"),
                   help="the pair model folder (default: the router's)")
    p.add_argument("--no-pair", action="store_true", help="the verifier alone (semantic_cache.pair_model_dir: null)")
    p.add_argument("--stages", type=Path, nargs="?", const=DEV_OUT, default=None,
                   help="also score the earlier stages of the dev choice recorded in this file (default: "
                        "bench/results/cache_pair_dev.json), in the same run")
    args = p.parse_args()
    verifier = Verifier.load()
    model = None if args.no_pair else PairModel(args.pair_model)
    max_chars = CacheConfig().max_semantic_chars
    sets = {"heldout": load_jsonl(args.heldout), "hard": load_jsonl(args.hard)}
    if args.qqp.exists():
        sets["qqp_test"] = split_by_question(load_jsonl(args.qqp))["test"]
    else:
        print(f"QQP file {args.qqp} absent: evaluating the hand-written sets only", file=sys.stderr)
    points = {} if model is None else {"pair": model.operating_point}
    if model is not None and args.stages is not None:
        points |= {f"pair_{k}": op for k, op in recorded_stages(args.stages).items()}
    floor = min([FLOOR, *(op.floor for op in points.values())])
    emb = embeddings([r for rows in sets.values() for r in rows], args.model_dir)
    scored = {name: score(rows, emb, max_chars, verifier, floor) for name, rows in sets.items()}
    curves: dict[str, list[dict[str, float]]] = {}
    default: dict[str, Any] = {"verifier_threshold": verifier.threshold, "verifier_candidate_floor": FLOOR,
                               "vetoes": [*verifier.vetoes, *VETO_CHECKS]}
    if model is not None:
        default |= {"pair_model": model.model_hash, "operating_points": {k: op.manifest() for k, op in points.items()}}
    for name, s in scored.items():
        curves[f"{name}_verifier"] = verifier_curve(s, verifier)
        curves[f"{name}_cosine_guard"] = cosine_curve(s, True)
        curves[f"{name}_cosine"] = cosine_curve(s, False)
        default[name] = {"verifier": point(alone(s, verifier, verifier.threshold), s["label"], verifier.threshold),
                         f"cosine_{BASELINE}_guard": at(curves[f"{name}_cosine_guard"], BASELINE)}
        if model is not None:
            s["pair"] = pair_column(sets[name], s, model)
            curves[f"{name}_pair"] = [point(decision(s, model.operating_point, t), s["label"], t) for t in SCORES]
            for key, op in points.items():
                default[name][key] = point(decision(s, op), s["label"])
    served = "verifier" if model is None else "pair"
    result = {
        "protocol": (__doc__ or "").split("Data:")[0].strip(),
        "encoder": f"{args.model_dir.name} int8 {verifier.encoder}",
        "pairs": {name: len(rows) for name, rows in sets.items()},
        "default": default,
        "checks": {
            "decision": served,
            "heldout_zero_wrong_answers": default["heldout"][served]["false_hits"] == 0,
            "heldout_recall_ge_0_80": default["heldout"][served]["recall"] >= 0.80,
            "qqp_test_precision_ge_0_95": "qqp_test" in default and default["qqp_test"][served]["precision"] >= 0.95,
        },
        "heldout_by_kind": by_kind(sets["heldout"], scored["heldout"], verifier, model),
        "hard_by_kind": by_kind(sets["hard"], scored["hard"], verifier, model),
        "qqp_test_baseline_audited": audited_precision(scored["qqp_test"], load_jsonl(AUDIT), BASELINE)
        if "qqp_test" in scored else None,
        "qqp_test_verifier_audited": verifier_audited(default["qqp_test"]["verifier"]) if "qqp_test" in scored else None,
        "cost": check_cost_us(sets.get("qqp_test", sets["heldout"])[:5000], verifier),
        "curves": curves,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("default", "checks", "heldout_by_kind", "qqp_test_baseline_audited",
                                             "qqp_test_verifier_audited", "cost")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
