"""Subcommand `explain`: why the router would send one request to the model it picks, or refuse it.

The request goes through the router's own per-request code, not a model of it: a StreamSession is fed the messages
Envoy would send (request headers, the body, a 200 answer's headers), so parsing, screening, the classifier, the
policy's decision, the guards, the PII rule and the cache's skip reasons are the ones a serving router runs. What
is not per request stays out: no Envoy, no model server, and the cache is an empty in-memory store with the config's
settings (explain says what the cache policy does, not whether an entry exists). The session's findings are then
named with the config rule that made each matter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from router.config import CONFIG_HELP, DEFAULT_CONFIG, RouterConfig, load_config
from router.envoy_config import stripped_client_headers
from router.observability import logs
from router.policy import GUARDS, Decision, Policy, guard_score
from router.resilience import UPSTREAM_MODEL_HEADER
from router.signals import NO_SIGNAL, Classification

if TYPE_CHECKING:
    from router.config import Category
    from router.extproc.state import RequestState

CHAT_PATH = "/v1/chat/completions"
# The router's classifier.timeout_ms is for a warm worker under load; a cold CLI's first pass may take longer, which
# would explain a timeout instead of the request (on_failure decides a late pass: README "Behaviour").
_PATIENT_MS = 120_000
_SKIPS = {
    "category_disabled": "categories[{category}].cache.enabled: false",
    "no_store": "the request's cache-control or x-vsr-cache-control says no-store",
    "stateful": "the answer depends on state the server keeps (Responses store, previous_response_id, conversation)",
    "unscreened": "the PII screen did not read all of the conversation (too long, a document it cannot read, or "
                  "the classifier failed open): what was not screened is not stored",
    "pii": "the PII screen found personal data, which the cache never holds",
    "no_identity": "no API key or tenant header names the cache tenant (the client's authorization header: "
                   "--header 'authorization=Bearer ...')",
    "not_user_turn": "the last message is not a user turn",
    "non_text_content": "the last turn holds parts other than text",
    "empty_prompt": "the last turn is empty",
    "prompt_too_long": "the last turn is longer than the cache keys",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("explain", help="why the router would route one request to its model (or refuse it): "
                                              "the decision and each rule behind it, run through the router's code")
    p.add_argument("prompt", nargs="?", help="a user turn; without it the request body is read from --body or stdin")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("--model", default="auto", help="the model a PROMPT asks for (default: auto)")
    p.add_argument("--body", metavar="FILE", help="the request's JSON body as the client sends it (- for stdin)")
    p.add_argument("--path", default=CHAT_PATH, help=f"the API path it is sent to (default {CHAT_PATH}; "
                                                     "/v1/responses, /v1/messages)")
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="a request header as the client sends it (repeatable): authorization, x-vsr-cache-control, ...")
    p.add_argument("--after", metavar="PROMPT",
                   help="first send this user turn (same model and headers) and store an answer to it: the cache line "
                        "then says whether the request would be served that answer, or which bar it missed")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the readable block")
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    from router.classifier.encoder import ModelMissingError

    headers = {}
    for item in args.header:
        name, sep, value = item.partition("=") if "=" in item else item.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"explain: --header {item!r}: expected NAME=VALUE")
        headers[name.strip().lower()] = value.strip()
    if args.prompt is not None and args.body is not None:
        raise SystemExit("explain: give PROMPT or --body, not both")
    def turn(prompt: str) -> bytes:
        return json.dumps({"model": args.model, "messages": [{"role": "user", "content": prompt}]}).encode()

    if args.prompt is not None:
        body = turn(args.prompt)
    elif args.body in (None, "-"):
        body = sys.stdin.buffer.read()
    else:
        try:
            body = Path(args.body).read_bytes()
        except OSError as exc:
            raise SystemExit(f"explain: --body: {exc}") from None
    cfg = load_config(args.config)
    logs.configure(level="error")  # on stderr, and only what went wrong: stdout is the explanation
    try:
        report = asyncio.run(explain(cfg, body, headers, args.path, None if args.after is None else turn(args.after)))
    except ModelMissingError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


async def explain(cfg: RouterConfig, body: bytes, headers: dict[str, str], path: str = CHAT_PATH,
                  after: bytes | None = None) -> dict[str, Any]:
    """What the router decides for one request, and the rule behind each part of it (the `--json` form). With `after`
    (a chat body), that request is decided first and an answer stored for it as the router would, so the cache part
    says whether this request would be served it (trial 19: "would prompt B get prompt A's entry?")."""
    from router.cache import SemanticCache
    from router.cache.memory import MemoryStore
    from router.classifier import load_classifier
    from router.classifier.memo import MemoizedClassifier
    from router.extproc.encoder_queue import EncoderQueue
    from router.extproc.session import StreamSession
    from router.runtime import Runtime

    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"timeout_ms": _PATIENT_MS})})
    classifier = MemoizedClassifier(load_classifier(cfg)) if cfg.classifier.enabled else None
    cache = SemanticCache(cfg.semantic_cache, MemoryStore()) if cfg.semantic_cache.enabled else None
    runtime = Runtime(cfg=cfg, policy=Policy(cfg), classifier=classifier, cache=cache)
    executor = EncoderQueue("explain")
    stripped = [name for name in headers if name in stripped_client_headers(cfg)]
    kept = {k: v for k, v in headers.items() if k not in stripped}

    async def decide(path: str, body: bytes) -> tuple[StreamSession, pb.ProcessingResponse]:
        session = StreamSession(runtime, executor)
        sent = {":method": "POST", ":path": path, "content-type": "application/json",
                "content-length": str(len(body)), **kept}
        answer = await session.handle(_headers_message("request_headers", sent))
        if answer.WhichOneof("response") != "immediate_response":
            answer = await session.handle(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
        if answer.WhichOneof("response") != "immediate_response":  # routed: a 200 answer from the first choice
            answer = await session.handle(_headers_message("response_headers", _answered(session.request.decision)))
        return session, answer

    earlier: dict[str, Any] | None = None
    try:
        if after is not None:
            first, _ = await decide(CHAT_PATH, after)
            earlier = _stored(first.request)
            if cache is not None and first.request.cache_key is not None:
                cache.store(first.request.cache_key, _ANSWER | {"model": earlier["model"]})
                await cache.flush()
        session, answer = await decide(path, body)
    finally:
        executor.shutdown(wait=False)
        if cache is not None:
            await cache.close()
    report = _report(runtime.policy, session.request, answer)
    if cache is not None and "verifier_threshold" in report["cache"]:
        report["cache"]["operating_point"] = cache.point.manifest()
    if earlier is not None:
        report["cache"]["after"] = earlier | _verdict(session.request)
    if stripped:  # an auth filter behind Envoy's early mutation may set them from a verified token
        report["envoy_strips"] = stripped
    return report


_ANSWER = {"id": "explain", "object": "chat.completion", "created": 0,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "(the stored answer)"},
                        "finish_reason": "stop"}]}


def _stored(first: RequestState) -> dict[str, Any]:
    """Whether the `--after` request's answer would be stored, and where (its category and model scope the entry)."""
    decision = first.decision
    out: dict[str, Any] = {"stored": first.cache_key is not None,
                           "category": decision.category if decision else None,
                           "model": decision.model if decision else None}
    if not out["stored"]:
        out["why_not"] = first.cache_result.removeprefix("skip:") if first.cache_result != "miss" else "not stored"
    return out


