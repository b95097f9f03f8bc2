"""Build step: compile proto/ (the router's own gRPC API) into the package with grpcio-tools.

The generated modules (`router._proto.semantic_router.v1.classifier_pb2[_grpc]`) ship inside the wheel, so
the installed router never needs grpcio-tools or the .proto at run time. An editable install writes them
into the source tree (gitignored) instead of the build directory.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO = "semantic_router/v1/classifier.proto"


def compile_protos(out_root: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    package = out_root / "router" / "_proto"
    for folder in (package, package / "semantic_router", package / "semantic_router" / "v1"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-Irouter/_proto={ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"router/_proto/{PROTO}",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on proto/{PROTO}")


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        super().run()
        compile_protos(ROOT if self.editable_mode else Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos})
