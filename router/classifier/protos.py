"""Compile proto/semantic_router/v1/classifier.proto into router/_proto/ (gitignored) with grpcio-tools.

`python -m router.classifier.protos` is the build step (Makefile, Dockerfile); `load()` also compiles on
first use when the generated files are missing or older than the .proto, so a fresh checkout just works
wherever grpcio-tools is installed. The proto is mapped to the virtual path router/_proto/..., which makes
the generated modules import each other as `router._proto.semantic_router.v1.*`.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO = "semantic_router/v1/classifier.proto"
OUT_ROOT = REPO_ROOT
GENERATED = REPO_ROOT / "router" / "_proto" / "semantic_router" / "v1"
MODULE = "router._proto.semantic_router.v1.classifier_pb2"
_LOCK = threading.Lock()


class ProtoBuildError(RuntimeError):
    """grpcio-tools is missing or protoc rejected the .proto."""


def _stale() -> bool:
    source = PROTO_ROOT / PROTO
    outputs = [GENERATED / "classifier_pb2.py", GENERATED / "classifier_pb2_grpc.py"]
    return any(not out.is_file() or out.stat().st_mtime < source.stat().st_mtime for out in outputs)


def compile_protos() -> None:
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise ProtoBuildError("grpcio-tools is needed to compile proto/ (pip install grpcio-tools)") from exc
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-Irouter/_proto={PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={OUT_ROOT}",
        f"--pyi_out={OUT_ROOT}",
        f"--grpc_python_out={OUT_ROOT}",
        f"router/_proto/{PROTO}",
    ]
    if protoc.main(args) != 0:
        raise ProtoBuildError(f"protoc failed on {PROTO_ROOT / PROTO}")


def load() -> tuple[ModuleType, ModuleType]:
    """(classifier_pb2, classifier_pb2_grpc), compiling them first if needed."""
    with _LOCK:
        if MODULE not in sys.modules and _stale():
            compile_protos()
        return importlib.import_module(MODULE), importlib.import_module(MODULE + "_grpc")


if __name__ == "__main__":
    compile_protos()
    print(f"compiled {PROTO} into {GENERATED}")
