"""`python -m devstack [CONFIG]` (what `make run` runs) as a developer starts it, with a config of their own."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from devstack.stack import ROOT, derive_config

COMMITTED = ROOT / "envoy" / "envoy.yaml"


def test_another_config_leaves_the_committed_envoy_config_alone(tmp_path: Path) -> None:
    """The Envoy config of another file goes to the run dir (var/): it overwrote envoy/envoy.yaml, the committed
    file a test checks against config/config.yaml, so the next `make test` failed and a commit could carry it."""
    committed = COMMITTED.read_bytes()
    config = derive_config(tmp_path)
    port = yaml.safe_load(config.read_text())["envoy"]["port"]
    proc = subprocess.Popen([sys.executable, "-m", "devstack", str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        banner = next((line for line in proc.stdout if "Semantic router ready" in line), "")
        assert f":{port}/v1" in banner
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    after = COMMITTED.read_bytes()
    COMMITTED.write_bytes(committed)  # failing or not, the checkout is left as it was
    assert after == committed
    run_dir = yaml.safe_load((ROOT / "var" / "envoy.yaml").read_text())
    assert run_dir["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] == port


def test_the_quickstart_request_is_cached_as_the_readme_says(tmp_path: Path) -> None:
    """The README's curl (and the banner `make run` prints) sent no key: never cached (`no_identity`), no
    x-vsr-cache-hit header, so a newcomer concluded the cache was broken."""
    def cached(cfg: dict[str, Any]) -> None:
        cfg["semantic_cache"] = {"enabled": True, "uri": str(tmp_path / "cache.db")}

    config = derive_config(tmp_path, cached)
    port = yaml.safe_load(config.read_text())["envoy"]["port"]
    out = tmp_path / "stack.out"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "devstack", str(config)], cwd=ROOT, stdout=sink,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while "Semantic router ready" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        banner = next(line.strip() for line in out.read_text().splitlines() if line.strip().startswith("curl "))
        readme = (ROOT / "README.md").read_text()
        quickstart = readme.split("Then:\n\n```sh\n", 1)[1].split("```", 1)[0]
        assert _one_line(quickstart) == banner.replace(f":{port}/", ":8801/")
        seen = [_cache_header(banner)]
        while seen[-1] != "true" and time.monotonic() < deadline:  # writes are asynchronous
            time.sleep(0.1)
            seen.append(_cache_header(banner))
        assert seen[0] == "false" and seen[-1] == "true", seen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _one_line(command: str) -> str:
    return re.sub(r"\s+", " ", command.replace("\\\n", " ")).strip()


def _cache_header(command: str) -> str | None:
    """The x-vsr-cache-hit header of the response to a curl -i command line."""
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, timeout=30).stdout
    found = re.search(r"^x-vsr-cache-hit: (\w+)", out, re.MULTILINE | re.IGNORECASE)
    return found.group(1) if found else None
