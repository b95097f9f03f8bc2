"""Fixtures that start the real stack (Envoy binary, router process, demo upstreams) per test module."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack import ROOT, Stack

_port_blocks = itertools.count(0)


def stack_config(tmp: Path, overrides: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The shipped config on ports of its own (so tests never collide with `make run`)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    base = 20000 + 100 * next(_port_blocks)
    cfg["server"].update(port=base + 51, metrics_port=base + 90)
    cfg["envoy"].update(port=base + 1, admin_port=base + 99)
    for i, model in enumerate(cfg["models"].values()):
        model["endpoints"] = [{"address": "127.0.0.1", "port": base + 10 + i}]
    cfg["semantic_cache"] = {"enabled": False}
    cfg["classifier"]["enabled"] = False
    if overrides:
        overrides(cfg)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Start a stack for a config derived from config/config.yaml; stopped at module end."""
    started: list[Stack] = []

    def _make(overrides: Callable[[dict[str, Any]], None] | None = None) -> Stack:
        tmp = tmp_path_factory.mktemp("stack")
        stack = Stack(stack_config(tmp, overrides), tmp, log_to=tmp)
        started.append(stack)
        try:
            stack.start()
        except Exception:
            stack.stop()
            raise
        return stack

    yield _make
    for stack in started:
        stack.stop()


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()
