"""The grpc.aio server Envoy streams to: a thin loop around StreamSession."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1.health import aio as grpc_health_aio  # type: ignore[attr-defined]  # stubs lag

from router.accepted import AcceptedConfig, runtime_dir
from router.cache import scores
from router.classifier.encoder import ModelMissingError
from router.classifier.service import add_to_server as add_classifier_api
from router.config import ClassifierConfig, ConfigError, RouterConfig, ServerConfig, drain_s
from router.errors import Outcome
from router.extproc.attempt import AttemptSession
from router.extproc.encoder_queue import EncoderQueue
from router.extproc.session import StreamSession
from router.extproc.slot import WorkerSlot, bootstrap
from router.observability import logs, metrics
from router.observability.envoy_stats import envoy_collectors
from router.observability.health import Readiness, add_grpc_health
from router.observability.logs import LogFormat
from router.observability.ops import configure_logs, start_ops
from router.observability.reload import baseline
from router.resilience import ATTEMPT_METADATA
from router.runtime import RuntimeHolder
from router.signals import Classifier

log = logs.get_logger("router.extproc")
# The GIL switch interval (Python's default is 5 ms). Cache reads and gRPC wait on I/O in threads that need
# the GIL several times per call, while classification threads hold it for CPU work: at 5 ms per handoff a
# 3 ms Milvus lookup took 30-50 ms under load (the convoy effect). At 0.2 ms the lookups answered within their
# 50 ms budget went from ~55-65 % to ~80-87 % at 32 clients (bench/fault_suite.py), at the same throughput.
GIL_SWITCH_INTERVAL_S = 0.0002
# The guard behind each refusal code, for the request log line.
_BLOCKED_BY = {"jailbreak_detected": "jailbreak", "content_blocked": "content_safety"}


class StartupError(Exception):
    """The router cannot start (port in use, model missing, config unreadable): one line, exit 1."""


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]  # untyped stubs
    def __init__(self, holder: RuntimeHolder, executor: EncoderQueue):
        self.holder = holder
        self.executor = executor
        self.streams = 0  # ext_proc streams opened on this process (a worker reports it to its supervisor)

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[pb.ProcessingResponse]:
        self.streams += 1
        with self.holder.stream() as runtime:
            if _is_upstream_attempt(context):  # an upstream attempt of a fallback chain (router/resilience.py)
                attempt = AttemptSession(runtime)
                async for req in request_iterator:
                    yield await attempt.handle(req)
                return
            session = StreamSession(runtime, self.executor)
            if runtime.tracing is not None:
                session.trace_carrier = _metadata(context)
            try:
                async for req in request_iterator:
                    yield await session.handle(req)
            finally:
                _record(session)


def _is_upstream_attempt(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the stream comes from the upstream ext_proc filter of a chain cluster."""
    return any(key == ATTEMPT_METADATA for key, _ in context.invocation_metadata() or ())


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in context.invocation_metadata() or ()}


def _record(session: StreamSession) -> None:
    """One log line and the metrics for a finished request; never the prompt."""
    req, d = session.request, session.request.decision
    if req.outcome is Outcome.UPSTREAM and not session.response.status:
        # Routed, yet no response came through: Envoy stopped waiting (past its message timeout it forwards the
        # request unrouted to the default model) or the client left. Counted as routed, the metrics would credit
        # the router's choice with what the default model answered.
        req.outcome = Outcome.ABANDONED
    category = d.category if d else req.error_category  # a block has no Decision, but its category decided it
    # A 2xx answer whose end never came through: the model reset or went silent mid-stream, the client left, or this
    # router stopped first. Only Envoy's access log said so (flags UPE); the router logged it as a plain 200.
    cut = (req.outcome is Outcome.UPSTREAM and 200 <= session.response.status < 300 and not session.response.complete
           and not req.model_only and not session.response.unread)  # bodies the router does not read: unknown
    why = {**_guard_fields(session), **_cache_fields(session), **({"answer_cut": True} if cut else {})}
    if session.trace.recording:
        session.trace.end(outcome=req.outcome.value, status=session.response.status or None,
                          cache=req.cache_result, upstream_model=session.response.answered_by,
                          attempts=session.response.attempts, error=req.error_code, category=category,
                          config=session.runtime.version, **why)
    if req.outcome in (Outcome.PASSTHROUGH, Outcome.MODELS, Outcome.UNSERVED):
        return
    for phase, seconds in req.timings.items():
        metrics.observe_phase(phase, seconds)  # type: ignore[arg-type]
    total = session.busy
    metrics.observe_phase("total", total)
    metrics.record_request(d.model if d else None, category, req.outcome.value)  # type: ignore[arg-type]
    if req.signal.source != "none":
        metrics.observe_confidence(req.signal.category, req.signal.confidence)
    for pii_type in req.signal.pii_types:
        metrics.record_pii(pii_type)
    for pii_type in req.signal.unscreened:
        metrics.record_pii_unscreened(pii_type)
    if req.error_code == "jailbreak_detected":
        metrics.record_jailbreak_block(category)
    for guard in d.flagged if d else ():
        metrics.record_guard_flag(guard)
    if req.classifier_error is not None:
        metrics.record_dependency_error("classifier")
        metrics.record_classifier_failure(session.runtime.cfg.classifier.on_failure,
                                          req.classifier_failure or "error")
    usage, answered_by = session.response.usage, session.response.answered_by
    if d is not None and answered_by is not None:
        ok = 200 <= session.response.status < 300 and not cut
        metrics.record_attempts(d.model, answered_by, session.response.attempts, ok)
    if cut and d is not None:
        metrics.record_answer_cut(answered_by or d.model)
    if req.affinity is not None:
        metrics.record_affinity(req.affinity)
    if d is not None and usage:
        model = answered_by if answered_by in session.runtime.cfg.models else d.model
        _record_usage(session.runtime.cfg, model, usage)
    logs.log_request(log, request_id=req.request_id, model=d.model if d else None,
                     category=category, confidence=d.confidence if d and d.turn_category is None else None,
                     cache=req.cache_result, path=req.outcome, timings_s={**req.timings, "total": total},
                     status=session.response.status or None, error=req.error_code, config=session.runtime.version,
                     reason=d.reason if d else None, affinity=req.affinity, **_answer_fields(session), **why)


