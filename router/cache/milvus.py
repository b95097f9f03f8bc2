"""Milvus cache store through pymilvus MilvusClient; the URI picks the deployment.

A local file path runs embedded Milvus Lite (one child process per file, owned and restarted by
`lite.py`), `http://host:19530` a standalone server or a cluster. Blocking calls run in thread pools
under a time budget: reads (get, search) on a pool of their own, so they never queue behind writes,
deletes or counts, which share a second pool. A failure or timeout raises CacheBackendError (the
facade counts it as a miss) and drops the client; the next call after the reconnect backoff connects again on the
connector thread and re-checks the collection, so a restarted server or Lite child is picked up without anyone's
help. The backoff is constant: it doubled up to 30 s while connects kept failing, so a Milvus back after a minute
away was reconnected, and reported ready, up to 30 s late; a refused connect costs ~10 ms, one at a time.

Connecting (up to 30 s against a server that is starting) happens on that connector thread, which
holds no lock the event loop takes: callers wait for it within their own budget, and `close()` never
blocks the loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from router.cache.lite import LiteProcess, LiteUnavailable, SharedLite, lite_for
from router.cache.store import (
    DIM,
    HEX,
    CacheBackendError,
    CacheEntry,
    CacheTimeout,
    Candidate,
    InvalidCacheArgument,
    StoreStats,
    entry_id,
)
from router.config import LOOP_SLACK, is_local_uri
from router.observability import metrics

T = TypeVar("T")
MAX_TEXT_BYTES = 8192
MAX_PAYLOAD_BYTES = 65535
HNSW_DEFAULTS = {"M": 16, "efConstruction": 200}
# Creating and loading a collection on a freshly started server takes seconds; it runs in a pool
# thread, so callers still get their own short budget while it completes.
CONNECT_TIMEOUT_S = 30.0
# Reads mostly wait on Milvus; at ~200 lookups/s and ~15-30 ms each under load, 4 threads queued lookups
# for ~50 ms before they started (measured with bench/fault_suite.py), 8 keep the queue short.
READ_THREADS = 8
_FAILURES = (MilvusException, grpc.RpcError, OSError, LiteUnavailable)
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


class _QueueExpired(TimeoutError):
    """The budget ran out while the call waited for a pool thread: the backend was never asked."""


class CacheSchemaError(CacheBackendError):
    """The collection exists with another schema: an operator must drop it or pick another name."""


def _ms(t: float) -> int:
    return int(t * 1000)


def _check(name: str, value: str, pattern: re.Pattern[str]) -> str:
    """Filter expressions are strings: only values that cannot break out of a literal get in."""
    if not pattern.match(value):
        raise InvalidCacheArgument(f"invalid {name} for a cache filter")
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
        self._reads = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="milvus-read")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="milvus-write")
        self._connector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="milvus-connect")
        self._lite = lite_for(uri) if local else None
        self._lock = threading.Lock()  # guards the fields below; never held across I/O
        self._client: MilvusClient | None = None
        self._connecting: Future[MilvusClient] | None = None
        self._retry_at = 0.0
        self._closed = False
        self.errors = 0
        self.reconnects = 0
        self.last_error = ""

    # --- connection -------------------------------------------------------------------------

    @property
    def lite(self) -> LiteProcess | SharedLite | None:
        """The embedded Lite child (local URIs), for supervision and fault tests."""
        return self._lite

    def _connection(self) -> Future[MilvusClient]:
        """The live client, or the connect in progress, starting one when the backoff allows."""
        with self._lock:
            if self._closed:
                raise CacheBackendError("cache store closed")
            if self._client is not None:
                done: Future[MilvusClient] = Future()
                done.set_result(self._client)
                return done
            if self._connecting is None:
                if time.monotonic() < self._retry_at:
                    raise CacheBackendError(f"backing off after: {self.last_error}")
                self._connecting = self._connector.submit(self._connect)
            return self._connecting

    def _connect(self) -> MilvusClient:
        """Connect and check the collection (connector thread); restarts a dead Lite child first."""
        try:
            uri = self._lite.ensure_running() if self._lite is not None else self.uri
            client = MilvusClient(uri=uri, token=self._token, timeout=CONNECT_TIMEOUT_S)
            try:
                self._ensure_collection(client)
            except BaseException:
                client.close()
                raise
        except BaseException as exc:
            with self._lock:
                self._connecting = None
                self._retry_at = time.monotonic() + self._backoff_s
                self.last_error = _describe(exc)
            raise
        with self._lock:
            self._connecting = None
            stale = self._closed
            if not stale:
                self._client = client
                self.reconnects += 1
        if stale:
            client.close()
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
        try:
            self._connection().add_done_callback(lambda f: f.exception())  # failures are recorded by _connect
        except CacheBackendError:
            pass

    async def connected(self) -> None:
        """Wait for the connect `warm_up` started (shielded: a caller that stops waiting leaves it running)."""
        try:
            await asyncio.shield(_observed(asyncio.wrap_future(self._connection())))
        except CacheBackendError:
            raise
        except Exception as exc:  # noqa: BLE001 - `_connect` recorded it; callers see the store's one error type
            raise CacheBackendError(_describe(exc)) from None

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
            self._writes.submit(client.close)

    async def _run(self, fn: Callable[[MilvusClient, float], T], timeout_s: float, write: bool = False) -> T:
        """fn(client, seconds left) on the read or the write pool; every failure is CacheBackendError.

        The budget is a deadline the pool thread enforces (it skips a call whose time was spent queueing
        and gives Milvus only what is left as its gRPC deadline), so an answer that came back in time is
        used even when a busy event loop notices it late, even past the loop-side timeout: that one is a
        backstop at LOOP_SLACK x the budget for a call that ignores its deadline.
        """
        asked = time.monotonic()
        deadline = asked + timeout_s
        marks: list[float] = []  # when the pool thread started the call and when the backend answered

        def call(client: MilvusClient) -> T:
            started = time.monotonic()
            left = deadline - started
            if left <= 0:
                raise _QueueExpired
            try:
                return fn(client, left)
            finally:
                marks.extend((started, time.monotonic()))

        try:
            result = await self._call(call, timeout_s * LOOP_SLACK, marks, deadline, write)
            if not write:
                metrics.observe_lookup_stages(marks[0] - asked, marks[1] - marks[0], time.monotonic() - marks[1])
            return result
        except CacheSchemaError as exc:
            self.errors += 1
            self._drop_client(str(exc))
            raise
        except CacheBackendError:
            self.errors += 1
            raise
        except TimeoutError as exc:
            self.errors += 1
            if not write:
                metrics.record_lookup_timeout("queue" if isinstance(exc, _QueueExpired) else "loop")
            self.last_error = f"timeout after {timeout_s * 1000:.0f} ms"
            raise CacheTimeout(self.last_error) from None
        except _FAILURES as exc:
            self.errors += 1
            if _deadline_exceeded(exc):  # Milvus ran out of the time it was given: the connection is fine
                if not write:
                    metrics.record_lookup_timeout("backend")
                self.last_error = f"timeout after {timeout_s * 1000:.0f} ms"
                raise CacheTimeout(self.last_error) from None
            self._drop_client(_describe(exc))
            raise CacheBackendError(self.last_error) from exc

    async def _call(self, call: Callable[[MilvusClient], T], backstop_s: float, marks: list[float],
                    deadline: float, write: bool) -> T:
        """Run `call` on its pool under the loop's backstop. When the backstop fires because the loop was
        busy, not the backend (the thread marked its answer before the deadline), the answer is used.

        Both awaits are shielded (a cancelled wait must not cancel the shared connect, and the backstop must
        leave the call's answer readable), so a caller that stops waiting, at the backstop or cancelled by an
        outer scope, leaves its future behind: `_observed` reads its outcome when it ends, else asyncio logs
        the backend's late failure as "Future exception was never retrieved", at ERROR with a traceback."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] | None = None
        try:
            async with asyncio.timeout(backstop_s):
                client = self._client  # connected: no hop through the loop before the call
                if client is None:
                    client = await asyncio.shield(_observed(asyncio.wrap_future(self._connection())))
                future = _observed(loop.run_in_executor(self._writes if write else self._reads, call, client))
                return await asyncio.shield(future)
        except TimeoutError:
            if future is None:
                raise
            if future.done() and not future.cancelled():
                error = future.exception()
                if error is not None:
                    raise error from None  # the backend's own failure, not the loop's
                if len(marks) == 2 and marks[1] <= deadline:
                    metrics.record_lookup_late()
                    return future.result()
            raise

    # --- CacheStore ---------------------------------------------------------------------------

    def _entry(self, row: dict[str, Any]) -> CacheEntry:
        return CacheEntry(row["id"], row["scope"], row["namespace"], row["model"], None, row["text"],
                          row["payload"], row["created_at"] / 1000, row["expires_at"] / 1000)

    async def get(self, key: str, now: float) -> CacheEntry | None:
        key = _check("key", key, HEX)
        rows = await self._run(lambda c, left: c.get(self.collection, ids=[key], output_fields=_OUT,
                                                     consistency_level=self._consistency, timeout=left),
                               self._timeout_s)
        live = [r for r in rows if r["expires_at"] > _ms(now)]
        return self._entry(live[0]) if live else None

    async def search(
        self, scope: str, vector: np.ndarray, top_k: int, min_similarity: float, now: float
    ) -> list[Candidate]:
        flt = f'scope == "{_check("scope", scope, HEX)}" and has_vector == true and expires_at > {_ms(now)}'
        data = [np.asarray(vector, dtype=np.float32).tolist()]
        hits = await self._run(lambda c, left: c.search(
            self.collection, data=data, filter=flt, limit=top_k, output_fields=_OUT,
            search_params=self._search_params, consistency_level=self._consistency,
            timeout=left), self._timeout_s)
        out = [Candidate(self._entry({**h["entity"], "id": h["id"]}), float(h["distance"])) for h in hits[0]]
        return [c for c in out if c.similarity >= min_similarity]

    async def upsert(self, entry: CacheEntry) -> None:
        await self.upsert_many([entry])

    async def upsert_many(self, entries: list[CacheEntry]) -> None:
        """One upsert call for the batch: Lite spends tens of ms per call whatever its size."""
        rows = list({e.key: self._row(e) for e in entries}.values())  # one row per key, the latest wins
        if not rows:
            return
        await self._run(lambda c, left: c.upsert(self.collection, rows, timeout=left),
                        self._write_timeout_s, write=True)

    @staticmethod
    def _row(entry: CacheEntry) -> dict[str, Any]:
        if len(entry.text.encode()) > MAX_TEXT_BYTES or len(entry.payload.encode()) > MAX_PAYLOAD_BYTES:
            raise InvalidCacheArgument("entry too large for the collection schema")
        return {
            "id": _check("key", entry.key, HEX), "scope": entry.scope, "namespace": entry.namespace,
            "model": entry.model, "has_vector": entry.vector is not None,
            "created_at": _ms(entry.created_at), "expires_at": _ms(entry.expires_at), "text": entry.text,
            "payload": entry.payload,
            "vector": _ZERO if entry.vector is None else np.asarray(entry.vector, dtype=np.float32).tolist(),
        }

    async def insert_many(self, entries: list[CacheEntry], timeout_s: float = 120.0) -> None:
        """Bulk load (benchmarks, warm starts): one insert call per batch, then a flush."""
        rows = [self._row(e) for e in entries]

        def work(c: MilvusClient, _left: float) -> None:
            for i in range(0, len(rows), 1000):
                c.insert(self.collection, rows[i:i + 1000], timeout=timeout_s)
            c.flush(self.collection, timeout=timeout_s)

        await self._run(work, timeout_s, write=True)

    async def _count_and_delete(self, flt: str) -> int:
        def count(c: MilvusClient) -> int:
            rows = c.query(self.collection, filter=flt, output_fields=["count(*)"],
                           consistency_level="Strong", timeout=self._write_timeout_s)
            return int(rows[0]["count(*)"]) if rows else 0

        def work(c: MilvusClient, _left: float) -> int:
            found = count(c)
            if found:
                c.delete(self.collection, filter=flt, timeout=self._write_timeout_s)
                count(c)  # a Strong read is a barrier: Session reads ignore deletes for ~1 s on 2.3
            return found

        return await self._run(work, self._write_timeout_s * 3, write=True)

    async def delete(self, namespace: str | None = None, model: str | None = None, entry: str | None = None) -> int:
        parts = []
        if entry is not None:
            parts.append(f'id == "{entry_id(entry)}"')
        if namespace is not None:
            parts.append(f'namespace == "{_check("namespace", namespace, HEX)}"')
        if model is not None:
            parts.append(f'model == "{_check("model", model, _MODEL)}"')
        if not parts:
            raise InvalidCacheArgument("delete needs a namespace, a model or an entry")
        return await self._count_and_delete(" and ".join(parts))

    async def compact(self) -> int | None:
        """Ask a Milvus server to compact the collection: its segments are rewritten without the deleted rows (their
        old files go at the server's next garbage collection; its write-ahead log keeps them until its retention).
        The compaction's id; None on Lite, which has none (`lite.vacuum`)."""
        if self._lite is not None:
            return None
        job = await self._run(lambda c, _: c.compact(self.collection, timeout=self._write_timeout_s),
                              self._write_timeout_s, write=True)
        return int(job)

    async def purge_expired(self, now: float) -> int:
        return await self._count_and_delete(f"expires_at <= {_ms(now)}")

    async def stats(self) -> StoreStats:
        rows = await self._run(lambda c, _: c.query(self.collection, filter="", output_fields=["count(*)"],
                                                 consistency_level="Strong", timeout=self._write_timeout_s),
                               self._write_timeout_s, write=True)
        details: dict[str, int | str] = {"backend": "milvus-lite" if is_local_uri(self.uri) else "milvus",
                                         "collection": self.collection, "errors": self.errors,
                                         "connects": self.reconnects}
        return StoreStats(int(rows[0]["count(*)"]) if rows else 0, details)

    async def close(self) -> None:
        """Never blocks the loop: a connect in progress finishes on its thread and its client is closed. Closing
        again does nothing (it raised RuntimeError from the shut-down connector), so owners may close on every path."""
        with self._lock:
            if self._closed:
                return
            client, self._client, self._closed = self._client, None, True
        loop = asyncio.get_running_loop()
        if client is not None:
            await loop.run_in_executor(self._writes, client.close)
        for pool in (self._reads, self._writes):
            pool.shutdown(wait=False, cancel_futures=True)
        if self._lite is not None:  # after any connect in progress, so that one's child stops too
            await asyncio.wrap_future(self._connector.submit(self._lite.release))
        self._connector.shutdown(wait=False)


def _observed(future: asyncio.Future[T]) -> asyncio.Future[T]:
    """`future`, its outcome read as soon as it ends: whoever gave up on it has its own outcome (a counted
    timeout, a cancelled request), so a late failure needs no report."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


def _deadline_exceeded(exc: BaseException) -> bool:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return bool(exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, MilvusException) and "deadline" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
