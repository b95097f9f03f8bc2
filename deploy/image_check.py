"""Build the project's Dockerfile for real and route a request through the container (a CI step).

    make image-check                 # = .venv/bin/python deploy/image_check.py (root: apt-get, debootstrap, podman)

There is no Docker engine and no image registry here, so, as Debian's own tools allow:
1. tools: podman, debootstrap and runc from Debian when missing;
2. base image: a Debian bookworm minbase with python3 (3.11), python3-venv and libgomp1, made by debootstrap
   and imported with `podman import` (the rootfs is cached as var/image/<tag>.tar: later runs only import it,
   or reuse the image when podman still has it);
3. `podman build` of the Dockerfile with no network: --build-arg SOURCE=wheelhouse installs the wheel and
   its dependencies from var/wheelhouse (`make wheelhouse`) and copies models/ (`make models`), both given
   as named build contexts; PYTHON_IMAGE is the debootstrap base;
4. run the image as deploy/kubernetes/deployment.yaml runs the router container: its command, its user, a
   read-only root filesystem, no capabilities, no privilege escalation, config/ mounted read-only (the
   shipped config/config.yaml, unchanged: classifier on, the default Milvus Lite cache in var/), its
   emptyDir volumes as empty world-writable directories. `--network host` inside a loopback-only network
   namespace of its own (entered with nsenter; `ip netns exec` would hide the cgroup mounts podman needs),
   where the real Envoy and the demo upstreams (devstack) run too: the shipped ports, like a Pod's;
5. check: /readyz answers 200 (config, model, cache), the image's HEALTHCHECK passes, a chat request through
   Envoy with the official `openai` client gets 200 from the chosen demo upstream with
   `x-vsr-selected-model`, the Classify gRPC API answers, and SIGTERM stops the container with exit 0.
Exits 1 (with the container's log) when any step fails. Timings of each step are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.stack import Stack  # after the sys.path line: run as a script

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "libgomp1")
IMAGE = "localhost/semantic-router:check"
WHEELHOUSE = ROOT / "var" / "wheelhouse"
MODELS = ROOT / "models"
CACHE = ROOT / "var" / "image"
MANIFEST = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
# Flags every podman call needs on these machines: crun fails on the cgroup layout, and podman's default
# ulimits fail with "setrlimit: operation not permitted".
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
RUNTIME_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
PROMPT = "Prove that sqrt(2) is irrational"  # a math keyword: the config sends it to gpt-oss-120b
NETNS = "vsr-image"
CONTAINER = "vsr-image-check"


class CheckFailed(Exception):
    pass


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, check=True, text=True, **kwargs)


@contextmanager
def step(name: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.monotonic()
    print(f"== {name}", flush=True)
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start
        print(f"== {name}: {timings[name]:.1f} s", flush=True)


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "debootstrap", "runc") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise CheckFailed(f"{', '.join(missing)} missing: `apt-get install podman debootstrap runc` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "podman", "debootstrap", "runc"], env=env)


def base_image() -> str:
    """The bookworm base, tagged by what it holds so a changed package list makes a new one."""
    key = hashlib.sha256(" ".join([SUITE, *BASE_PACKAGES]).encode()).hexdigest()[:12]
    tag = f"localhost/vsr-debian-py:{SUITE}-{key}"
    if subprocess.run([*PODMAN, "image", "exists", tag], check=False).returncode == 0:
        print(f"{tag}: already in podman's store")
        return tag
    tarball = CACHE / f"debian-{SUITE}-py-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
                 str(rootfs), MIRROR], stdout=subprocess.DEVNULL)
            # As slim images do: no package lists or downloaded .debs in the base.
            run(["chroot", str(rootfs), "apt-get", "clean"])
            for lists in (rootfs / "var/lib/apt/lists").iterdir():
                if lists.is_file():
                    lists.unlink()
            partial = tarball.with_suffix(".tar.partial")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.rename(tarball)
    run([*PODMAN, "import", "-q", str(tarball), tag], stdout=subprocess.DEVNULL)
    return tag


def build_image(base: str) -> None:
    if not list(WHEELHOUSE.glob("semantic_router-*.whl")):
        raise CheckFailed(f"no wheel in {WHEELHOUSE}: run `make wheelhouse`")
    if not (MODELS / "minilm" / "manifest.json").exists():
        raise CheckFailed("models/minilm is missing: run `make models`")
    run([*PODMAN, "build", *RUNTIME_FLAGS, "--network", "none", "--format", "docker",
         "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", "SOURCE=wheelhouse",
         "--build-context", f"wheels={WHEELHOUSE}", "--build-context", f"models={MODELS}",
         "--target", "runtime", "-t", IMAGE, str(ROOT)])


def router_container() -> dict[str, Any]:
    deployment = yaml.safe_load(MANIFEST.read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "router")
    return {"container": container, "volumes": {v["name"]: v for v in pod["volumes"]}}


def podman_run_args(workdir: Path, secret: str) -> list[str]:
    """`podman run` for the manifest's router container, read from deploy/kubernetes/deployment.yaml."""
    spec = router_container()
    container, volumes = spec["container"], spec["volumes"]
    security = container["securityContext"]
    args = [*PODMAN, "run", "-d", "--name", CONTAINER, *RUNTIME_FLAGS, "--network", "host",
            "--user", str(security["runAsUser"]), "-e", f"VSR_CACHE_HMAC_SECRET={secret}"]
    for var in container.get("env", []):  # plain values from the manifest; secrets are passed above
        if "value" in var:
            args += ["-e", f"{var['name']}={var['value']}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for cap in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            if mount["mountPath"] != "/app/config":
                raise CheckFailed(f"unexpected ConfigMap mount {mount['mountPath']}")
            source = ROOT / "config"
        elif "emptyDir" in volume:  # an emptyDir is an empty directory, writable by any uid
            source = workdir / mount["name"]
            source.mkdir()
            source.chmod(0o777)
        else:
            raise CheckFailed(f"volume {mount['name']}: only configMap and emptyDir are run here")
        args += ["-v", f"{source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"]
    return [*args, IMAGE, *container["command"]]


def wait_ready(url: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        state = subprocess.run([*PODMAN, "inspect", "-f", "{{.State.Running}}", name], check=False,
                               capture_output=True, text=True).stdout.strip()
        if state != "true":
            raise CheckFailed(f"the container stopped before it was ready (running={state!r})")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as err:
            last = err.read().decode(errors="replace")
        except OSError as err:
            last = str(err)
        time.sleep(0.5)
    raise CheckFailed(f"{url} not ready after {timeout:.0f} s: {last}")


def check_routing(stack: Stack) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=stack.base_url, api_key="sk-image-check", max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": PROMPT}])
    reply = raw.parse()
    selected = raw.headers.get("x-vsr-selected-model")
    if raw.status_code != 200 or selected != "gpt-oss-120b" or reply.model != "gpt-oss-120b":
        raise CheckFailed(f"expected 200 from gpt-oss-120b, got {raw.status_code}, "
                          f"x-vsr-selected-model={selected!r}, answered by {reply.model!r}")
    return {"status": raw.status_code, "x-vsr-selected-model": selected,
            "x-vsr-selected-category": raw.headers.get("x-vsr-selected-category"),
            "answer": reply.choices[0].message.content}


def check_classify(stack: Stack) -> dict[str, Any]:
    import grpc

    from router._proto.semantic_router.v1 import classifier_pb2 as pb2
    from router._proto.semantic_router.v1 import classifier_pb2_grpc as pb2_grpc

    with grpc.insecure_channel(f"{stack.cfg.server.host}:{stack.cfg.server.port}") as channel:
        reply = pb2_grpc.ClassifierStub(channel).Classify(  # type: ignore[no-untyped-call]
            pb2.ClassifyRequest(text="Solve for x: 3x + 5 = 20"), timeout=10)
    if reply.category != "math":
        raise CheckFailed(f"Classify answered {reply}")
    return {"category": reply.category, "confidence": round(reply.confidence, 3), "source": reply.source}


def run_and_route(timings: dict[str, float]) -> None:
    """Inside the network namespace: the container, then upstreams and Envoy beside it, then the checks."""
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([*PODMAN, "rm", "-f", "-t", "0", CONTAINER], check=False, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=CACHE) as tmp:
        workdir = Path(tmp)
        stack = Stack(ROOT / "config" / "config.yaml", workdir, log_to=workdir)
        started = False
        try:
            with step("run: container ready (/readyz 200, HEALTHCHECK)", timings):
                # podman logs "unable to get systemd connection" for the HEALTHCHECK's timer (no systemd here):
                # harmless, the check runs the HEALTHCHECK itself below with `podman healthcheck run`.
                run(podman_run_args(workdir, secrets.token_hex(16)), stdout=subprocess.DEVNULL)
                started = True
                cmd_in_image = json.loads(subprocess.run(
                    [*PODMAN, "image", "inspect", "-f", "{{json .Config.Cmd}}", IMAGE],
                    check=True, capture_output=True, text=True).stdout)
                if cmd_in_image != router_container()["container"]["command"]:
                    raise CheckFailed(f"the image's CMD {cmd_in_image} is not the manifest's command")
                wait_ready(f"http://127.0.0.1:{stack.cfg.server.metrics_port}/readyz", CONTAINER)
                run([*PODMAN, "healthcheck", "run", CONTAINER], stdout=subprocess.DEVNULL)
            with step("route: upstreams + Envoy beside it, one chat request, Classify", timings):
                stack.start_upstreams()
                stack.start_envoy()
                print("chat:", json.dumps(check_routing(stack)))
                print("classify:", json.dumps(check_classify(stack)))
            with step("stop: SIGTERM, exit 0", timings):
                run([*PODMAN, "stop", "-t", "20", CONTAINER], stdout=subprocess.DEVNULL)
                code = subprocess.run([*PODMAN, "inspect", "-f", "{{.State.ExitCode}}", CONTAINER], check=True,
                                      capture_output=True, text=True).stdout.strip()
                if code != "0":
                    raise CheckFailed(f"the router exited with {code} on SIGTERM")
        except BaseException:
            if started:
                print("---- container log (last 60 lines)", file=sys.stderr)
                subprocess.run([*PODMAN, "logs", "--tail", "60", CONTAINER], check=False)
            raise
        finally:
            stack.stop()
            if started:
                subprocess.run([*PODMAN, "rm", "-f", "-t", "0", CONTAINER], check=False, capture_output=True)


def in_own_netns(timings: dict[str, float]) -> None:
    """Re-run this script's run phase in a loopback-only network namespace (created once, kept)."""
    if not Path(f"/run/netns/{NETNS}").exists():
        run(["ip", "netns", "add", NETNS])
    run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])
    with step(f"run phase in network namespace {NETNS}", timings):
        run(["nsenter", f"--net=/run/netns/{NETNS}", sys.executable, str(Path(__file__).resolve()), "--run-only"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help=f"run the existing {IMAGE}")
    parser.add_argument("--run-only", action="store_true", help="the run phase, in the current network namespace")
    args = parser.parse_args()
    timings: dict[str, float] = {}
    start = time.monotonic()
    try:
        if args.run_only:
            run_and_route(timings)
            return 0
        if os.geteuid() != 0:
            raise CheckFailed("run as root: apt-get, debootstrap, rootful podman and a network namespace")
        if not args.skip_build:
            with step("tools (podman, debootstrap, runc)", timings):
                ensure_tools()
            with step("base image (debootstrap bookworm, podman import)", timings):
                base = base_image()
            with step("podman build (SOURCE=wheelhouse, no network)", timings):
                build_image(base)
        in_own_netns(timings)
    except (CheckFailed, subprocess.CalledProcessError, OSError, TimeoutError, RuntimeError) as exc:
        print(f"image check FAILED: {exc}", file=sys.stderr)
        return 1  # anything else (the openai client's, grpc's errors) fails with its traceback, also exit 1
    total = time.monotonic() - start
    print("image check passed: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
