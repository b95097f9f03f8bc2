"""`semantic-router cache stats | invalidate | purge-expired`, against the configured backend.

Milvus Lite allows one process per file: while a router on this host serves from the Lite file, the CLI
uses that router's Lite child (as its workers do), else it starts its own. Namespaces are HMACs, so
`invalidate --tenant/--api-key` needs the same secret (env var `semantic_cache.hmac_secret_env`) as the router; the
dev stack (`make run`) keeps its own in var/cache-hmac.secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from router.cache import keys
from router.cache.lite import SHARED_LITE_ENV, SharedLite, running_child, shared_lite_env, vacuum
from router.cache.milvus import MilvusStore
from router.cache.semantic_cache import SemanticCache
from router.cache.store import CacheBackendError
from router.config import CONFIG_HELP, DEFAULT_CONFIG, CacheConfig, ConfigError, is_local_uri, load_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = subparsers.add_parser("cache", help="semantic cache: stats, invalidate, purge-expired")
    actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    p = actions.add_parser("stats", help="entries and backend details as JSON")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.set_defaults(func=lambda a: _run(a, _stats))
    p = actions.add_parser("invalidate", help="delete the entries of a namespace, a model and/or one entry")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.add_argument("--namespace", help="namespace hash as stored (32 hex characters)")
    p.add_argument("--tenant", help="tenant id as sent in the tenant header")
    p.add_argument("--user", help="user id (scope: user)")
    p.add_argument("--api-key", help="API key, when the key is the identity; `-` reads it from stdin, which keeps it "
                   "out of `ps` and the shell's history")
    p.add_argument("--model", help="selected model name")
    p.add_argument("--entry", help="one entry: the cache_entry of a request log line (its whole id, 64 hex)")
    p.set_defaults(func=lambda a: _run(a, _invalidate))
    p = actions.add_parser("purge-expired", help="delete entries past their TTL")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    p.set_defaults(func=lambda a: _run(a, _purge))


def namespace_for(cfg: CacheConfig, tenant: str | None, user: str | None, api_key: str | None) -> str:
    """The namespace the router derives for these identity values; same code path as requests."""
    headers = {}
    if tenant:
        headers[cfg.tenant_headers[0]] = tenant
    if user:
        headers[cfg.user_headers[0]] = user
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    who = keys.identity(headers, cfg.scope, cfg.tenant_headers, cfg.user_headers, cfg.use_api_key)
    if who is None:
        raise ValueError(f"these values give no identity under scope {cfg.scope!r}")
    secret, configured = keys.hmac_secret(cfg.hmac_secret_env)
    if not configured:
        # The dev stack keeps its secret in a file the router never reads; name it so `make run` users find it.
        raise ValueError(f"set {cfg.hmac_secret_env} to the secret the router runs with to derive namespaces "
                         f"(under `make run`: {cfg.hmac_secret_env}=$(cat var/cache-hmac.secret))")
    return keys.namespace_of(secret, who)


async def _stats(cache: SemanticCache, _: argparse.Namespace) -> dict[str, Any]:
    """The backend's own answer: a failure raises here and exits 1 (SemanticCache.stats() keeps serving)."""
    stats = await cache.backend.stats()
    return {"entries": stats.entries, **stats.details}


async def _invalidate(cache: SemanticCache, args: argparse.Namespace) -> dict[str, Any]:
    namespace = args.namespace
    api_key = sys.stdin.readline().strip() if args.api_key == "-" else args.api_key
    if args.tenant or args.user or api_key:
        namespace = namespace_for(cache.cfg, args.tenant, args.user, api_key)
    if namespace is None and args.model is None and args.entry is None:
        raise ValueError("give --namespace, --tenant/--user/--api-key, --model or --entry")
    deleted = await cache.invalidate(namespace=namespace, model=args.model, entry=args.entry)
    return {"deleted": deleted, "namespace": namespace, "model": args.model, "entry": args.entry,
            "erasure": await _erase(cache)}


async def _erase(cache: SemanticCache) -> str:
    """Deleted rows are gone from searches at once, not from disk: ask the backend to drop their bytes where it can,
    and say what it did (README "Semantic cache": what invalidate guarantees)."""
    store = cache.backend
    if not isinstance(store, MilvusStore):
        return "none needed: the memory backend holds nothing on disk"
    job = await store.compact()
    if job is not None:
        return (f"compaction {job} requested: the server rewrites the segments without the deleted rows; their old "
                f"files go at its next garbage collection, its write-ahead log keeps them until its retention")
    if isinstance(store.lite, SharedLite):
        return ("not yet: a router serves the Lite file, whose free pages keep the deleted rows' bytes until reused; "
                "run invalidate again with the router stopped to vacuum the file")
    await cache.close()  # this process's own Lite child stops, so the file is free to rewrite
    if await asyncio.to_thread(vacuum, store.uri):
        return "vacuumed: the Lite file was rewritten without the deleted rows' bytes"
    return "not yet: another process opened the Lite file; run invalidate again with the router stopped"


async def _purge(cache: SemanticCache, _: argparse.Namespace) -> dict[str, Any]:
    return {"purged": await cache.backend.purge_expired(time.time())}


def _share_a_running_child(cfg: CacheConfig) -> None:
    """Beside a router serving the Lite file, talk to its child: a second one on the file cannot start."""
    if cfg.backend == "memory" or not is_local_uri(cfg.uri) or SHARED_LITE_ENV in os.environ:
        return
    if (uri_file := running_child(cfg.uri)) is not None:
        os.environ[SHARED_LITE_ENV] = shared_lite_env(cfg.uri, uri_file)


def _run(args: argparse.Namespace,
         action: Callable[[SemanticCache, argparse.Namespace], Awaitable[dict[str, Any]]]) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    _share_a_running_child(cfg.semantic_cache)

    async def go() -> dict[str, Any]:
        cache = SemanticCache.from_config(cfg)
        try:
            return await action(cache, args)
        finally:
            await cache.close()

    try:
        print(json.dumps(asyncio.run(go()), indent=1))
    except (CacheBackendError, ValueError) as exc:
        print(f"cache {args.cache_command}: {exc}", file=sys.stderr)
        return 1
    return 0
