"""Logs: JSON lines by default, console on request, prompt text and PII never logged unless asked."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest
import structlog

from router.observability import logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logging.captureWarnings(False)
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == logs._HANDLER_NAME]:
        root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def emit_request(log: object, **extra: object) -> None:
    logs.log_request(
        log,
        request_id="req-1",
        model="qwen3-4b",
        category="math",
        confidence=0.91234,
        cache="miss",
        path="upstream",
        timings_s={"classify": 0.0012, "total": 0.00213},
        status=200,
        **extra,
    )


def test_one_json_line_per_request_without_prompt_text() -> None:
    out = io.StringIO()
    logs.configure("json", stream=out)
    emit_request(logs.get_logger("extproc"), prompt="my SSN is 078-05-1120", messages=[{"content": "hi"}])
    (line,) = lines(out)
    assert line["event"] == "request" and line["request_id"] == "req-1" and line["logger_name"] == "extproc"
    assert line["model"] == "qwen3-4b" and line["category"] == "math" and line["confidence"] == 0.912
    assert line["cache"] == "miss" and line["classify_ms"] == 1.2 and line["total_ms"] == 2.13
    assert line["prompt"] == logs.REDACTED and line["messages"] == logs.REDACTED
    assert "078-05-1120" not in out.getvalue()


def test_a_library_warning_is_a_json_line_too() -> None:
    """prometheus_client's warnings.warn() reached stderr as two plain-text lines between the JSON ones."""
    out = io.StringIO()
    logs.configure("json", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Removal of labels has not been implemented", UserWarning, stacklevel=1)
    (line,) = lines(out)
    assert line["level"] == "warning" and line["logger_name"] == "py.warnings"
    assert "UserWarning: Removal of labels has not been implemented" in str(line["event"])


class _Writes(io.StringIO):
    """A stream that keeps each write call apart, as the kernel sees an unbuffered stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_line_is_one_write_so_workers_sharing_stderr_never_interleave() -> None:
    """Two workers' request lines were seen as `{...}{...}` and an empty line in the workers test's log."""
    out = _Writes()
    logs.configure("json", stream=out)
    emit_request(logs.get_logger("extproc"))
    logging.getLogger("grpc").warning("a library line")
    assert len(out.calls) == 2 and all(c.endswith("\n") and c.count("\n") == 1 for c in out.calls), out.calls


def test_log_prompts_flag_keeps_text_for_debugging() -> None:
    out = io.StringIO()
    logs.configure("json", stream=out, log_prompts=True)
    emit_request(logs.get_logger(), prompt="what is 2+2")
    assert lines(out)[0]["prompt"] == "what is 2+2"


def test_logger_created_before_configure_follows_it() -> None:
    early = logs.get_logger("early")  # modules create loggers at import, before the CLI configures
    out = io.StringIO()
    logs.configure("json", stream=out)
    early.info("hello", content="secret")
    assert lines(out) and lines(out)[0]["content"] == logs.REDACTED


def test_stdlib_records_share_the_format_and_level() -> None:
    out = io.StringIO()
    logs.configure("json", level="warning", stream=out)
    logging.getLogger("somelib.sub").warning("backend %s down", "milvus")
    logging.getLogger("somelib.sub").info("not shown")
    logs.get_logger().info("not shown either")
    (line,) = lines(out)
    assert line["event"] == "backend milvus down" and line["logger_name"] == "somelib.sub"
    assert line["level"] == "warning" and "timestamp" in line


def test_libraries_with_their_own_handlers_are_adopted_and_shown_only_at_debug() -> None:
    lib = logging.getLogger("selfish.client")  # like pymilvus: own handler, no propagation
    own = io.StringIO()
    lib.addHandler(logging.StreamHandler(own))
    lib.propagate = False
    out = io.StringIO()
    logs.configure("json", stream=out)  # info: the router logs what a backend failure means, once
    logs.adopt_loggers("selfish")
    lib.error("grpc RpcError: [search] Deadline Exceeded\nTraceback ...")
    assert lines(out) == [] and own.getvalue() == ""
    logs.configure("json", level="debug", stream=out)
    logs.adopt_loggers("selfish")
    lib.error("milvus unreachable")
    assert lines(out)[0]["logger_name"] == "selfish.client" and own.getvalue() == ""


def test_console_format_is_not_json_and_auto_picks_json_off_tty() -> None:
    out = io.StringIO()
    logs.configure("console", stream=out)
    logs.get_logger().info("hello", request_id="r")
    assert "hello" in out.getvalue() and not out.getvalue().lstrip().startswith("{")
    out2 = io.StringIO()  # StringIO is not a TTY: auto means JSON
    logs.configure("auto", stream=out2)
    logs.get_logger().info("hello")
    assert lines(out2)[0]["event"] == "hello"


def test_unknown_level_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        logs.configure("json", level="loud", stream=io.StringIO())


def test_every_line_names_the_process_that_wrote_it() -> None:
    """With router workers, the supervisor's and each worker's lines interleave on one stderr: a request line, a
    config_applied line (one per worker after each push) or a cache_backend_down line could not be tied to the worker
    /readyz lists by pid. stdlib records (grpc, pymilvus) too."""
    import os

    out = io.StringIO()
    logs.configure("json", stream=out)
    emit_request(logs.get_logger("extproc"))
    logging.getLogger("grpc").warning("a library record")
    assert [line["pid"] for line in lines(out)] == [os.getpid(), os.getpid()]


def test_a_spell_followed_by_a_quiet_stretch_ends_before_the_next_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure, a success soon after (the spell goes on), then nothing for SPELL_QUIET_S (little traffic): the
    spell is over. The next failure, however late, is a new outage and gets its error line, after the old spell's
    recovered line; it was silent (the old spell never ended: its one success came too soon)."""
    from structlog.testing import capture_logs

    spell = logs.FailureSpell(logs.get_logger("test"), "thing_failed", "thing_recovered")
    with capture_logs() as lines:
        spell.failure("timeout")
        spell.success()  # within SPELL_QUIET_S of the failure: the spell goes on
        monkeypatch.setattr(logs, "SPELL_QUIET_S", 0.0)  # as if the quiet stretch had lasted long enough
        spell.failure("timeout")
    assert [(x["event"], x.get("failures")) for x in lines] == [
        ("thing_failed", None), ("thing_recovered", 1), ("thing_failed", None)]
