"""Token-state alignment for the cache verifier: a dev-only experiment (issue 11); nothing here is shipped.

    PYTHONPATH=$PWD nice -n 15 .venv/bin/python -m offline.cache_alignment [--written-weight 10 --min-qqp-precision 0.83]
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python -m offline.cache_alignment --cost   # cost, storage

Figures and the conclusion: router/cache/README.md, "Token-state alignment, measured on dev (2026-11-30)".

Question: do features read from the encoder's per-token states (EncodedText.token_states: the query's come free
with the one encoder pass a request pays; the stored prompt's would be kept with the entry) tell a wrong answer
from a paraphrase better than the verifier's 17 word-overlap features? The held-out failures they are meant for
are word pairs no antonym list holds, who does what, and an added condition that narrows the question.

Data and training are offline/train_cache_verifier.py's own functions (dataset, pair_table, training_rows, fit,
operating_point): QQP train split by question, rule pairs weighted 3x, optionally the written train pairs; every
figure is on dev (QQP dev, rule dev, the tuning set bench/data/cache_hard_pairs.jsonl, the written dev pairs).
The operating point is the script's default dev rule (tuning set and <= 0.5% rule negatives; the written dev pairs
are not a constraint, so their false hits there are a fair figure). Never read: the QQP test split and
bench/data/cache_heldout_*.jsonl.
Token states: one encoder pass per candidate pair's text, exactly as serving encodes it, cached as fp16 under
var/align/. A text's states are centred on the mean train token state and projected on the train states' principal
axes, keeping `dims` (384: all of them, a rotation; 64 or 32: what storing them compactly would keep), then
L2-normalised; punctuation is dropped, and a "content" token is a word piece that is no verifier function word.
Per pair (both sides read alike, so the pair scores the same either way round), with m_i the best cosine of
token i to any token of the other side:
- BERTScore-style: F of the two sides' mean content m_i; the lower and the higher side mean;
- the worst-aligned content token of each side (min m_i) and the mean of its 2 worst, lower and higher side;
- crossings: the share of discordant pairs among mutual best matches (who does what, reordered);
- context shift of shared words: min and mean cosine between the states of the same word piece on both sides;
- unmatched (learned): per side the mean state of its content tokens weighted by 1 - m_i, fed as |u_a - u_b|
  and u_a * u_b to the same MLP.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offline.build import REPO_ROOT
from offline.cache_pairs import Pair
from offline.train_cache_verifier import (
    DEV_SETS,
    QQP,
    choose_vetoes,
    dataset,
    dev_figures,
    embeddings,
    fit,
    hits,
    operating_point,
    pair_table,
    training_rows,
)
from router.cache.guard import VETO_CHECKS
from router.cache.verifier import COLUMNS, FEATURES, FUNCTION_WORDS, Verifier
from router.classifier.encoder import Encoder

ALIGN_CACHE = REPO_ROOT / "var" / "align"
SCALARS = ("align_f", "align_side_low", "align_side_high", "worst_low", "worst_high", "worst2_low", "worst2_high",
           "crossings", "shared_shift_min", "shared_shift_mean")
MUTUAL_MIN = 0.3  # a mutual best match below this cosine is no alignment (crossings)
# name -> (projected dims, unmatched-state features); "words" is today's verifier (no token states).
VARIANTS = {"words": (0, False), "align384": (384, False), "align64": (64, False), "align32": (32, False),
            "align64+unmatched": (64, True), "align32+unmatched": (32, True)}


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def token_states(encoder: Encoder, texts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(fp16 states [T, 384], word-piece ids [T]) of every text, one encoder run each, cached in var/align/."""
    path = ALIGN_CACHE / f"{encoder.model_hash}.npz"
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if path.is_file():
        with np.load(path) as z:
            bounds = np.concatenate([[0], np.cumsum(z["lengths"])])
            states, ids = z["states"], z["ids"]
            for k, (lo, hi) in zip(z["keys"].tolist(), itertools.pairwise(bounds), strict=True):
                cache[k] = (states[lo:hi], ids[lo:hi])
    missing = [t for t in dict.fromkeys(texts) if _key(t) not in cache]
    for i, text in enumerate(missing):
        e = encoder.encode(text)
        cache[_key(text)] = (e.token_states.astype(np.float16), e.ids.astype(np.int32))
        if i % 20000 == 19999 or i == len(missing) - 1:
            print(f"  token states {i + 1}/{len(missing)}", flush=True)
            ALIGN_CACHE.mkdir(parents=True, exist_ok=True)
            np.savez(path, keys=np.array(list(cache)), lengths=np.array([len(v[1]) for v in cache.values()]),
                     states=np.concatenate([v[0] for v in cache.values()]),
                     ids=np.concatenate([v[1] for v in cache.values()]))
    return {t: cache[_key(t)] for t in texts}