def _answer_fields(session: StreamSession) -> dict[str, Any]:
    """Who answered a routed request and in how many attempts: `model` is the router's choice, and an operator
    counting answers per model by it credited the first choice with what a fallback answered."""
    r = session.response
    return {"answered_by": r.answered_by, "attempts": r.attempts} if r.answered_by is not None else {}


def _cache_fields(session: StreamSession) -> dict[str, Any]:
    """Which stored entry a hit served and how it matched, or why a miss served nothing (its nearest candidate's
    figures: which bar a rewording missed) and the entry its answer was queued as: the same
    `cache_entry` (the entry's whole key, itself a hash: `cache invalidate --entry` deletes by it exactly) on both
    lines ties a wrong answer to the request that stored it, without the prompt text."""
    req, hit = session.request, session.request.cache_hit
    if hit is not None:
        return {"cache_entry": hit.key, "cache_match": hit.match, "cache_age_s": round(hit.age_seconds, 1),
                **{f"cache_{name}": value for name, value in scores(hit).items()}}
    miss = req.cache_miss
    out = {} if miss is None else {"cache_miss": miss.reason, **{
        f"cache_{name}": value for name, value in scores(miss).items() if value is not None}}
    if req.cache_stored and req.cache_key is not None:
        return out | {"cache_entry": req.cache_key.key}
    return out | ({"cache_unstored": req.cache_unstored} if req.cache_unstored else {})


def _guard_fields(session: StreamSession) -> dict[str, Any]:
    """What refused or flagged a request, for the request line: the guard, its score and the threshold it
    passed, the PII *types* (never values), or the classifier's failure. Scores and types say why without the
    prompt."""
    req, clf = session.request, session.runtime.cfg.classifier
    fields: dict[str, Any] = {"pii_types": sorted(req.signal.pii_types)} if req.signal.pii_types else {}
    if req.signal.unscreened:  # types the text may hold where it is too long for the PII screen
        fields["pii_unscreened"] = sorted(req.signal.unscreened)
    if req.classifier_error is not None:  # refused or unguarded by classifier.on_failure: the spell's line is once
        fields |= {"classifier_failure": req.classifier_failure, "classifier_error": req.classifier_error}
    if req.error_code == "pii_policy_violation":
        fields["guard"] = "pii"
    flagged = req.decision.flagged if req.decision else ()
    guard = _BLOCKED_BY.get(req.error_code or "") or next(iter(flagged), None)  # the refusal, else a flag
    if guard is not None:
        score = req.signal.jailbreak_score if guard == "jailbreak" else req.signal.content_safety_score
        threshold = clf.jailbreak_threshold if guard == "jailbreak" else clf.content_safety_threshold
        fields |= {"guard": guard, "guard_score": round(score, 3), "guard_threshold": threshold}
        if (turn := req.signal.earlier_turn(guard)) is not None:
            fields["guard_turn"] = turn  # another text fired it ("user turn 1", "tool result 2"; never its text)
    return fields



def _record_usage(cfg: RouterConfig, model: str, usage: dict[str, Any]) -> None:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    price = cfg.models[model].pricing
    metrics.record_usage(model, prompt, completion,
                         metrics.cost_usd(prompt, completion, price.prompt_per_1m, price.completion_per_1m))


