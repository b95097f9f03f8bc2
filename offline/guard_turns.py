"""The guards on every user turn vs the latest one only, on real multi-turn chat: ShareGPT DEV conversations.

    python -m offline.guard_turns [--config config/config.yaml] [--assistant-conversations 300]

Every request prefix of a conversation (its messages up to the k-th user turn, k >= 2) is decided by the config's
real policy twice: with the latest user turn's classification alone (main before this change), and with the earlier
user turns joined (`signals.with_earlier_turns`, what the router does now). Each distinct user turn is classified
once, as the router would (bounded to max_scan_chars, no memo), and its pass timed. Cost per request: a warm memo
(the conversation's earlier requests reached this replica, and their entries were not evicted) answers every
earlier turn, so 0 passes; a cold one (another replica, a fabricated history, evicted entries) pays a pass per
distinct earlier turn. Conversations with a user turn matching chat_data.JAILBREAK_LIKE (real attacks in ShareGPT)
are counted apart, never as genuine. A sample of conversations also has its assistant turns classified, to see what
screening them would do. Writes bench/results/guard_turns.json (ids and counts, no prompt text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from offline.chat_data import DEV, JAILBREAK_LIKE, sharegpt_records, sharegpt_split
from router import openai_wire as wire
from router.classifier.memo import MEMO_ENTRIES, MemoizedClassifier
from router.classifier.model import load_classifier
from router.config import RouterConfig, load_config
from router.errors import ContentBlocked, JailbreakBlocked
from router.extproc.screen import MAX_EARLIER_PASSES
from router.extproc.session import StreamSession
from router.openai_wire import ChatRequest
from router.policy import Policy
from router.runtime import Runtime
from router.signals import Classification, with_earlier_turns

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"human": "user", "user": "user"}  # every other speaker (gpt, chatgpt, bing, ...) is the assistant


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    messages: list[dict[str, str]]

    def prefixes(self, first: int = 2) -> Iterator[tuple[int, list[dict[str, str]]]]:
        """(k, the messages up to and including the k-th user turn) for k >= first: the requests a client sent."""
        k = 0
        for i, m in enumerate(self.messages):
            if m["role"] == "user":
                k += 1
                if k >= first:
                    yield k, self.messages[: i + 1]


def dev_conversations() -> list[Conversation]:
    """ShareGPT DEV conversation parts with at least two user turns (parts share their conversation's split)."""
    out = []
    for record in sharegpt_records():
        if sharegpt_split(str(record["id"]).rsplit("_", 1)[0]) != DEV:
            continue
        messages = [{"role": ROLES.get(t.get("from"), "assistant"), "content": t["value"]}
                    for t in record.get("conversations", []) if isinstance(t.get("value"), str) and t["value"].strip()]
        if sum(m["role"] == "user" for m in messages) >= 2:
            out.append(Conversation(str(record["id"]), messages))
    return out


class Scores:
    """Each distinct (bounded) text classified once, with the time its pass took."""

    def __init__(self, cfg: RouterConfig) -> None:
        self.classifier = load_classifier(cfg)
        self.max_chars = cfg.classifier.max_scan_chars
        self.results: dict[str, Classification] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, text: str) -> Classification:
        key = wire.bounded(text, self.max_chars)
        if key not in self.results:
            start = time.perf_counter()
            self.results[key] = self.classifier.classify(key)
            self.seconds[key] = time.perf_counter() - start
        return self.results[key]

    def pass_ms(self, text: str) -> float:
        return 1000 * self.seconds[wire.bounded(text, self.max_chars)]


def guard_block(policy: Policy, messages: list[dict[str, str]], signal: Classification) -> str | None:
    """The guard the config's policy blocks this request with, or None."""
    try:
        policy.decide(ChatRequest(body={"model": "auto", "messages": messages}, model="auto", stream=False), signal)
    except (JailbreakBlocked, ContentBlocked) as exc:
        return exc.code
    return None