def token_kinds(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per vocabulary id: is it a word piece (not punctuation), and a content piece (no function word)."""
    vocab: dict[str, int] = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    word, content = np.zeros(len(vocab), bool), np.zeros(len(vocab), bool)
    for piece, i in vocab.items():
        word[i] = any(ch.isalnum() for ch in piece)
        content[i] = word[i] and piece not in FUNCTION_WORDS
    return word, content


@dataclass(frozen=True)
class Basis:
    """Centring and principal axes of train token states: what a store would apply before keeping `dims`."""

    mean: np.ndarray
    axes: np.ndarray  # [384, 384], columns by falling variance

    @classmethod
    def fit(cls, states: list[np.ndarray], seed: int, sample: int = 200_000) -> Basis:
        rows = np.concatenate(states).astype(np.float32)
        rows = rows[np.random.default_rng(seed).permutation(len(rows))[:sample]]
        mean = rows.mean(0)
        values, vectors = np.linalg.eigh(np.cov((rows - mean).T))
        return cls(mean, vectors[:, np.argsort(values)[::-1]].astype(np.float32))

    def project(self, states: np.ndarray, dims: int) -> np.ndarray:
        out: np.ndarray = (states.astype(np.float32) - self.mean) @ self.axes[:, :dims]
        normed: np.ndarray = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
        return normed


@dataclass(frozen=True, slots=True)
class Side:
    """One text's projected, normalised word-piece states and which of them are content pieces."""

    states: np.ndarray  # [T, dims], punctuation dropped
    ids: np.ndarray
    content: np.ndarray  # bool [T]


def side(states: np.ndarray, ids: np.ndarray, basis: Basis, dims: int, kinds: tuple[np.ndarray, np.ndarray]) -> Side:
    keep = kinds[0][ids]
    return Side(basis.project(states[keep], dims), ids[keep], kinds[1][ids[keep]])


def _crossings(sim: np.ndarray) -> float:
    """Share of discordant pairs among mutual best matches: 'I cancel X' / 'X cancels me' crosses, a rewording
    in the same order does not."""
    best_b, best_a = sim.argmax(1), sim.argmax(0)
    i = np.flatnonzero((best_a[best_b] == np.arange(len(best_b))) & (sim.max(1) >= MUTUAL_MIN))
    if len(i) < 2:
        return 0.0
    j = best_b[i]
    return float((j[:, None] > j[None, :])[np.triu_indices(len(j), 1)].mean())


def alignment(a: Side, b: Side) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCALARS of a pair, and each side's unmatched-content state (the module docstring)."""
    dims = a.states.shape[1]
    if not len(a.ids) or not len(b.ids):
        return np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1], np.float32), np.zeros(dims), np.zeros(dims)
    sim = a.states @ b.states.T
    per_side, unmatched = [], []
    for s, match in ((a, sim.max(1)), (b, sim.max(0))):
        m = match[s.content] if s.content.any() else match
        states = s.states[s.content] if s.content.any() else s.states
        weight = np.clip(1.0 - m, 0.0, 1.0)
        per_side.append((float(m.mean()), float(m.min()), float(np.sort(m)[:2].mean())))
        unmatched.append(weight @ states / max(float(weight.sum()), 1e-6))
    (ra, wa, w2a), (rb, wb, w2b) = per_side
    same = a.ids[:, None] == b.ids[None, :]
    shift = np.where(same, sim, -np.inf).max(1)[same.any(1)]
    scalars = [2 * ra * rb / max(ra + rb, 1e-6), min(ra, rb), max(ra, rb), min(wa, wb), max(wa, wb),
               min(w2a, w2b), max(w2a, w2b), _crossings(sim),
               float(shift.min()) if len(shift) else 1.0, float(shift.mean()) if len(shift) else 1.0]
    return np.array(scalars, np.float32), unmatched[0], unmatched[1]