def _verdict(request: RequestState) -> dict[str, Any]:
    """Whether the request was served the stored answer, with the figures of the candidate it was judged by."""
    from router.cache import scores

    hit, miss = request.cache_hit, request.cache_miss
    if hit is not None:
        return {"served": True, "match": hit.match, **scores(hit)}
    if miss is not None:
        return {"served": False, "miss": miss.reason, **scores(miss)}
    return {"served": False, "miss": request.cache_result}


def _answered(decision: Decision | None) -> dict[str, str]:
    """The headers of a 200 answer from the chosen model, as Envoy passes them to the router (and on to the client)."""
    return {":status": "200", "content-type": "application/json",
            **({UPSTREAM_MODEL_HEADER: decision.model} if decision is not None else {})}


def _headers_message(which: str, values: dict[str, str]) -> pb.ProcessingRequest:
    """Headers as Envoy sends them to the router."""
    hs = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    return pb.ProcessingRequest(**{which: pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=hs))})


def _report(policy: Policy, request: RequestState, answer: pb.ProcessingResponse) -> dict[str, Any]:
    """The session's findings (extproc.state.RequestState) beside the config rules that made them."""
    cfg, signal, decision = policy.cfg, request.signal, request.decision
    immediate = answer.WhichOneof("response") == "immediate_response"
    refused = immediate and request.cache_hit is None  # else answered from the cache (`--after`)
    mutation = (answer.immediate_response.headers if immediate
                else answer.response_headers.response.header_mutation)
    category = decision.category if decision is not None else request.error_category
    report: dict[str, Any] = {"decision": "refused" if refused else "cached" if immediate else "routed"}
    if refused:
        error = json.loads(answer.immediate_response.body or b"{}").get("error", {})
        report |= {"status": answer.immediate_response.status.code, "error": error.get("code") or error.get("type"),
                   "message": error.get("message")}
    if decision is not None:
        report |= {"model": decision.model, "chain": list(decision.chain), "route": decision.route,
                   "reason": decision.reason, "category": decision.category,
                   "confidence": round(decision.confidence, 4), "category_by": decision.category_by}
        ranked = decision.auto and request.model_only is None  # /v1/completions' auto is the default model, unranked
        report["models"] = _models(policy, decision, signal, ranked)
        report["reasoning"] = _reasoning(policy, decision)
    elif category:
        report["category"] = category
    report["classifier"] = _classifier(cfg, request, signal)
    if signal is not NO_SIGNAL:
        cat = cfg.category(category) if category else None
        report["guards"] = [_guard(policy, g, cat, signal) for g in GUARDS]
        report["pii"] = {"found": sorted(signal.pii_types), "unscreened": sorted(signal.unscreened),
                         "unreadable": list(signal.unreadable)}
    report["cache"] = _cache(cfg, request, category)
    if decision is not None and decision.auto and cfg.affinity.enabled:
        report["affinity"] = ("not evaluated (explain keeps no conversation state): a conversation pinned earlier "
                              "may keep its model")
    envoy = {} if immediate else {k: v for k, v in _answered(decision).items() if k.startswith("x-vsr-")}
    report["headers"] = envoy | {o.header.key: o.header.raw_value.decode() for o in mutation.set_headers
                                 if o.header.key.startswith("x-vsr-")}
    return report


