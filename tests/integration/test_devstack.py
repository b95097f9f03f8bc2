"""`python -m devstack [CONFIG]` (what `make run` runs) as a developer starts it, with a config of their own."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

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
