"""Milvus cache store through pymilvus MilvusClient; the URI picks the deployment.

A local file path runs embedded Milvus Lite (one process per file), `http://host:19530` a
standalone server or a cluster. Every blocking call runs in a small thread pool under a time
budget; a failure or timeout raises CacheBackendError (the facade counts it as a miss), drops the
client, and the next call after `reconnect_backoff_s` connects again and re-checks the
collection, so a restarted server is picked up without anyone's help.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from router.cache.store import DIM, CacheBackendError, CacheEntry, Candidate, StoreStats

T = TypeVar("T")
MAX_TEXT_BYTES = 8192
MAX_PAYLOAD_BYTES = 65535
HNSW_DEFAULTS = {"M": 16, "efConstruction": 200}
# Creating and loading a collection on a freshly started server takes seconds; it runs in a pool
# thread, so callers still get their own short budget while it completes.
CONNECT_TIMEOUT_S = 30.0
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,127}$")
# name -> (type, max_length or dim); checked against an existing collection.
SCHEMA: dict[str, tuple[DataType, int | None]] = {
    "id": (DataType.VARCHAR, 64),
    "scope": (DataType.VARCHAR, 32),
    "namespace": (DataType.VARCHAR, 32),
    "model": (DataType.VARCHAR, 128),
    "has_vector": (DataType.BOOL, None),
    "created_at": (DataType.INT64, None),
    "expires_at": (DataType.INT64, None),
    "text": (DataType.VARCHAR, MAX_TEXT_BYTES),
    "payload": (DataType.VARCHAR, MAX_PAYLOAD_BYTES),
    "vector": (DataType.FLOAT_VECTOR, DIM),
}
_OUT = ["id", "scope", "namespace", "model", "created_at", "expires_at", "text", "payload"]
_ZERO = [0.0] * DIM


class CacheSchemaError(CacheBackendError):
    """The collection exists with another schema: an operator must drop it or pick another name."""


def is_local_uri(uri: str) -> bool:
    return not re.match(r"^(https?|tcp|grpc|unix)://", uri)


def _ms(t: float) -> int:
    return int(t * 1000)


def _check(name: str, value: str, pattern: re.Pattern[str]) -> str:
    """Filter expressions are strings: only values that cannot break out of a literal get in."""
    if not pattern.match(value):
        raise ValueError(f"invalid {name} for a cache filter")
    return value


class MilvusStore:
    """Implements CacheStore on a Milvus collection (see SCHEMA)."""

    def __init__(
        self, uri: str, collection: str, *, token: str = "", index_type: str = "HNSW",
        index_params: dict[str, int] | None = None, search_params: dict[str, int] | None = None,
        consistency_level: str = "Bounded", timeout_s: float = 0.05, write_timeout_s: float = 2.0,
        reconnect_backoff_s: float = 2.0,
    ):
        self.uri, self.collection, self._token = uri, collection, token
        local = is_local_uri(uri)
        self._index_type = "AUTOINDEX" if local and index_type == "HNSW" else index_type
        hnsw = self._index_type == "HNSW"
        # AUTOINDEX takes no build parameters (Lite maps HNSW to it, so configured HNSW params are dropped).
        self._index_params = {} if self._index_type == "AUTOINDEX" else dict(
            index_params or (HNSW_DEFAULTS if hnsw else {}))
        self._search_params = {"metric_type": "IP", "params": dict(search_params or ({"ef": 64} if hnsw else {}))}
        self._consistency = consistency_level
        self._timeout_s, self._write_timeout_s = timeout_s, write_timeout_s
        self._backoff_s = reconnect_backoff_s
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="milvus-cache")
        self._lock = threading.Lock()
        self._client: MilvusClient | None = None
        self._retry_at = 0.0
        self.errors = 0
        self.reconnects = 0
        self.last_error = ""

    # --- connection -------------------------------------------------------------------------

    def _connected(self) -> MilvusClient:
        """The live client, connecting and checking the collection first if needed (worker thread)."""
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._retry_at:
                raise CacheBackendError(f"backing off after: {self.last_error}")
            if is_local_uri(self.uri):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            client = MilvusClient(uri=self.uri, token=self._token, timeout=CONNECT_TIMEOUT_S)
            try:
                self._ensure_collection(client)
            except BaseException:
                client.close()
                raise
            self._client = client
            self.reconnects += 1
            return client

    def _ensure_collection(self, client: MilvusClient) -> None:
        timeout = CONNECT_TIMEOUT_S
        if client.has_collection(self.collection, timeout=timeout):
            self._check_schema(client.describe_collection(self.collection, timeout=timeout))
        else:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            for name, (dtype, size) in SCHEMA.items():
                extra: dict[str, Any] = {}
                if dtype == DataType.VARCHAR:
                    extra["max_length"] = size
                elif dtype == DataType.FLOAT_VECTOR:
                    extra["dim"] = size
                schema.add_field(name, dtype, is_primary=name == "id", **extra)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type=self._index_type, metric_type="IP",
                            params=self._index_params)
            client.create_collection(self.collection, schema=schema, index_params=index,
                                     consistency_level=self._consistency, timeout=timeout)
        client.load_collection(self.collection, timeout=timeout)

    def warm_up(self) -> None:
        """Connect in the background now, so the first requests do not pay for it (Lite starts a process)."""

        def connect() -> None:
            try:
                self._connected()
            except (CacheBackendError, MilvusException, grpc.RpcError, OSError) as exc:
                self.errors += 1
                self._drop_client(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")

        self._pool.submit(connect)

    def _check_schema(self, description: dict[str, Any]) -> None:
        found = {f["name"]: f for f in description.get("fields", [])}
        problems = []
        for name, (dtype, size) in SCHEMA.items():
            field = found.get(name)
            params = (field or {}).get("params", {})
            have = params.get("max_length", params.get("dim"))
            if field is None or field["type"] != dtype or (size is not None and int(have or 0) != size):
                problems.append(name)
        if problems or set(found) != set(SCHEMA):
            raise CacheSchemaError(
                f"collection {self.collection!r} has another schema (fields {sorted(set(problems) | (set(found) ^ set(SCHEMA)))}); "
                "drop it or configure another collection")

    def _drop_client(self, reason: str) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._retry_at = time.monotonic() + self._backoff_s
            self.last_error = reason
        if client is not None:
            self._pool.submit(client.close)

    async def _run(self, fn: Callable[[MilvusClient], T], timeout_s: float) -> T:
        """Run fn(client) in the pool within the budget; every failure becomes CacheBackendError."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, lambda: fn(self._connected())), timeout_s)
        except CacheSchemaError as exc:
            self.errors += 1
            self._drop_client(str(exc))
            raise
        except CacheBackendError:
            self.errors += 1
            raise
        except TimeoutError:
            self.errors += 1
            self.last_error = f"timeout after {timeout_s * 1000:.0f} ms"
            raise CacheBackendError(self.last_error) from None
        except (MilvusException, grpc.RpcError, OSError, ValueError) as exc:
            self.errors += 1
            self._drop_client(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
            raise CacheBackendError(self.last_error) from exc

    # --- CacheStore ---------------------------------------------------------------------------

    def _entry(self, row: dict[str, Any]) -> CacheEntry:
        return CacheEntry(row["id"], row["scope"], row["namespace"], row["model"], None, row["text"],
                          row["payload"], row["created_at"] / 1000, row["expires_at"] / 1000)

    async def get(self, key: str, now: float) -> CacheEntry | None:
        key = _check("key", key, _HEX)
        rows = await self._run(lambda c: c.get(self.collection, ids=[key], output_fields=_OUT,
                                               consistency_level=self._consistency, timeout=self._timeout_s), self._timeout_s)
        live = [r for r in rows if r["expires_at"] > _ms(now)]
        return self._entry(live[0]) if live else None

    async def search(
        self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float, now: float
    ) -> list[Candidate]:
        flt = f'scope == "{_check("scope", scope, _HEX)}" and has_vector == true and expires_at > {_ms(now)}'
        data = [np.asarray(vector, dtype=np.float32).tolist()]
        hits = await self._run(lambda c: c.search(
            self.collection, data=data, filter=flt, limit=top_k, output_fields=_OUT,
            search_params=self._search_params, consistency_level=self._consistency,
            timeout=self._timeout_s), self._timeout_s)
        out = [Candidate(self._entry({**h["entity"], "id": h["id"]}), float(h["distance"])) for h in hits[0]]
        return [c for c in out if c.similarity >= min_similarity]

    async def upsert(self, entry: CacheEntry) -> None:
        if len(entry.text.encode()) > MAX_TEXT_BYTES or len(entry.payload.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError("entry too large for the collection schema")
        row = self._row(entry)
        await self._run(lambda c: c.upsert(self.collection, [row], timeout=self._write_timeout_s),
                        self._write_timeout_s)

    @staticmethod
    def _row(entry: CacheEntry) -> dict[str, Any]:
        return {
            "id": _check("key", entry.key, _HEX), "scope": entry.scope, "namespace": entry.namespace,
            "model": entry.model, "has_vector": entry.vector is not None,
            "created_at": _ms(entry.created_at), "expires_at": _ms(entry.expires_at), "text": entry.text,
            "payload": entry.payload,
            "vector": _ZERO if entry.vector is None else np.asarray(entry.vector, dtype=np.float32).tolist(),
        }

    async def insert_many(self, entries: list[CacheEntry], timeout_s: float = 120.0) -> None:
        """Bulk load (benchmarks, warm starts): one insert call per batch, then a flush."""
        rows = [self._row(e) for e in entries]

        def work(c: MilvusClient) -> None:
            for i in range(0, len(rows), 1000):
                c.insert(self.collection, rows[i:i + 1000], timeout=timeout_s)
            c.flush(self.collection, timeout=timeout_s)

        await self._run(work, timeout_s)

    async def _count_and_delete(self, flt: str) -> int:
        def count(c: MilvusClient) -> int:
            rows = c.query(self.collection, filter=flt, output_fields=["count(*)"],
                           consistency_level="Strong", timeout=self._write_timeout_s)
            return int(rows[0]["count(*)"]) if rows else 0

        def work(c: MilvusClient) -> int:
            found = count(c)
            if found:
                c.delete(self.collection, filter=flt, timeout=self._write_timeout_s)
                count(c)  # a Strong read is a barrier: Session reads ignore deletes for ~1 s on 2.3
            return found

        return await self._run(work, self._write_timeout_s * 3)

    async def delete(self, namespace: str | None = None, model: str | None = None) -> int:
        parts = []
        if namespace is not None:
            parts.append(f'namespace == "{_check("namespace", namespace, _HEX)}"')
        if model is not None:
            parts.append(f'model == "{_check("model", model, _MODEL)}"')
        if not parts:
            raise ValueError("delete needs a namespace or a model")
        return await self._count_and_delete(" and ".join(parts))

    async def purge_expired(self, now: float) -> int:
        return await self._count_and_delete(f"expires_at <= {_ms(now)}")

    async def stats(self) -> StoreStats:
        rows = await self._run(lambda c: c.query(self.collection, filter="", output_fields=["count(*)"],
                                                 consistency_level="Strong", timeout=self._write_timeout_s),
                               self._write_timeout_s)
        details: dict[str, int | str] = {"backend": "milvus-lite" if is_local_uri(self.uri) else "milvus",
                                         "collection": self.collection, "errors": self.errors,
                                         "connects": self.reconnects}
        return StoreStats(int(rows[0]["count(*)"]) if rows else 0, details)

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, client.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
