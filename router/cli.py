"""`semantic-router`: serve, validate, envoy-config, and the classifier and cache tools."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from router.config import (
    CONFIG_HELP,
    DEFAULT_CONFIG,
    ConfigError,
    config_version,
    config_warnings,
    load_config,
    restart_only_changes,
)
from router.extproc.slot import WORKER_STATE_ENV

NEEDS_RESTART = 3  # `validate --against`: valid, but not (wholly) as a hot reload


def _validate(args: argparse.Namespace) -> int:
    """The verdict a reload would give: the schema, and the encoder files the router loads (from this directory)."""
    from router.classifier.encoder import missing_model

    cfg = load_config(args.file)
    missing = missing_model(cfg.classifier.model_dir, cfg.classifier.precision) if cfg.classifier.enabled else None
    if missing:
        raise ConfigError(args.file, [("classifier.model_dir", missing)])
    warnings = config_warnings(cfg)
    for warning in warnings:
        print(f"{args.file}: warning: {warning}")
    print(f"{args.file}: OK ({len(cfg.models)} models, {len(cfg.categories)} categories, version {config_version(cfg)}"
          f"{f', {len(warnings)} warnings' if warnings else ''})")
    if args.against:
        from router.envoy_config import check_envoy_unchanged

        running = load_config(args.against)
        try:
            check_envoy_unchanged(running, cfg, args.file)
        except ConfigError as exc:
            print(f"{exc}\n{args.file}: a router serving {args.against} would refuse it as a hot reload",
                  file=sys.stderr)
            return NEEDS_RESTART
        restart = restart_only_changes(running, cfg)
        if restart:
            print(f"{args.file}: a router serving {args.against} applies it as a hot reload except "
                  f"{', '.join(restart)}, which it reads at start only: restart the router for them", file=sys.stderr)
            return NEEDS_RESTART
        print(f"{args.file}: a router serving {args.against} applies it as a hot reload")
    return 0


def _envoy_config(args: argparse.Namespace) -> int:
    from router.envoy_config import render

    text = render(load_config(args.config))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from router.extproc.slot import WorkerSlot, planned_workers

    slot = WorkerSlot.from_env()  # set by the supervisor for its workers
    workers = 1 if slot is not None else planned_workers(Path(args.config))
    if workers > 1:
        from router.extproc.workers import supervise

        return supervise(Path(args.config), args.log_format, workers, args.metrics_dir)
    from router.extproc.server import StartupError, serve

    try:
        asyncio.run(serve(Path(args.config), args.log_format, slot))  # an invalid file waits for a fix
    except StartupError as exc:
        print(f"semantic-router: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semantic-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the ext_proc gRPC server")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("--log-format", choices=["json", "console", "auto"], default=None,
                   help="overrides observability.log_format (auto: console on a TTY, else JSON)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("validate", help="check a config file and report every problem")
    p.add_argument("file", nargs="?", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("--against", metavar="RUNNING", help="the config the router serves now: say whether it would apply "
                   f"FILE as a hot reload (exit {NEEDS_RESTART}: Envoy's config changes, restart both; or it changes "
                   "server.* or observability.* keys, which only a router restart applies)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("envoy-config", help="write Envoy's config generated from the router config")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("-o", "--output", default="-", help="file to write, - for stdout")
    p.set_defaults(func=_envoy_config)

    from router.cache.cli import register as register_cache
    from router.classifier.cli import register as register_classifier
    from router.explain import register as register_explain

    register_classifier(sub)
    register_explain(sub)
    register_cache(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # prometheus-client picks its mode when first imported (the subcommands below import it): only a worker,
    # started by its supervisor with a directory that exists, writes metric files. The supervisor and a single
    # router keep their series in memory, so an operator's PROMETHEUS_MULTIPROC_DIR is taken out of the
    # environment here and handed to the supervisor, which creates and empties it.
    metrics_dir = None if os.environ.get(WORKER_STATE_ENV) else os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = build_parser().parse_args(argv)
    args.metrics_dir = metrics_dir
    try:
        return int(args.func(args))
    except ConfigError as exc:  # every problem with file and key path, never a traceback
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