def screened(scores: Scores, messages: list[dict[str, str]], roles: tuple[str, ...]) -> Classification:
    """The latest user turn's classification joined with every earlier message of `roles` (as the session does)."""
    latest = max(i for i, m in enumerate(messages) if m["role"] == "user")
    earlier = [(i, scores(m["content"])) for i, m in enumerate(messages[:latest]) if m["role"] in roles]
    return with_earlier_turns(scores(messages[latest]["content"]), earlier)


def measure(cfg: RouterConfig, conversations: list[Conversation], assistant_sample: int, seed: int = 0) -> dict:
    policy, scores = Policy(cfg), Scores(cfg)
    attacks = {c.id for c in conversations if any(m["role"] == "user" and JAILBREAK_LIKE.search(m["content"])
                                                  for m in c.messages)}
    rows: dict[str, list[dict]] = {"genuine": [], "jailbreak_like": []}
    for c in conversations:
        for k, messages in c.prefixes(first=1):
            latest = messages[-1]["content"]
            earlier = {wire.bounded(m["content"], scores.max_chars) for m in messages[:-1] if m["role"] == "user"}
            earlier.discard(wire.bounded(latest, scores.max_chars))  # the latest's own pass is in the memo by then
            rows["jailbreak_like" if c.id in attacks else "genuine"].append({
                "id": c.id, "k": k,
                "latest_only": guard_block(policy, messages, scores(latest)),
                "all_user_turns": guard_block(policy, messages, screened(scores, messages, ("user",))),
                "cold_passes": len(earlier), "cold_ms": sum(1000 * scores.seconds[t] for t in earlier)})
    report = {"model_dir": str(cfg.classifier.model_dir), "conversations": len(conversations),
              "jailbreak_like_conversations": len(attacks), "distinct_user_turns": len(scores.results),
              "pass_ms_p50": round(1000 * statistics.median(scores.seconds.values()), 2),
              **{name: summary(r) for name, r in rows.items() if r}}
    sample = random.Random(seed).sample([c for c in conversations if c.id not in attacks], assistant_sample)
    report["assistant_turns"] = assistant_turns(policy, scores, sample)
    genuine = [c for c in conversations if c.id not in attacks]
    report["warm_memo_replay"] = [asyncio.run(warm_replay(cfg, scores, genuine, active, entries))
                                  for active in (500, len(genuine)) for entries in (MEMO_ENTRIES, 4 * MEMO_ENTRIES)]
    return report


class Recorded:
    """The classifier a warm replay runs on: each text's recorded result, and a count of the passes asked for."""

    def __init__(self, scores: Scores) -> None:
        self.scores, self.calls = scores, 0

    def classify(self, text: str) -> Classification:
        self.calls += 1
        return self.scores.results[text]


async def warm_replay(cfg: RouterConfig, scores: Scores, conversations: list[Conversation], active: int,
                      entries: int) -> dict:
    """Every request of every conversation through the real StreamSession and a MemoizedClassifier of `entries` (one
    API key), `active` conversations at a time interleaved turn by turn (each one's first request, then each one's
    second, ...): the encoder passes of a replica that saw the conversations' earlier requests, all turns vs the
    latest. Each active conversation keeps all its user turns in the memo: past `entries` in all, LRU evicts them."""
    recorded = Recorded(scores)
    runtime = Runtime(cfg=cfg, policy=Policy(cfg), classifier=MemoizedClassifier(recorded, entries), cache=None)
    requests = sorted((i // active, k, i, m) for i, c in enumerate(conversations) for k, m in c.prefixes(first=1))
    latest_new, seen = 0, set()
    with ThreadPoolExecutor(max_workers=1) as executor:
        for *_, messages in requests:
            latest = wire.bounded(messages[-1]["content"], scores.max_chars)
            latest_new += latest not in seen
            seen.add(latest)
            session = StreamSession(runtime, executor)
            await session.handle(_headers())
            body = json.dumps({"model": "auto", "messages": messages}).encode()
            await session.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
    return {"active_conversations": active, "memo_entries": entries, "requests": len(requests), "passes": recorded.calls, "passes_latest_turn_only": latest_new,
            "extra_passes_per_request": round((recorded.calls - latest_new) / len(requests), 4)}


def _headers() -> pb.ProcessingRequest:
    values = {":method": "POST", ":path": "/v1/chat/completions", "authorization": "Bearer sk-replay"}
    hs = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=hs)))


