"""`semantic-router cache invalidate` by identity, as a `make run` user meets it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from devstack.stack import _persistent_cache_secret
from router.cache.cli import namespace_for
from router.config import CacheConfig

ENV = CacheConfig().hmac_secret_env


def test_missing_secret_error_gives_the_command_that_reads_the_dev_stacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dev stack hands its router a secret kept in var/; the CLI, run from another shell, does not see it."""
    monkeypatch.setenv(ENV, "placeholder")  # recorded, so the value the dev stack exports is undone after the test
    monkeypatch.delenv(ENV)
    monkeypatch.chdir(tmp_path)
    _persistent_cache_secret(tmp_path / "var" / "cache-hmac.secret")
    router_secret = os.environ.pop(ENV)  # what `make run` gave the router; this shell has none

    with pytest.raises(ValueError, match=ENV) as refused:
        namespace_for(CacheConfig(), None, None, "sk-demo")
    command = re.search(rf"{ENV}=\$\(cat [^)]+\)", str(refused.value))
    assert command, str(refused.value)
    shown = subprocess.run(["sh", "-c", f'{command.group(0)}; printf %s "${ENV}"'], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert shown == router_secret

    monkeypatch.setenv(ENV, shown)
    assert re.fullmatch(r"[0-9a-f]{32}", namespace_for(CacheConfig(), None, None, "sk-demo"))
