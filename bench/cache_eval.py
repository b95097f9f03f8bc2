"""Semantic-cache hit precision and recall against the similarity threshold, with and without the guard.

Protocol (pairwise, as a cache sees it): the cache holds prompt `a`; prompt `b` hits when both are
cacheable the same way as in production (exact match after normalisation; else, if both fit the
semantic window, cosine >= threshold and, with the guard, `reject_reason` is None). A hit on a
label-1 pair is a true hit, on a label-0 pair a false (wrong-answer) hit.
  precision = true hits / hits;  recall = true hits / label-1 pairs.
Data: QQP pairs (../shared/data/qqp_pairs.jsonl.gz; crowd labels, noisy: some "false" hits are
real duplicates) sampled uniformly with a fixed seed (`--pairs 0` = all 80,854), and the
hand-written hard set bench/data/cache_hard_pairs.jsonl (numbers, negation, entity swaps,
audience, antonyms, plus paraphrases that should still hit). Each text is embedded alone with the
production encoder (router/classifier/encoder.py), as the request path does.

    .venv/bin/python bench/cache_eval.py [--pairs 20000] [--qqp PATH]
writes bench/results/cache_eval.json and bench/results/cache_eval.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.cache.guard import features, reject_reason
from router.cache.keys import normalise
from router.config import CacheConfig

THRESHOLDS = [round(t, 3) for t in np.arange(0.70, 1.0001, 0.005)]
DEFAULT_QQP = ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"
HARD = ROOT / "bench" / "data" / "cache_hard_pairs.jsonl"
AUDIT = ROOT / "bench" / "data" / "qqp_false_hit_audit.jsonl"


def load_pairs(path: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if limit and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def embed_all(texts: list[str], model_dir: Path, precision: str) -> dict[str, np.ndarray]:
    """Embeddings by text; cached under var/features/ by the model file's hash (reruns skip the encoder)."""
    from offline.features import embed
    from router.classifier.encoder import Encoder

    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, embed(Encoder(model_dir, threads=1, precision=precision), unique), strict=True))


def score(rows: list[dict[str, Any]], emb: dict[str, np.ndarray], max_chars: int) -> dict[str, np.ndarray]:
    """Per pair: similarity (1.0 exact, -1 not comparable), guard verdict, label."""
    sims, passes, labels = [], [], []
    for r in rows:
        a, b = normalise(r["a"]), normalise(r["b"])
        if a == b:
            sim = 1.0
        elif len(a) > max_chars or len(b) > max_chars:
            sim = -1.0  # exact-only in production
        else:
            sim = float(emb[r["a"]] @ emb[r["b"]])
        sims.append(sim)
        passes.append(a == b or reject_reason(b, a) is None)
        labels.append(int(r["label"]))
    return {"sim": np.array(sims), "guard_ok": np.array(passes), "label": np.array(labels)}