def _models(policy: Policy, decision: Decision, signal: Classification, ranked: bool) -> list[dict[str, Any]]:
    """The category's models best first (`ranked`), else the model asked for, each with its score in the category and
    the PII types its pii_policy refuses here."""
    cat = policy.cfg.category(decision.category)
    scores = {s.model: s.score for s in cat.model_scores} if cat else {}
    return [{"model": m, "score": scores.get(m), "pii_refused": sorted(policy.pii_refused([m], signal))}
            for m in (policy.ranking(cat) if ranked else [decision.model])]


def _reasoning(policy: Policy, decision: Decision) -> dict[str, Any]:
    switch = policy.reasoning_switch(decision)
    if decision.client_reasoning:
        by = "the client's own setting, sent as it is"
    elif decision.reasoning is None:
        by = (f"nothing sent: {decision.model} has no reasoning_family, or the request's format cannot carry its switch"
              if decision.auto else "nothing sent: an explicit model gets the client's setting")
    else:
        by = f"categories[{decision.category}].use_reasoning: {str(decision.reasoning).lower()}"
    sent = None
    if switch is not None:
        family, value = switch
        where = "chat_template_kwargs." if family.type == "chat_template_kwargs" else ""
        sent = f"{where}{family.parameter}={json.dumps(value)}"
    return {"on": decision.reasoning, "by": by, "sent": sent}


def _guard(policy: Policy, guard: str, cat: Category | None, signal: Classification) -> dict[str, Any]:
    rule, score = policy.guard_rule(guard, cat), guard_score(guard, signal)
    does = "off" if rule.action == "off" else "pass" if score < rule.threshold else rule.action
    return {"guard": guard, "score": round(score, 4), "threshold": rule.threshold, "action": rule.action,
            "key": rule.key, "does": does, "text": signal.earlier_turn(guard) or "the latest turn"}


def _classifier(cfg: RouterConfig, request: RequestState, signal: Classification) -> dict[str, Any]:
    if not cfg.classifier.enabled:
        return {"off": True}
    if request.classifier_failure is not None:
        return {"failed": request.classifier_failure, "error": request.classifier_error}
    if signal is NO_SIGNAL:
        return {"ran": False}
    return {"category": signal.category, "confidence": round(signal.confidence, 4), "source": signal.source}


def _cache(cfg: RouterConfig, request: RequestState, category: str | None) -> dict[str, Any]:
    """What the cache policy does with the request: skipped (why), or looked up and stored with which settings."""
    from router.cache.semantic_cache import candidate_floor

    result = request.cache_result
    if result.startswith("skip:"):
        reason = result.removeprefix("skip:")
        return {"does": "skip", "reason": reason, "why": _SKIPS.get(reason, reason).format(category=category)}
    key = request.cache_key
    if key is None:  # refused before the lookup, or the cache is off
        why = "semantic_cache.enabled: false" if not cfg.semantic_cache.enabled else "the request never reached it"
        return {"does": "off", "why": why}
    does = "lookup and store" if key.read else "store only (no-cache: not looked up)"
    if key.unread:
        return {"does": does, "exact_only": True, "ttl_seconds": key.ttl_seconds,
                "why": "exact repeats only: the classifier does not read this text's script (router/classifier/reading.py)"}
    return {"does": does,
            "similarity_threshold": key.threshold if key.threshold is not None else candidate_floor(cfg.semantic_cache),
            "verifier_threshold": key.min_score, "ttl_seconds": key.ttl_seconds,
            "why": "an answer is stored unless it is tool calls, not text, cut short, or from a fallback model"}