def extra_columns(pairs: list[Pair], table: dict[str, np.ndarray], states: dict[str, tuple[np.ndarray, np.ndarray]],
                  basis: Basis, dims: int, unmatched: bool, kinds: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The alignment columns of every candidate pair (zeros elsewhere: the verifier never scores those)."""
    width = len(SCALARS) + (2 * dims if unmatched else 0)
    out = np.zeros((len(pairs), width), np.float32)
    sides: dict[str, Side] = {}
    for row in np.flatnonzero(table["candidate"]):
        a, b = (sides.setdefault(t, side(*states[t], basis, dims, kinds)) for t in (pairs[row]["a"], pairs[row]["b"]))
        scalars, ua, ub = alignment(a, b)
        out[row] = np.concatenate([scalars, np.abs(ua - ub), ua * ub]) if unmatched else scalars
    return out


@dataclass(frozen=True)
class WideVerifier(Verifier):
    """The verifier's MLP over FEATURES plus the alignment columns, which tables keep after COLUMNS."""

    def scores(self, x: np.ndarray) -> np.ndarray:
        wide = np.hstack([x[:, :len(FEATURES)], x[:, len(COLUMNS):]])
        hidden = np.maximum((wide - self.mean) / self.scale @ self.w1 + self.b1, 0.0)
        p: np.ndarray = 1.0 / (1.0 + np.exp(-(hidden @ self.w2 + self.b2)))
        p[(x[:, [COLUMNS.index(f"differs_{name}") for name in (*self.vetoes, *VETO_CHECKS)]] > 0).any(axis=1)] = 0.0
        return p


def precision_at(table: dict[str, np.ndarray], verifier: Verifier, recall: float) -> float:
    """QQP dev precision at the highest threshold whose recall reaches `recall`."""
    scores = np.full(len(table["label"]), -1.0)
    scores[table["candidate"]] = verifier.scores(table["x"][table["candidate"]])
    scores[table["exact"]] = 2.0
    order = np.argsort(-scores, kind="stable")
    positive = table["label"][order] == 1
    reached = np.flatnonzero(np.cumsum(positive) >= recall * positive.sum())
    return round(float(positive[: reached[0] + 1].mean()), 4) if len(reached) else 0.0


def written_at_zero(table: dict[str, np.ndarray], verifier: Verifier) -> float:
    """Written dev recall at the lowest threshold with no false hit there (separation, no operating point)."""
    negatives = table["candidate"] & (table["label"] == 0)
    top = float(verifier.scores(table["x"][negatives]).max()) if negatives.any() else 0.0
    return round(float(hits(table, verifier, np.nextafter(top, 1.0))[table["label"] == 1].mean()), 4)


def evaluate(verifier: Verifier, dev: dict[str, dict[str, np.ndarray]], rule_dev: dict[str, np.ndarray],
             min_qqp_precision: float) -> dict[str, object]:
    """Dev figures at the script's operating point (`rule_dev`: the written dev table when the script's rule reads
    it, else an empty one), and threshold-free ones."""
    threshold, _ = operating_point(verifier, min_qqp_precision, dev["qqp_dev"], dev["rules_dev"], dev["tuning"],
                                   rule_dev)
    figures: dict[str, object] = {"threshold": threshold, **dev_figures(verifier, threshold, *(dev[n] for n in DEV_SETS))}
    figures |= {f"qqp_precision_at_{r}": precision_at(dev["qqp_dev"], verifier, r) for r in (0.30, 0.45)}
    figures["written_recall_at_0_false"] = written_at_zero(dev["written_dev"], verifier)
    for name in ("written_dev", "rules_dev"):
        t = dev[name]
        served = hits(t, verifier, threshold) & (t["label"] == 0)
        figures[f"{name}_false_by_kind"] = dict(Counter(t["kind"][served].tolist()))
    # Per kind of written dev hard negative: how well the score ranks the candidate paraphrases above them (a
    # vetoed pair scores 0 and ties).
    written = dev["written_dev"]
    score = verifier.scores(written["x"][written["candidate"]])
    label, kind = written["label"][written["candidate"]], written["kind"][written["candidate"]]
    figures["written_auc_by_kind"] = {k: _auc(score[(label == 1) | (kind == k)], label[(label == 1) | (kind == k)])
                                      for k in sorted(set(kind[label == 0].tolist()))}
    return figures


def feature_auc(dev: dict[str, dict[str, np.ndarray]], names: list[str],
                columns: list[int]) -> dict[str, dict[str, float]]:
    """Per single column, AUC of paraphrase vs wrong answer among each dev set's candidates (0.5: no signal;
    under 0.5: the column falls for paraphrases). Baseline columns beside the alignment ones for scale."""
    return {name: {source: _auc(dev[source]["x"][dev[source]["candidate"], column],
                                dev[source]["label"][dev[source]["candidate"]])
                   for source in ("qqp_dev", "rules_dev", "written_dev")}
            for name, column in zip(names, columns, strict=True)}


def _auc(values: np.ndarray, label: np.ndarray) -> float:
    """P(a random label-1 row outranks a random label-0 row), a tie counting half (Mann-Whitney, mean ranks)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.ravel()]
    positives = int(label.sum())
    negatives = len(label) - positives
    return round(float((ranks[label == 1].sum() - positives * (positives + 1) / 2) / max(positives * negatives, 1)), 3)


TABLE = (("threshold", "operating point"), ("qqp_precision_at_0.3", "QQP dev P@R0.30"),
         ("qqp_precision_at_0.45", "QQP dev P@R0.45"), ("qqp_dev_recall", "QQP dev recall"),
         ("rule_negative_hit_rate", "rule dev negatives hit"), ("tuning_recall", "tuning recall (0 false hits)"),
         ("written_false_hits", "written dev false hits"), ("written_recall", "written dev recall"),
         ("written_recall_at_0_false", "written dev recall at 0 false hits"))


def table(results: dict[str, Any], seeds: list[int]) -> str:
    """Markdown: one row per variant, each figure as seed / seed / seed (mean)."""
    variants = list(dict.fromkeys(k.split("/")[0] for k in results if "/seed" in k))
    lines = ["| variant | " + " | ".join(label for _, label in TABLE) + " |", "|---" * (len(TABLE) + 1) + "|"]
    for name in variants:
        cells = []
        for key, _ in TABLE:
            values = [float(results[f"{name}/seed{seed}"][key]) for seed in seeds]
            cells.append(" / ".join(f"{v:g}" for v in values) + f" ({np.mean(values):.3g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def serving_cost(basis: Basis, kinds: tuple[np.ndarray, np.ndarray], repeats: int = 300) -> dict[str, object]:
    """Per candidate at serving (p50 / p90 microseconds): project both sides' states (the query's once per lookup,
    counted here per candidate as an upper bound) and compute every alignment column; and what storing the states
    costs. Run it with OPENBLAS_NUM_THREADS=1, as a request thread would: a threaded BLAS on these tiny matrices
    waits for busy cores."""
    rng = np.random.default_rng(0)
    ids = np.flatnonzero(kinds[1])
    out: dict[str, object] = {}
    for tokens in (20, 40):
        for dims, unmatched in sorted({v for v in VARIANTS.values() if v[0]}):
            states = [rng.normal(size=(tokens, 384)).astype(np.float16) for _ in range(2)]
            pick = [rng.choice(ids, tokens) for _ in range(2)]
            took = []
            for _ in range(repeats):
                start = time.perf_counter()
                a, b = (side(s, i, basis, dims, kinds) for s, i in zip(states, pick, strict=True))
                scalars, ua, ub = alignment(a, b)
                if unmatched:
                    np.concatenate([scalars, np.abs(ua - ub), ua * ub])
                took.append(time.perf_counter() - start)
            out[f"T{tokens}_d{dims}{'+unmatched' if unmatched else ''}_us_p50_p90"] = [
                round(float(np.percentile(took, q)) * 1e6, 1) for q in (50, 90)]
            out[f"T{tokens}_d{dims}_bytes_per_entry"] = tokens * (dims * 2 + 2)  # fp16 states + uint16 ids
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qqp", type=Path, default=QQP)
    p.add_argument("--questions", type=int, default=12000)
    p.add_argument("--rule-weight", type=float, default=3.0)
    p.add_argument("--written-weight", type=float, default=0.0, help="0: no written train pairs (the default's data)")
    p.add_argument("--min-qqp-precision", type=float, default=0.0, help="the script's operating-point floor")
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "minilm")
    p.add_argument("--out", type=Path, default=ALIGN_CACHE / "results.json")
    p.add_argument("--cost", action="store_true", help="measure serving cost and storage only (needs the cache)")
    args = p.parse_args()
    # The data seed stays the script's default (11) so every model seed sees the same pairs.
    sets, _ = dataset(args.qqp, args.questions, 11, True)
    emb = embeddings([q for pairs in sets.values() for q in pairs], args.model_dir)
    tables = {name: pair_table(pairs, emb) for name, pairs in sets.items()}
    texts = sorted({t for name, pairs in sets.items() for row, q in enumerate(pairs) if tables[name]["candidate"][row]
                    for t in (q["a"], q["b"])})
    states = token_states(Encoder(args.model_dir, threads=1), texts)
    kinds = token_kinds(args.model_dir)
    train_texts = sorted({t for q in sets["qqp_train"] + sets["rules_train"] for t in (q["a"], q["b"]) if t in states})
    basis = Basis.fit([states[t][0] for t in train_texts], seed=0)
    if args.cost:
        lengths = [int(kinds[0][states[t][1]].sum()) for t in texts]
        print(json.dumps({"word_pieces_per_text_mean": round(float(np.mean(lengths)), 1),
                          "p90": float(np.percentile(lengths, 90)), **serving_cost(basis, kinds)}, indent=1))
        return 0
    empty = pair_table([], emb)
    results: dict[str, Any] = {}
    for name in args.variants:
        dims, unmatched = VARIANTS[name]
        wide = {n: t | {"x": np.hstack([t["x"], extra_columns(sets[n], t, states, basis, dims, unmatched, kinds)])}
                if dims else t for n, t in tables.items()}
        columns = [*range(len(FEATURES)), *range(len(COLUMNS), wide["qqp_train"]["x"].shape[1])]
        x, y, weight = training_rows([(wide["qqp_train"], 1.0), (wide["rules_train"], args.rule_weight),
                                      (wide["written_train"], args.written_weight)], columns)
        dev = {n: wide[n] for n in DEV_SETS}
        rule_dev = dev["written_dev"] if args.written_weight > 0 else empty  # what the script's rule reads
        vetoes = choose_vetoes(dev["rules_dev"], dev["tuning"], rule_dev)
        if dims:
            shown = ["cosine", "content_jaccard", "order_mismatch", "trigram_jaccard"]
            results[f"{name}/auc"] = feature_auc(dev, shown + list(SCALARS), [FEATURES.index(f) for f in shown]
                                                 + list(range(len(COLUMNS), len(COLUMNS) + len(SCALARS))))
        for seed in args.seeds:
            params = fit(x, y, weight, seed)
            verifier = WideVerifier(params["mean"], params["scale"], params["w1"], params["b1"], params["w2"],
                                    float(params["b2"][0]), 0.5, vetoes, "")
            results[f"{name}/seed{seed}"] = evaluate(verifier, dev, rule_dev, args.min_qqp_precision)
            print(name, seed, json.dumps(results[f"{name}/seed{seed}"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"written_weight": args.written_weight, "results": results}, indent=1))
    print(table(results, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