async def serve(config_path: Path, log_format: LogFormat | None = None, worker: WorkerSlot | None = None) -> None:
    """Run until SIGINT/SIGTERM. An invalid config at start keeps the probes up and waits for a fix.

    As one of several router workers (`worker`), the ext_proc port is shared (SO_REUSEPORT) and the metrics
    port is the supervisor's: this process reports its readiness and heartbeat in `worker.state_file`.
    Raises StartupError when it cannot start at all: an unreadable config file, a missing model, a busy port.
    """
    try:
        config_path.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read config file {config_path}: {exc.strerror}") from None
    server_cfg, obs = bootstrap(config_path)
    configure_logs(obs, log_format)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    executor = EncoderQueue(thread_name_prefix="router-worker")
    readiness = Readiness()
    pod = worker is None or worker.speaks_for_pod
    holder = RuntimeHolder(config_path, readiness, AcceptedConfig(runtime_dir()), speaks_for_pod=pod)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started_from = baseline(config_path)  # before the first load: a fix written while this process starts is seen
    try:
        await holder.reload(first=True)
    except ConfigError as exc:
        if pod:
            log.error("config_invalid", reason=str(exc))
    except ModelMissingError as exc:
        raise StartupError(str(exc)) from None
    # After the first load, so the cache probe never reports a runtime that is still loading.
    try:
        ops = await start_ops(obs, 0 if worker else server_cfg.metrics_port, config_path, holder.reload, readiness,
                              cache=lambda: holder.current.cache if holder.current else None, started_from=started_from,
                              speaks_for_pod=pod)
    except OSError as exc:
        await holder.aclose()
        raise StartupError(f"metrics port {obs.metrics_host}:{server_cfg.metrics_port}: {exc.strerror}") from None
    logs.adopt_loggers(*logs.LIBRARY_LOGGERS)  # pymilvus installs its own handlers when imported
    server = health = None
    processor = ExternalProcessor(holder, executor)
    reporter, report_now = None, asyncio.Event()
    if worker is not None:  # from now on, so the supervisor's /readyz can say why a config does not load
        reporter = asyncio.create_task(worker.report(readiness, lambda: processor.streams, lambda: server is not None,
                                                     report_now))
    await _first(holder.loaded, stop)
    if holder.current is not None and worker is None and holder.current.cfg.envoy.admin_port:  # the supervisor's
        for collector in envoy_collectors(holder.current.cfg):
            metrics.REGISTRY.register(collector)
    if holder.current is not None:  # ports from the config that loaded, which may be a fixed one
        if holder.current.cache is not None:  # the first requests should not pay for the backend's connection
            await holder.current.cache.warm_up()
        try:
            server, health = await _start_grpc(holder, processor, readiness, holder.current.cfg.server,
                                               reuseport=worker is not None)
        except StartupError:
            await ops.aclose()
            await holder.aclose()
            raise
        report_now.set()  # serving: the supervisor's /readyz should know at once, not at the next tick
    await stop.wait()
    log.info("router_stopping")
    if server is not None and health is not None and holder.current is not None:
        readiness.set("stopping", False, "draining in-flight streams")  # /readyz 503 while they drain
        report_now.set()
        await health.enter_graceful_shutdown()  # NOT_SERVING while in-flight streams drain
        await server.stop(grace=drain_s(holder.current.cfg))
    if reporter is not None:  # after the drain: a worker's heartbeat must not go stale while its streams finish
        reporter.cancel()
    await ops.aclose()
    await holder.aclose()
    executor.shutdown(wait=False, cancel_futures=True)


def _classifier_of(holder: RuntimeHolder) -> tuple[Classifier | None, ClassifierConfig]:
    """The Classify RPC follows config reloads like the ext_proc streams do."""
    runtime = holder.current
    return (runtime.classifier, runtime.cfg.classifier) if runtime else (None, ClassifierConfig())


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in pending:
        w.cancel()


async def _start_grpc(holder: RuntimeHolder, processor: ExternalProcessor, readiness: Readiness,
                      cfg: ServerConfig, reuseport: bool = False,
                      ) -> tuple[grpc.aio.Server, grpc_health_aio.HealthServicer]:
    limit = cfg.max_body_bytes + (1 << 20)
    options: list[tuple[str, int]] = [("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)]
    # Workers share the port and the kernel spreads Envoy's connections over them. grpc sets SO_REUSEPORT unless
    # told not to, which let a second router join a port a running router serves instead of refusing it.
    options.append(("grpc.so_reuseport", 1 if reuseport else 0))
    server = grpc.aio.server(options=options)
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    health = add_grpc_health(server, readiness)
    add_classifier_api(server, lambda: _classifier_of(holder), processor.executor)
    address = f"{cfg.host}:{cfg.port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError:  # grpc reports a busy or unbindable address this way
        raise StartupError(f"ext_proc port {address} is already in use or cannot be bound") from None
    await server.start()
    log.info("router_started", address=address, config=str(holder.path))
    return server, health