def curve(s: dict[str, np.ndarray], guard: bool) -> list[dict[str, float]]:
    positives = int(s["label"].sum())
    out = []
    for t in THRESHOLDS:
        hit = (s["sim"] >= t) & (s["guard_ok"] if guard else True)
        tp = int((hit & (s["label"] == 1)).sum())
        fp = int((hit & (s["label"] == 0)).sum())
        out.append({"threshold": t, "hits": tp + fp, "false_hits": fp,
                    "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / positives if positives else 0.0})
    return out


def at(points: list[dict[str, float]], threshold: float) -> dict[str, float]:
    return min(points, key=lambda p: abs(p["threshold"] - threshold))


def guard_cost_us(rows: list[dict[str, Any]]) -> float:
    """Mean cost of one guard check on unseen texts (feature cache cleared)."""
    features.cache_clear()
    start = time.perf_counter()
    for r in rows:
        reject_reason(normalise(r["b"]), normalise(r["a"]))
    return (time.perf_counter() - start) / max(len(rows), 1) * 1e6


def hard_by_kind(rows: list[dict[str, Any]], s: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in rows}):
        idx = np.array([r["kind"] == kind for r in rows])
        near = s["sim"][idx] >= threshold
        out[kind] = {"pairs": int(idx.sum()), "above_threshold": int(near.sum()),
                     "hits_with_guard": int((near & s["guard_ok"][idx]).sum())}
    return out


def audited_precision(s: dict[str, np.ndarray], audit: list[dict[str, Any]], emb: dict[str, np.ndarray],
                      threshold: float) -> dict[str, Any]:
    """QQP labels are noisy: re-estimate false hits from a hand audit of sampled false hits per band.

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
    hits = int(hit.sum())
    valid = threshold >= min(float(b.split("-")[0]) for b in bands)
    return {"bands": bands, "estimated_precision": round(1 - est_false / hits, 4) if hits and valid else None}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    for name, style in (("qqp_no_guard", "--"), ("qqp_guard", "-")):
        pts = result["curves"].get(name)
        if pts:
            ax1.plot([p["recall"] for p in pts], [p["precision"] for p in pts], style, label=name)
    d = result["default"]
    if "qqp_guard" in d:
        ax1.scatter([d["qqp_guard"]["recall"]], [d["qqp_guard"]["precision"]], color="red", zorder=3,
                    label=f"default threshold {d['threshold']}")
    ax1.axhline(0.95, color="grey", lw=0.8)
    ax1.set(xlabel="recall", ylabel="precision", title="QQP: hit precision vs recall (threshold sweep)")
    ax1.legend()
    for name, style in (("hard_no_guard", "--"), ("hard_guard", "-")):
        pts = result["curves"][name]
        ax2.plot([p["threshold"] for p in pts], [p["false_hits"] for p in pts], style, label=f"{name} false hits")
        ax2.plot([p["threshold"] for p in pts], [p["recall"] * 25 for p in pts], style, alpha=0.5,
                 label=f"{name} paraphrase recall x25")
    ax2.axvline(d["threshold"], color="red", lw=0.8)
    ax2.set(xlabel="similarity threshold", title="Hard set: false hits (and recall x25)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qqp", type=Path, default=DEFAULT_QQP)
    p.add_argument("--pairs", type=int, default=20_000, help="QQP pairs sampled (0 = all)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--hard", type=Path, default=HARD)
    p.add_argument("--model-dir", type=Path, default=ROOT / "models" / "minilm")
    p.add_argument("--precision", default="int8")
    p.add_argument("--threshold", type=float, default=CacheConfig().similarity_threshold)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache_eval.json")
    args = p.parse_args()
    max_chars = CacheConfig().max_semantic_chars
    hard = load_pairs(args.hard, 0, args.seed)
    qqp: list[dict[str, Any]] = []
    if args.qqp.exists():
        qqp = load_pairs(args.qqp, args.pairs, args.seed)
    else:
        print(f"QQP file {args.qqp} absent: evaluating the hard set only", file=sys.stderr)
    emb = embed_all([t for r in hard + qqp for t in (r["a"], r["b"])], args.model_dir, args.precision)
    sets = {"hard": score(hard, emb, max_chars)}
    if qqp:
        sets["qqp"] = score(qqp, emb, max_chars)
    curves = {f"{n}_{g}": curve(s, g == "guard") for n, s in sets.items() for g in ("guard", "no_guard")}
    default: dict[str, Any] = {"threshold": args.threshold}
    default.update({name: at(pts, args.threshold) for name, pts in curves.items()})
    result = {
        "protocol": __doc__.split("Data:")[0].strip(),
        "encoder": f"{args.model_dir.name} {args.precision}",
        "qqp_pairs": len(qqp), "qqp_sample_seed": args.seed, "hard_pairs": len(hard),
        "default": default,
        "checks": {
            "qqp_precision_ge_0_95": bool(qqp) and default["qqp_guard"]["precision"] >= 0.95,
            "qqp_audited_precision_ge_0_95": bool(qqp) and (audited_precision(
                sets["qqp"], load_pairs(AUDIT, 0, 0), emb, args.threshold)["estimated_precision"] or 0) >= 0.95,
            "hard_no_false_hit": default["hard_guard"]["false_hits"] == 0,
        },
        "qqp_audited": audited_precision(sets["qqp"], load_pairs(AUDIT, 0, 0), emb, args.threshold) if qqp else None,
        "hard_by_kind": hard_by_kind(hard, sets["hard"], args.threshold),
        "guard_cost_us_per_check": round(guard_cost_us(qqp or hard), 1),
        "curves": curves,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: result[k] for k in ("default", "checks", "qqp_audited", "hard_by_kind",
                                             "guard_cost_us_per_check")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