def summary(every_request: list[dict]) -> dict:
    """Block rates per request prefix (k >= 2), latest-only vs all user turns, and the cold memo's cost; per
    conversation, counting its first request too."""
    rows = [r for r in every_request if r["k"] >= 2]
    n = len(rows)
    latest = sum(r["latest_only"] is not None for r in rows)
    every = sum(r["all_user_turns"] is not None for r in rows)
    passes = sorted(r["cold_passes"] for r in rows)
    cold_ms = sorted(r["cold_ms"] for r in rows)
    new = [r for r in rows if r["all_user_turns"] is not None and r["latest_only"] is None]
    return {
        "request_prefixes": n, "blocked_latest_only": latest, "blocked_all_user_turns": every,
        "blocked_latest_only_rate": round(latest / n, 5), "blocked_all_user_turns_rate": round(every / n, 5),
        "by_guard_all_user_turns": {g: sum(r["all_user_turns"] == g for r in rows)
                                    for g in ("jailbreak_detected", "content_blocked")},
        "conversations_with_a_block_latest_only": len({r["id"] for r in rows if r["latest_only"]}),
        "conversations_with_a_block_all_user_turns": len({r["id"] for r in rows if r["all_user_turns"]}),
        # A turn that fires as an earlier turn fired when it was the latest (k = 1 included): the same conversations.
        "conversations_with_a_block_incl_first_request_latest_only": len(
            {r["id"] for r in every_request if r["latest_only"]}),
        "conversations_with_a_block_incl_first_request_all_user_turns": len(
            {r["id"] for r in every_request if r["all_user_turns"]}),
        # Prefixes blocked only because an earlier turn fired: in live traffic under `block`, that turn was itself
        # refused when it was the latest, so the conversation would not have gone on with it (see the README).
        "new_blocks_after_an_earlier_turn_fired": [f"{r['id']}@{r['k']}" for r in new][:50],
        "extra_passes_cold_mean": round(statistics.fmean(passes), 2),
        "extra_passes_cold_p50_p95_p99_max": [_pct(passes, q) for q in (0.5, 0.95, 0.99)] + [passes[-1]],
        "extra_ms_cold_p50_p95_p99": [round(_pct(cold_ms, q), 1) for q in (0.5, 0.95, 0.99)],
        "cold_over_n_passes_rate": {cap: round(sum(p > cap for p in passes) / n, 4)
                                    for cap in sorted({4, 8, 16, 32, MAX_EARLIER_PASSES})},
    }


def assistant_turns(policy: Policy, scores: Scores, sample: list[Conversation]) -> dict:
    """What screening assistant turns too would do: per-turn fire rate and per-prefix block rate on `sample`."""
    prefixes = [m for c in sample for _, m in c.prefixes()]
    both = sum(guard_block(policy, m, screened(scores, m, ("user", "assistant"))) is not None for m in prefixes)
    users = sum(guard_block(policy, m, screened(scores, m, ("user",))) is not None for m in prefixes)
    texts = {x["content"] for m in prefixes for x in m if x["role"] == "assistant"}  # those a request carries
    return {"conversations": len(sample), "request_prefixes": len(prefixes), "assistant_turns": len(texts),
            "blocked_all_user_turns": users, "blocked_user_and_assistant_turns": both,
            "assistant_pass_ms_p50": round(statistics.median(scores.pass_ms(t) for t in texts), 2),
            "assistant_turns_per_prefix_mean": round(statistics.fmean(
                sum(x["role"] == "assistant" for x in m) for m in prefixes), 2)}


def _pct(values: list, q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline.guard_turns", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--assistant-conversations", type=int, default=300)
    parser.add_argument("--limit", type=int, default=0, help="first N DEV conversations only (a quick look)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "guard_turns.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"enabled": True})})
    conversations = dev_conversations()
    if args.limit:
        conversations = conversations[: args.limit]
    report = measure(cfg, conversations, min(args.assistant_conversations, len(conversations) // 2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
