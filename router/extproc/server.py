"""The grpc.aio server Envoy streams to: a thin loop around StreamSession."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from router.config import load_config
from router.extproc.session import StreamSession
from router.runtime import RuntimeHolder, build_runtime

log = structlog.get_logger(__name__)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, holder: RuntimeHolder, executor: ThreadPoolExecutor):
        self.holder = holder
        self.executor = executor

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ProcessingResponse]:
        with self.holder.stream() as runtime:
            session = StreamSession(runtime, self.executor)
            try:
                async for req in request_iterator:
                    yield await session.handle(req)
            finally:
                _log_request(session)


def _log_request(session: StreamSession) -> None:
    """One line per request: what was decided and how long it took; never the prompt."""
    req, d = session.request, session.request.decision
    if req.outcome == "passthrough":
        return
    log.info("request", request_id=req.request_id, outcome=req.outcome, error=req.error_code,
             model=d.model if d else None, category=d.category if d else None,
             confidence=round(d.confidence, 3) if d else None, status=session.response.status or None,
             timings_ms={k: round(v * 1000, 2) for k, v in req.timings.items()},
             sidecar_ms=round((time.perf_counter() - session.started) * 1000, 2))


async def serve(config_path: Path) -> None:
    """Run the ext_proc server until SIGINT/SIGTERM; SIGHUP reloads the config."""
    cfg = load_config(config_path)
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="router-worker")
    runtime = await asyncio.get_running_loop().run_in_executor(executor, build_runtime, cfg)
    holder = RuntimeHolder(config_path, runtime, executor)
    limit = cfg.server.max_body_bytes + (1 << 20)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(holder, executor), server)
    address = f"{cfg.server.host}:{cfg.server.port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("router_started", address=address, config=str(config_path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(holder.reload()))
    await stop.wait()
    log.info("router_stopping")
    await server.stop(grace=5)
    await holder.current.close()
    executor.shutdown(wait=False, cancel_futures=True)
