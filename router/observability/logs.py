"""Structured logs: one JSON object per line for machines, readable lines for a person at a terminal.

Nothing happens at import: `configure()` is called once by the CLI, so importing the package in a
test or a library never attaches handlers. Prompt text and PII are dropped from every event by a
processor (not by caller discipline) unless the operator turns on `log_prompts` to debug.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

# Keys whose values may carry user text or PII. Redaction keeps the key so the line still shows that
# something was there.
SENSITIVE_KEYS = frozenset({
    "prompt", "prompts", "messages", "message_text", "content", "query", "completion", "response_text",
    "pii", "pii_values", "user", "body",
})  # fmt: skip
REDACTED = "[redacted]"
# A failure spell (FailureSpell) ends at the first success this long after its last failure.
SPELL_QUIET_S = 10.0
_HANDLER_NAME = "semantic-router"
# Libraries that install handlers of their own. pymilvus also logs every failed call at ERROR with its traceback
# (~2.5 kB) before raising it; the cache store logs and counts each failure once (`cache_backend_error`), so under
# load the copies flooded the log with duplicate "errors" for lookups that merely missed their budget.
LIBRARY_LOGGERS = ("pymilvus",)


class RedactSensitive:
    """Processor that replaces sensitive values unless prompt logging was switched on."""

    def __init__(self, log_prompts: bool) -> None:
        self.log_prompts = log_prompts

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        if self.log_prompts:
            return event_dict
        for key in SENSITIVE_KEYS.intersection(event_dict):
            event_dict[key] = REDACTED
        return event_dict


def _renderer(log_format: LogFormat, stream: TextIO) -> Processor:
    use_console = log_format == "console" or (log_format == "auto" and stream.isatty())
    if use_console:
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer()


def configure(
    log_format: LogFormat = "auto",
    level: str = "info",
    log_prompts: bool = False,
    stream: TextIO | None = None,
) -> None:
    """Send structlog events, stdlib records (grpc, pymilvus) and Python warnings through one renderer to `stream`.

    structlog events take the direct WriteLogger path (no stdlib formatting on the hot path); stdlib
    records get the same processors through a ProcessorFormatter so every line has one shape.
    """
    out = stream if stream is not None else sys.stderr
    renderer = _renderer(log_format, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_pid(os.getpid()),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        RedactSensitive(log_prompts),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        # One write per line: router workers share one stderr, unbuffered in the image (PYTHONUNBUFFERED), and print()
        # wrote the line and its newline apart, so under load two workers' lines met on one line.
        logger_factory=structlog.WriteLoggerFactory(out),
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_stdlib_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level_number(level))
    logging.captureWarnings(True)  # a library's warnings.warn() is a log line too, not raw text on stderr
    adopt_loggers(*[name for name in LIBRARY_LOGGERS if name in sys.modules])


def adopt_loggers(*names: str) -> None:
    """Route libraries that install their own handlers (pymilvus does, at import) through ours, shown only when
    the router logs at debug level: the router reports what their failures mean for a request itself.

    Call again after importing such a library late (the Milvus store imports pymilvus lazily).
    """
    level = logging.NOTSET if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else logging.CRITICAL + 1
    for name in names:
        for sub in (name, *[n for n in logging.root.manager.loggerDict if n.startswith(name + ".")]):
            lib = logging.getLogger(sub)
            for own in list(lib.handlers):
                lib.removeHandler(own)
            lib.propagate = True
            lib.setLevel(level)


def _add_pid(pid: int) -> Processor:
    """Every line names its process: router workers share one stderr, and /readyz lists them by pid."""

    def add(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        event_dict["pid"] = pid
        return event_dict

    return add


def _stdlib_logger_name(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Stdlib records carry their logger name under the same key as structlog events."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger_name"] = record.name
    return event_dict


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def get_logger(name: str = "router") -> Any:
    """A lazy logger: it picks up the configuration active when it is first used."""
    return structlog.get_logger(logger_name=name)


def log_request(
    logger: Any,
    *,
    request_id: str,
    model: str | None,
    category: str | None,
    confidence: float | None,
    cache: str,
    path: str,
    timings_s: Mapping[str, float],
    status: int | None = None,
    **extra: Any,
) -> None:
    """The one line per request: what was decided and what it cost, never what was asked."""
    fields: MutableMapping[str, Any] = {
        "request_id": request_id,
        "model": model,
        "category": category,
        "confidence": None if confidence is None else round(confidence, 3),
        "cache": cache,
        "path": path,
        **{f"{phase}_ms": round(seconds * 1000, 3) for phase, seconds in timings_s.items()},
    }
    if status is not None:
        fields["status"] = status
    logger.info("request", **fields, **extra)


class FailureSpell:
    """A recurring failure logged once per spell: the first failure of each kind, then one line when the spell ends,
    with how many failed meanwhile: at a success SPELL_QUIET_S or more after the last failure, or, when a success came
    sooner and nothing failed for SPELL_QUIET_S after it, at the next failure (which starts a new spell). Every failure
    is still counted by its metric and named on its request's line. Use from one event loop.

    A spell ended at the first success wrote an error line and a "recovered" line per refused request when failures
    and successes interleave, as under overload: long prompts timing out between short ones that pass (issue 13's
    trial log). Now such a stretch is one spell. A spell whose successes all came within SPELL_QUIET_S of its last
    failure, followed by a quiet stretch (little traffic), would otherwise never end: an outage hours later wrote no
    line at all."""

    def __init__(self, logger: Any, failed: str, recovered: str,
                 level: Literal["error", "warning"] = "error") -> None:
        self._logger, self._failed, self._recovered = logger, failed, recovered
        self._log_failure = getattr(logger, level)  # a degraded optional part (the cache) warns
        self._kinds: set[str] = set()
        self._count = 0
        self._since = self._last = 0.0
        self._answered = False  # a success since the last failure

    def failure(self, kind: str, **fields: Any) -> None:
        now = time.monotonic()
        if self._answered and now - self._last >= SPELL_QUIET_S:
            self._end()
        self._last, self._answered = now, False
        if not self._count:
            self._since = now
        self._count += 1
        if kind not in self._kinds:
            self._kinds.add(kind)
            self._log_failure(self._failed, reason=kind, **fields)

    def success(self) -> None:
        if not self._count:
            return
        self._answered = True
        if time.monotonic() - self._last >= SPELL_QUIET_S:
            self._end()

    def _end(self) -> None:
        self._logger.info(self._recovered, failures=self._count, reasons=sorted(self._kinds),
                          lasted_s=round(self._last - self._since, 3))
        self._count, self._kinds, self._answered = 0, set(), False
