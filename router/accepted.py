"""The config a router Pod has accepted: where every worker, first or replacement, starts from.

Envoy reads its config (generated from the router config) at start only, so the router may serve an edited file
only if it generates the same Envoy config (router/envoy_config.py `check_envoy_unchanged`). Each process checked an
edit against the config it ran, and a worker started later (a replacement after a crash, a router container
restarted in its Pod) had nothing to check against: it served the edited file, picked a model Envoy has no cluster
for, and the Pod's workers disagreed.

The accepted config is the file's text as it was when the Pod's router first started (what Envoy's config was made
from), replaced by each hot reload a worker applies since. It lives in the router's runtime directory (RUNTIME_DIR_ENV:
the supervisor's own temporary directory, or one the operator names so that it outlives a router container restart,
e.g. a Kubernetes emptyDir, which lives as long as the Pod and its Envoy). A process starting with an accepted copy
serves the file only if the file generates the same Envoy config as the copy; otherwise it serves the copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from router.config import ConfigError, RouterConfig, config_version, parse_config_text, read_config_text
from router.envoy_config import check_envoy_unchanged
from router.observability import logs, metrics

RUNTIME_DIR_ENV = "VSR_RUNTIME_DIR"
ACCEPTED_FILE = "accepted-config.yaml"

log = logs.get_logger("router.accepted")


def runtime_dir() -> Path | None:
    """The Pod's runtime directory, if this process was given one (a worker always is)."""
    value = os.environ.get(RUNTIME_DIR_ENV)
    return Path(value) if value else None


class AcceptedConfig:
    """The accepted config's text in the runtime `directory` (None: a process without one keeps nothing and checks
    edits against the config it runs, as before). Written atomically, so a starting worker never reads half of it."""

    def __init__(self, directory: Path | None):
        self.path = directory / ACCEPTED_FILE if directory is not None else None

    def read(self) -> tuple[str, RouterConfig] | None:
        """The accepted text and config; None before any was accepted (or if the copy no longer validates)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            text = read_config_text(self.path)
            return text, parse_config_text(text, str(self.path))
        except ConfigError as exc:
            log.error("accepted_config_unreadable", reason=str(exc), effect="the config file is served unchecked")
            return None

    def save(self, text: str) -> None:
        """Record `text` as accepted. A failure (a full or read-only disk) is logged and counted, never raised:
        the config is served anyway, and a worker started later checks against the previous copy."""
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:
            log.error("accepted_config_unsaved", path=str(self.path), error=str(exc),
                      effect="a worker started later checks edits against the previous accepted config")
            metrics.record_dependency_error("runtime_dir")

    def servable(self, file: Path, running: RouterConfig | None) -> tuple[str, RouterConfig]:
        """What this process may serve: `file` if it is valid and generates the Envoy config of the config running
        (or, at start, of the accepted one); at start, the accepted config in its place. Raises ConfigError when
        neither is there (an invalid file and nothing accepted yet: the process waits for a fix)."""
        accepted = self.read() if running is None else None
        try:
            text = read_config_text(file)
            cfg = parse_config_text(text, str(file))
            base = running if running is not None else accepted[1] if accepted is not None else None
            if base is not None:
                check_envoy_unchanged(base, cfg, str(file))
        except ConfigError as exc:
            if accepted is None:
                raise
            log.warning("config_file_not_served", reason=str(exc), serving="the accepted config",
                        version=config_version(accepted[1]), accepted=str(self.path))
            return accepted
        return text, cfg
