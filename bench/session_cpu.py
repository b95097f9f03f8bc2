"""Router CPU per request without gRPC or Envoy: what the session, classifier and cache cost, thread by thread.

bench/load.py measures the whole stack, where the router's CPU per request also holds grpc.aio's machinery and
swings with whatever else the machine runs. This script feeds `StreamSession` the four messages Envoy sends for
one chat completion (request headers, request body, response headers, response body), then records it like the
server does (metrics, log line), on the shipped config with the real encoder and a real Milvus Lite child:

- `keyword_only`: classifier and cache off;
- `miss`: classifier and Lite cache on, a new prompt per request (each one also stored, as on the real path); the
  prompts differ only in a number, so every lookup finds top_k stored candidates above the cosine floor and the
  verifier judges them all (a number veto rejects them), which real new prompts rarely cause;
- `miss_chat`: the same with real first turns instead (ShareGPT TRAIN, `CHAT_PROMPTS`, in file order): lengths as
  in real chat (median 254 characters, some over 100k), and a lookup finds a candidate only when one is close;
- `hit`: the same, one prompt asked over and over (the classification memo and the hot answers reply).

It prints CPU milliseconds per request: the event loop thread's (`loop`: session, policy, cache facade and
verifier, metrics, log line), the classifier's executor threads' (`classifier`: tokeniser, ONNX run, heads,
PII), the Milvus client threads' (`milvus_client`: pymilvus search and the batched upserts), the whole
process's (`process`: all of these and the rest) and the Lite child's (`lite`), and wall time. `--profile` adds the event loop thread's cProfile, by cumulative CPU time.

    .venv/bin/python bench/session_cpu.py [--scenario miss] [--requests 300] [--concurrency 1 8] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.stack import ROOT
from router.cache.milvus import MilvusStore
from router.config import parse_config
from router.extproc.encoder_queue import EncoderQueue
from router.extproc.server import GIL_SWITCH_INTERVAL_S, _record
from router.extproc.session import StreamSession
from router.observability import logs
from router.runtime import Runtime, build_runtime

PROMPT = "How do I convert miles to kilometres for a road trip? (trip {run}-{i})"  # bench/load.py's shape
CHAT_PROMPTS = ROOT / "offline" / "data" / "train" / "chat_domain_train.jsonl"
ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen3-4b",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "About 1.609 km per mile."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
}).encode()


def _headers(values: dict[str, str], which: str) -> pb.ProcessingRequest:
    hs = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    return pb.ProcessingRequest(**{which: pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=hs))})


def messages(text: str) -> list[pb.ProcessingRequest]:
    """The four messages of one routed chat completion, as Envoy sends them."""
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()
    return [
        _headers({":path": "/v1/chat/completions", ":method": "POST", "content-type": "application/json",
                  "authorization": "Bearer sk-load-test", "content-length": str(len(body))}, "request_headers"),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
        _headers({":status": "200", "content-type": "application/json"}, "response_headers"),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=ANSWER, end_of_stream=True)),
    ]


async def one(runtime: Runtime, executor: EncoderQueue, text: str) -> StreamSession:
    session = StreamSession(runtime, executor)
    for message in messages(text):
        if (await session.handle(message)).HasField("immediate_response"):
            break  # a cache hit or an error: Envoy answers the client, the stream ends
    _record(session)
    return session


POOLS = {"router-worker": "classifier", "milvus-": "milvus_client"}  # thread name prefix -> part


def _cpu_s(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_part(runtime: Runtime) -> dict[str, float]:
    """CPU seconds so far of this process's threads by pool (thread name prefix) and of its Milvus Lite child."""
    out = {"loop": time.thread_time(), "process": time.process_time(), "classifier": 0.0, "milvus_client": 0.0,
           "lite": 0.0}
    for thread in threading.enumerate():
        part = next((p for prefix, p in POOLS.items() if thread.name.startswith(prefix)), None)
        if part is not None and thread.native_id is not None:
            out[part] += _cpu_s(Path(f"/proc/self/task/{thread.native_id}/stat"))
    backend = runtime.cache.backend if runtime.cache is not None else None
    lite = backend.lite if isinstance(backend, MilvusStore) else None
    if lite is not None and lite.pid is not None:
        out["lite"] = _cpu_s(Path(f"/proc/{lite.pid}/stat"))
    return out


def config(scenario: str, tmp: Path) -> Any:
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if scenario == "keyword_only":
        raw["classifier"]["enabled"] = False
        raw["semantic_cache"] = {"enabled": False}
    else:
        raw["semantic_cache"] = {"enabled": True, "uri": str(tmp / "milvus_lite.db")}
    return parse_config(raw, "bench")


async def run(scenario: str, n: int, concurrency: int, profile: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-session-cpu-"))
    runtime = build_runtime(config(scenario, tmp))
    executor = EncoderQueue(thread_name_prefix="router-worker")  # as the server's
    run_id = os.urandom(4).hex()
    for i in range(30):  # warm-up: Lite connected, ONNX arenas grown, first entries stored
        await one(runtime, executor, PROMPT.format(run=f"warm{run_id}", i=i))

    chat = [json.loads(line)["text"] for line in CHAT_PROMPTS.open()] if scenario == "miss_chat" else []

    def prompt(i: int) -> str:
        if chat:
            return chat[i % len(chat)]
        return PROMPT.format(run=run_id, i=0 if scenario == "hit" else i)

    await one(runtime, executor, prompt(0))  # `hit`: answered and cached once before timing
    if runtime.cache is not None:
        await runtime.cache.flush()
    profiler = cProfile.Profile(time.thread_time) if profile else None
    before, wall0 = cpu_by_part(runtime), time.perf_counter()
    if profiler:
        profiler.enable()
    for start in range(0, n, concurrency):  # `concurrency` streams at once, like that many Envoy connections
        done = await asyncio.gather(*(one(runtime, executor, prompt(i))
                                      for i in range(start, min(start + concurrency, n))))
    last = done[-1]
    if profiler:
        profiler.disable()
    after, wall1 = cpu_by_part(runtime), time.perf_counter()
    if runtime.cache is not None:
        await runtime.cache.flush()
    await runtime.close()
    executor.shutdown()
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    per = 1000 / n
    return {"scenario": scenario, "requests": n, "concurrency": concurrency,
            "switch_interval_ms": sys.getswitchinterval() * 1000, "last_cache_result": last.request.cache_result,
            **{f"{part}_cpu_ms": round((after[part] - before[part]) * per, 3) for part in after},
            "wall_ms": round((wall1 - wall0) * per, 3), "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["keyword_only", "miss", "miss_chat", "hit"], nargs="+",
                        default=["keyword_only", "miss", "hit"])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--switch-interval-ms", type=float, default=GIL_SWITCH_INTERVAL_S * 1000,
                        help="the GIL switch interval (default: the server's)")
    parser.add_argument("--profile", action="store_true", help="cProfile of the event loop thread")
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval_ms / 1000)
    # The server's JSON log lines (structlog's unconfigured default renders for a console, ~10x the cost)
    logs.configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115  # open for the process's life
    for scenario in args.scenario:
        for concurrency in args.concurrency:
            print(json.dumps(asyncio.run(run(scenario, args.requests, concurrency, args.profile))), flush=True)


if __name__ == "__main__":
    main()
