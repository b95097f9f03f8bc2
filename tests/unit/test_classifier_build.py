"""The model build: source parsing, manifest verification (idempotence), and that torch stays out of runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offline.build import MANIFEST, BuildError, ModelSource, build, is_current, sha256_file
from offline.cli import main as offline_main

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "minilm"


def test_source_specs(tmp_path: Path) -> None:
    assert ModelSource.parse("package").kind == "package"
    assert ModelSource.parse("trained") == ModelSource("trained", "offline/trained/minilm-chat")
    assert ModelSource.parse(f"trained:{tmp_path}").path == tmp_path.resolve()
    assert ModelSource.parse(f"dir:{tmp_path}") == ModelSource("dir", str(tmp_path.resolve()))
    assert ModelSource.parse("hub:sentence-transformers/all-MiniLM-L6-v2").value.endswith("MiniLM-L6-v2")
    for bad in ("", "ftp:x", "dir:", "hub"):
        with pytest.raises(BuildError):
            ModelSource.parse(bad)


@pytest.fixture
def built_copy(require_model: None, tmp_path: Path) -> tuple[Path, ModelSource, bool]:
    manifest = json.loads((MODEL_DIR / MANIFEST).read_text())
    copy = tmp_path / "minilm"
    copy.mkdir()
    for name in [*manifest["files"], MANIFEST]:
        shutil.copyfile(MODEL_DIR / name, copy / name)
    return copy, ModelSource.parse(manifest["source"]), "model_fp32.onnx" in manifest["files"]


def test_manifest_records_hashes_and_versions(require_model: None) -> None:
    manifest = json.loads((MODEL_DIR / MANIFEST).read_text())
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "transformers"}
    for name, digest in manifest["files"].items():
        assert sha256_file(MODEL_DIR / name) == digest


def test_second_build_is_a_no_op(built_copy: tuple[Path, ModelSource, bool]) -> None:
    copy, source, fp32 = built_copy
    before = (copy / "model_int8.onnx").stat().st_mtime_ns
    build(copy, str(source), fp32=fp32)  # would take minutes and need the build venv if it rebuilt
    assert (copy / "model_int8.onnx").stat().st_mtime_ns == before


def test_tampered_or_different_build_is_not_current(built_copy: tuple[Path, ModelSource, bool]) -> None:
    copy, source, fp32 = built_copy
    assert is_current(copy, source, fp32)
    assert not is_current(copy, source, not fp32), "other options must rebuild"
    assert not is_current(copy, ModelSource("hub", "someone/else"), fp32), "another source must rebuild"
    with (copy / "tokenizer.json").open("ab") as handle:
        handle.write(b" ")
    assert not is_current(copy, source, fp32)


def test_runtime_classifier_never_imports_torch(require_model: None) -> None:
    code = (
        "import sys; from router.classifier.encoder import Encoder; from router.classifier import model, service; "
        f"Encoder({str(MODEL_DIR)!r}).encode('hi'); "
        "print(any(m == 'torch' or m.startswith(('torch.', 'transformers')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_offline_build_command_is_idempotent(require_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((MODEL_DIR / MANIFEST).read_text())
    argv = ["build", "--out", str(MODEL_DIR), "--source", manifest["source"]]
    if "model_fp32.onnx" in manifest["files"]:
        argv.append("--fp32")
    assert offline_main(argv) == 0
    assert "up to date" in capsys.readouterr().err


def _fake_trained(folder: Path) -> None:
    folder.mkdir()
    (folder / "model_int8.onnx").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    files = {name: sha256_file(folder / name) for name in ("model_int8.onnx", "tokenizer.json")}
    (folder / MANIFEST).write_text(json.dumps({"files": files, "versions": {"torch": "x"}, "training": {"seed": 1}}))


def test_trained_source_is_copied_with_hashes_checked(tmp_path: Path) -> None:
    trained, out = tmp_path / "trained", tmp_path / "out"
    _fake_trained(trained)
    build(out, f"trained:{trained}")
    manifest = json.loads((out / MANIFEST).read_text())
    assert (out / "model_int8.onnx").read_bytes() == b"weights"
    assert manifest["source"] == f"trained:{trained}" and manifest["training"] == {"seed": 1}
    assert is_current(out, ModelSource.parse(f"trained:{trained}"), False)
    (trained / "model_int8.onnx").write_bytes(b"a Git LFS pointer")
    with pytest.raises(BuildError, match="sha256"):
        build(out, f"trained:{trained}", force=True)
    with pytest.raises(BuildError, match="int8 only"):
        build(out, f"trained:{trained}", fp32=True)


def test_committed_trained_model_matches_its_manifest() -> None:
    folder = ROOT / "offline" / "trained" / "minilm-chat"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model_int8.onnx", "tokenizer.json"}
    for name, digest in manifest["files"].items():
        assert sha256_file(folder / name) == digest, f"{name}: committed file differs from its manifest"
