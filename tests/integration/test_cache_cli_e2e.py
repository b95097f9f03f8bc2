"""`semantic-router cache stats | invalidate | purge-expired` beside a running router on embedded Milvus Lite.

One process may open a Lite file, so the CLI talks to the running router's Lite child (the single router's own,
or the supervisor's with workers) instead of starting a second one. Hot answers are off: a repeat is answered
from Lite, so a hit or a miss says what Lite holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.stack import ROOT, Stack


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def stack(request: pytest.FixtureRequest, make_stack: Callable[..., Stack],
          tmp_path_factory: pytest.TempPathFactory) -> Stack:
    db = tmp_path_factory.mktemp("lite") / "cache.db"

    def overrides(cfg: dict[str, Any]) -> None:
        cfg["server"]["workers"] = request.param
        cfg["semantic_cache"] = {"enabled": True, "hot_answers": 0, "uri": str(db)}

    s = make_stack(overrides)
    deadline = time.monotonic() + 60
    while httpx.get(f"http://127.0.0.1:{s.cfg.server.metrics_port}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "router never ready"
        time.sleep(0.2)
    return s


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", "cache", *args, "--config", str(stack.config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def cli(stack: Stack, *args: str) -> dict[str, Any]:
    done = run_cli(stack, *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def ask(stack: Stack, text: str, key: str = "sk-cli") -> httpx.Response:
    r = httpx.post(f"{stack.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=10,
                   json={"model": "auto", "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200
    return r


def until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def lite_processes(db: Path) -> list[int]:
    """Milvus Lite children serving this file, whoever started them."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/milvus") and str(db).encode() in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def test_the_cli_works_on_the_running_routers_lite_child(stack: Stack) -> None:
    """It exited 1 ("another process has it open: stop the router") while the router served the file."""
    db = Path(stack.cfg.semantic_cache.uri)
    text = f"Which river runs through the city of {stack.cfg.server.port}?"
    model = ask(stack, text).headers["x-vsr-selected-model"]
    until(lambda: cli(stack, "stats")["entries"] >= 1, "the answer was never stored")
    assert ask(stack, text).headers.get("x-vsr-cache-hit") == "true"  # the router still serves from its child
    assert cli(stack, "purge-expired")["purged"] == 0
    out = cli(stack, "invalidate", "--model", model)
    assert out["deleted"] >= 1 and out["erasure"].startswith("not yet: a router serves the Lite file")  # no vacuum
    until(lambda: ask(stack, text).headers.get("x-vsr-cache-hit") != "true", "the router still hits after invalidate")
    assert len(lite_processes(db)) == 1  # the router's child only: the CLI started none


def test_a_wrong_answer_is_removed_by_the_entry_its_log_line_names(stack: Stack) -> None:
    """The runbook for "the cache gave me the answer to a different question": the response's x-request-id finds
    the router's line, whose `cache_entry` names the stored entry; `cache invalidate --entry` removes that entry
    alone (before, only the whole tenant namespace or model could go)."""
    wrong, other = (f"Which lake lies nearest to the city of {stack.cfg.server.port}, {n}?" for n in ("north", "south"))
    ask(stack, wrong)
    ask(stack, other)
    until(lambda: ask(stack, wrong).headers.get("x-vsr-cache-hit") == "true", "never stored")
    until(lambda: ask(stack, other).headers.get("x-vsr-cache-hit") == "true", "never stored")
    rid = ask(stack, wrong).headers["x-request-id"]
    log = stack.workdir / "router.log"
    until(lambda: rid in log.read_text(), "no log line for the hit")
    line = next(json.loads(x) for x in log.read_text().splitlines() if rid in x and '"request"' in x)
    assert line["cache"] == "hit"
    assert cli(stack, "invalidate", "--entry", line["cache_entry"])["deleted"] == 1
    until(lambda: ask(stack, wrong).headers.get("x-vsr-cache-hit") != "true", "the removed entry still hits")
    assert ask(stack, other).headers.get("x-vsr-cache-hit") == "true"


def log_line(stack: Stack, rid: str) -> dict[str, Any]:
    log = stack.workdir / "router.log"
    until(lambda: rid in log.read_text(), "no log line for the request")
    line: dict[str, Any] = next(json.loads(x) for x in log.read_text().splitlines() if rid in x and '"request"' in x)
    return line


def test_an_entry_is_invalidated_by_its_whole_id_never_by_a_prefix(stack: Stack) -> None:
    """`--entry 0` deleted every entry whose id began with "0", any tenant's (a `like "0%"` filter): an id is now
    matched exactly, and anything but a whole one (64 hex) is refused."""
    text = f"Which bridge is the oldest in the city of {stack.cfg.server.port}?"
    ask(stack, text, key="sk-tenant-b")
    until(lambda: ask(stack, text, key="sk-tenant-b").headers.get("x-vsr-cache-hit") == "true", "never stored")
    theirs = log_line(stack, ask(stack, text, key="sk-tenant-b").headers["x-request-id"])["cache_entry"]
    for prefix in (theirs[:1], theirs[:16], theirs[:63]):
        refused = run_cli(stack, "invalidate", "--entry", prefix)
        assert refused.returncode == 1 and "64 hex" in refused.stderr, (prefix, refused.stdout, refused.stderr)
    assert ask(stack, text, key="sk-tenant-b").headers.get("x-vsr-cache-hit") == "true"  # the other tenant's entry
    assert cli(stack, "invalidate", "--entry", theirs)["deleted"] == 1
    until(lambda: ask(stack, text, key="sk-tenant-b").headers.get("x-vsr-cache-hit") != "true", "still hits")


def test_the_cli_still_works_after_the_routers_lite_child_was_killed(stack: Stack) -> None:
    """The router (with workers, its supervisor) replaces a killed Lite child and serves again, but the old child's
    Server, dropped once the new one had locked the file, unlinked the lock file: the CLI then found no router on the
    file and exited 1 ("another process has it open and publishes no child to share") until the router restarted."""
    db = Path(stack.cfg.semantic_cache.uri)
    [old] = lite_processes(db)
    os.kill(old, signal.SIGKILL)
    text = f"Which mountain stands nearest to the city of {stack.cfg.server.port}?"
    until(lambda: ask(stack, text).headers.get("x-vsr-cache-hit") == "true", "the router never served from Lite again")
    [new] = lite_processes(db)
    assert new != old
    assert cli(stack, "stats")["entries"] >= 1
    assert lite_processes(db) == [new]  # the CLI used the router's new child and started none