def _after(a: dict[str, Any]) -> str:
    """The `--after` verdict in one line: where the earlier answer went, and whether this request gets it."""
    if not a["stored"]:
        return f"--after: its answer is not stored ({a['why_not']}), so there is nothing to serve"
    where = f"--after: stored under {a['category']} / {a['model']}"
    figures = ", ".join(f"{k} {a[k]}" for k in ("similarity", "verifier_score", "pair_score") if a.get(k) is not None)
    if a["served"]:
        return f"{where}; served to this request ({a['match']}: {figures})"
    return f"{where}; not served: {a['miss']}" + (f" ({figures})" if figures else "")


def _line(label: str, text: str) -> str:
    return f"{label:<14} {text}"


def render(report: dict[str, Any]) -> str:
    """The readable block: one line per part of the decision, the rule that made it matter beside it."""
    lines = []
    if report["decision"] == "refused":
        lines.append(_line("decision", f"refused {report['status']} {report['error']}: {report['message']}"))
    elif report["decision"] == "cached":
        lines.append(_line("decision", f"answered from the cache (the entry of --after); would have gone to "
                                       f"{report['model']}"))
        lines.append(_line("reason", report["reason"]))
    else:
        lines.append(_line("decision", f"{report['model']} (chain {' -> '.join(report['chain'])}; "
                                       f"route {report['route']})"))
        lines.append(_line("reason", report["reason"]))
    if "category_by" in report:
        lines.append(_line("category", f"{report['category']} {report['confidence']:.3f}, by {report['category_by']}"))
    elif "category" in report:
        lines.append(_line("category", f"{report['category']} (its rules applied)"))
    for i, row in enumerate(report.get("models", [])):
        refused = f"pii_policy refuses {', '.join(row['pii_refused'])}" if row["pii_refused"] else "may receive it"
        score = "" if row["score"] is None else f" {row['score']:.2f}"
        lines.append(_line("models" if i == 0 else "", f"{row['model']}{score}: {refused}"))
    if "reasoning" in report:
        r = report["reasoning"]
        state = {True: "on", False: "off", None: "server default"}[r["on"]]
        lines.append(_line("reasoning", f"{state}: {r['by']}" + (f"; sends {r['sent']}" if r["sent"] else "")))
    c = report["classifier"]
    if "failed" in c:
        lines.append(_line("classifier", f"failed ({c['failed']}), classifier.on_failure decided: {c['error']}"))
    elif "off" in c:
        lines.append(_line("classifier", "off (classifier.enabled: false): keyword rules and the default category "
                                         "only, no guards"))
    elif "ran" in c:
        lines.append(_line("classifier", "not run: the request was refused before it was screened"))
    for g in report.get("guards", []):
        cmp = "<" if g["does"] == "pass" else ">="
        lines.append(_line(g["guard"], f"{g['score']:.3f} {cmp} {g['threshold']} in {g['text']}, "
                                       f"{g['key']}: {g['action']} -> {g['does']}"))
    if "pii" in report:
        p = report["pii"]
        more = "".join(f"; may hold {', '.join(v)} ({k})" for k, v in p.items() if k != "found" and v)
        lines.append(_line("pii", (", ".join(p["found"]) or "none found") + more))
    cache = report["cache"]
    if cache["does"] in ("skip", "off"):
        lines.append(_line("cache", f"{cache['does']}{' ' + cache['reason'] if 'reason' in cache else ''}: "
                                    f"{cache['why']}"))
    elif cache.get("exact_only"):
        lines.append(_line("cache", f"{cache['does']}, ttl {cache['ttl_seconds']} s; {cache['why']}"))
    else:
        lines.append(_line("cache", f"{cache['does']}: similarity >= {cache['similarity_threshold']}, verifier >= "
                                    f"{cache['verifier_threshold'] or 'operating point'}, ttl {cache['ttl_seconds']} s; "
                                    f"{cache['why']}"))
        steps = "; ".join(f"verifier >= {v} needs pair >= {p}" for v, p in cache["operating_point"]["steps"])
        lines.append(_line("", f"operating point: {steps or 'no steps: the verifier alone decides'}"))
    if "after" in cache:
        lines.append(_line("", _after(cache["after"])))
    if "affinity" in report:
        lines.append(_line("affinity", report["affinity"]))
    if "envoy_strips" in report:
        lines.append(_line("envoy strips", f"{', '.join(report['envoy_strips'])}: a client cannot set them (only an "
                                           "auth filter behind Envoy can), so the router never saw them"))
    lines += [_line("headers" if i == 0 else "", f"{k}: {v}") for i, (k, v) in enumerate(report["headers"].items())]
    return "\n".join(lines)
