"""What one coding-agent step costs the router: a history it has seen, plus one new tool result (6 KB or 60 KB).

    PYTHONPATH=. .venv/bin/python bench/agent_step.py [--steps 8] [--history 20]

Trial 12 (finding 3) saw 110-280 ms of `classify_ms` per agent step at load ~3, against classifier.timeout_ms 600.
This feeds `StreamSession` (shipped config, real encoder, cache off) a chat whose `history` earlier tool results of 6 KB
the classification memo already holds (each was the new result of an earlier step), then `steps` new steps, each
adding one new tool result (slices of the installed packages' sources); it prints the p50 of the body phase's wall
time and of its `classify` time, and the same step's parts timed apart on one thread: canonical form, the encoder's
head and tail pass, the guard rules, the PII screen (middle windows, validators, token head, cues) and the exact
validators' scan of the rest of the conversation (`_screen_other_turns`).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from bench.session_cpu import _headers
from router import screening
from router.apis import parse
from router.classifier.canonical import canonical
from router.classifier.injection_rules import injection_score, overrides_instructions
from router.classifier.memo import MemoizedClassifier
from router.classifier.model import EncoderClassifier
from router.classifier.pii_rules import find_structured
from router.config import parse_config
from router.extproc.encoder_queue import EncoderQueue
from router.extproc.session import StreamSession
from router.openai_wire import bounded
from router.runtime import build_runtime

ROOT = Path(__file__).resolve().parents[1]


def sources(chars: int, n: int, skip: int = 0) -> list[str]:
    """`n` slices of `chars` characters of installed packages' Python sources, each cut at a line."""
    packages = Path(glob.glob(str(ROOT / ".venv/lib/python3*/site-packages"))[0])
    files = sorted(p for p in packages.rglob("*.py") if p.stat().st_size > chars)[skip::7][:n]
    out = []
    for path in files:
        text = path.read_text(errors="replace")
        out.append(text[: text.rfind("\n", 0, chars) + 1])
    return out


def chat(results: list[str]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent."},
                                      {"role": "user", "content": "Find why our HTTP client hangs and fix the code."}]
    for i, result in enumerate(results):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "read_file", "arguments": f'{{"n": {i}}}'}}
        messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": result}]
    return {"model": "auto", "messages": messages}


def ms(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def parts(clf: EncoderClassifier, payload: dict[str, Any], new: str, max_chars: int) -> dict[str, float]:
    """The step's parts on this thread, in ms."""
    text = canonical(new)
    encoded = clf.encoder.encode(text)
    screen = screening.screen(parse("chat", json.dumps(payload).encode()).chat)
    rest = screen.structured  # one string before 2026-12-02, the strings no pass reads since
    rest_text = bounded(rest, max_chars) if isinstance(rest, str) else "\n".join(bounded(r, max_chars) for r in rest)
    return {
        "canonical": ms(canonical, new),
        "encode (head+tail)": ms(clf.encoder.encode, text),
        "guard rules": ms(lambda: (injection_score(text, new), overrides_instructions(text))),
        "pii (middle, validators, head)": ms(clf._pii, text, encoded),
        "rest of the conversation scan": ms(lambda: find_structured(canonical(rest_text))),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--history", type=int, default=20)
    args = parser.parse_args()
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["semantic_cache"] = {"enabled": False}
    runtime = build_runtime(parse_config(raw, "bench"))
    assert isinstance(runtime.classifier, MemoizedClassifier)
    clf = runtime.classifier.inner
    assert isinstance(clf, EncoderClassifier)
    executor = EncoderQueue(thread_name_prefix="router-worker")
    history = sources(6_000, args.history)

    async def step(results: list[str]) -> StreamSession:
        session = StreamSession(runtime, executor)
        await session.handle(_headers({":path": "/v1/chat/completions", ":method": "POST", "authorization":
                                       "Bearer sk-agent-step", "content-type": "application/json"}, "request_headers"))
        raw = json.dumps(chat(results)).encode()
        await session.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True)))
        return session

    for i in range(len(history)):  # each earlier result was once the new one: the memo holds them
        await step(history[: i + 1])
    for size in (6_000, 60_000):
        walls, classify, split = [], [], []
        for new in sources(size, args.steps, skip=3):
            start = time.perf_counter()
            session = await step([*history, new])
            walls.append((time.perf_counter() - start) * 1000)
            classify.append(session.request.timings["classify"] * 1000)
            split.append(parts(clf, chat([*history, new]), new, runtime.cfg.classifier.max_scan_chars))
        signal = session.request.signal
        print(f"new {size // 1000} KB result after {len(history)} x 6 KB: body phase p50 {statistics.median(walls):.0f} "
              f"ms, classify p50 {statistics.median(classify):.0f} ms (last step: pii {sorted(signal.pii_types)}, "
              f"unscreened {sorted(signal.unscreened)})")
        for name in split[0]:
            print(f"    {name:32s} p50 {statistics.median(s[name] for s in split):6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
