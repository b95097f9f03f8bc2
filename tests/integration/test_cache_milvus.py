"""Every cache backend through the same cases: memory, embedded Milvus Lite and a real Milvus server.

The server cases need an isolated network namespace (see devstack/milvus_server.py); they skip
with the command to use otherwise, or fail when VSR_REQUIRE_MILVUS=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from milvus_lite.server_manager import server_manager_instance
from pymilvus import DataType, MilvusClient

from devstack.milvus_server import MilvusServer, _accepts
from router.cache.lite import LiteProcess, LiteUnavailable
from router.cache.memory import MemoryStore
from router.cache.milvus import CacheSchemaError, MilvusStore
from router.cache.store import CacheBackendError, CacheEntry, CacheStore
from router.config import is_local_uri

NOW = time.time()
# These cases check what a store keeps, not how soon a write shows: read your own writes.
READ_YOUR_WRITES = "Session"
T = TypeVar("T")
rng = np.random.default_rng(1)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def near(base: np.ndarray, sim: float) -> np.ndarray:
    ortho = rng.standard_normal(384)
    ortho = unit(ortho - ortho @ base * base)
    return unit(sim * base + np.sqrt(1 - sim**2) * ortho)


BASE = unit(rng.standard_normal(384))


def entry(key: str, vector: np.ndarray | None = BASE, scope: str = "aa", namespace: str = "e1",
          model: str = "m1", ttl: float = 3600, text: str = "q") -> CacheEntry:
    return CacheEntry(key, scope, namespace, model, vector, text, f'{{"k":"{key}"}}', NOW, NOW + ttl)


def k(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture(scope="module")
def lite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lite") / "cache.db"


@pytest.fixture
async def milvus_stores() -> AsyncIterator[Callable[..., MilvusStore]]:
    """Makes MilvusStores with this module's settings, all closed at teardown even when the test failed: a store
    left open kept the shared Lite child of the module's file alive, and the next test expecting it stopped failed."""
    made: list[MilvusStore] = []

    def make(uri: str | Path, collection: str | None = None, **settings: Any) -> MilvusStore:
        made.append(MilvusStore(str(uri), collection or f"t_{uuid.uuid4().hex[:12]}", **{
            "timeout_s": 10, "write_timeout_s": 30, "consistency_level": READ_YOUR_WRITES, **settings}))
        return made[-1]

    yield make
    for s in made:
        await s.close()


def _uri(server: MilvusServer | str) -> str:
    return server if isinstance(server, str) else server.uri


@pytest.fixture(params=["memory", "lite", "server"])
async def store(request: pytest.FixtureRequest, lite_path: Path) -> AsyncIterator[CacheStore]:
    collection = f"t_{uuid.uuid4().hex[:12]}"
    s: CacheStore
    if request.param == "memory":
        s = MemoryStore(1000)
    elif request.param == "lite":
        s = MilvusStore(str(lite_path), collection, timeout_s=10, write_timeout_s=30, consistency_level=READ_YOUR_WRITES)
    else:
        s = MilvusStore(_uri(request.getfixturevalue("milvus_server")), collection, timeout_s=10,
                        write_timeout_s=30, consistency_level=READ_YOUR_WRITES)
    yield s
    await s.close()


async def test_exact_get_and_expiry(store: CacheStore) -> None:
    await store.upsert(entry(k(1)))
    await store.upsert(entry(k(2), ttl=-1))
    got = await store.get(k(1), NOW)
    assert got is not None and got.payload == f'{{"k":"{k(1)}"}}' and got.scope == "aa"
    assert await store.get(k(2), NOW) is None  # expired: never served
    assert await store.get(k(3), NOW) is None


async def test_search_best_first_threshold_and_top_k(store: CacheStore) -> None:
    for i, sim in enumerate([0.99, 0.95, 0.90, 0.50]):
        await store.upsert(entry(k(i), near(BASE, sim)))
    found = await store.search("aa", BASE, 2, 0.8, NOW)
    assert [c.entry.key for c in found] == [k(0), k(1)]
    assert found[0].similarity == pytest.approx(0.99, abs=1e-3)
    assert [c.entry.key for c in await store.search("aa", BASE, 10, 0.92, NOW)] == [k(0), k(1)]


async def test_scopes_never_mix_and_expired_or_exact_only_entries_are_not_searched(store: CacheStore) -> None:
    await store.upsert(entry(k(1), BASE, scope="bb", namespace="e2"))
    await store.upsert(entry(k(2), BASE, ttl=-1))
    await store.upsert(entry(k(3), None))
    assert await store.search("aa", BASE, 5, 0.0, NOW) == []
    assert [c.entry.namespace for c in await store.search("bb", BASE, 5, 0.5, NOW)] == ["e2"]
    assert await store.get(k(3), NOW) is not None


async def test_delete_one_entry_by_the_id_the_request_log_names(store: CacheStore) -> None:
    """On call: a wrong cached answer, found by its `cache_entry` (the key) in the request log, could only be removed
    with its whole tenant namespace or model. By its id exactly: a prefix ("c", as `--entry 0` was) deleted every
    entry beginning with it, any tenant's."""
    kept, doomed, alike = "ab" * 32, "cd" * 32, "cd" * 31 + "ef"
    for key in (kept, doomed, alike):
        await store.upsert(entry(key))
    for prefix in ("c", doomed[:16], doomed[:63]):
        with pytest.raises(CacheBackendError):
            await store.delete(entry=prefix)
    assert await store.get(alike, NOW) is not None
    assert await store.delete(entry=doomed) == 1
    assert await store.get(doomed, NOW) is None and await store.get(kept, NOW) is not None
    assert await store.get(alike, NOW) is not None
    with pytest.raises(CacheBackendError):  # an id must be hex: it goes into a filter expression
        await store.delete(entry='0" or key != "')


async def test_upsert_replaces(store: CacheStore) -> None:
    await store.upsert(entry(k(1), text="old"))
    await store.upsert(entry(k(1), text="new"))
    found = await store.search("aa", BASE, 5, 0.5, NOW)
    assert [c.entry.text for c in found] == ["new"]


async def test_delete_by_namespace_or_model_and_purge(store: CacheStore) -> None:
    await store.upsert(entry(k(1), namespace="e1", model="m1"))
    await store.upsert(entry(k(2), namespace="e2", model="m1", scope="bb"))
    await store.upsert(entry(k(3), namespace="e2", model="m2", scope="cc"))
    await store.upsert(entry(k(4), namespace="e3", model="m3", scope="dd", ttl=-1))
    assert (await store.stats()).entries == 4
    assert await store.delete(namespace="e1") == 1
    assert await store.get(k(1), NOW) is None and await store.get(k(2), NOW) is not None
    assert await store.delete(model="m2") == 1
    assert await store.purge_expired(NOW) == 1
    assert (await store.stats()).entries == 1
    with pytest.raises(CacheBackendError):  # the protocol's only exception, even for a bad argument
        await store.delete()


def _wrong_schema(uri: str, collection: str) -> None:
    """Someone else's collection, made with pymilvus's own client. On a Lite file pymilvus starts a server that
    outlives client.close(), holding the file's lock in this process; it is released here, which waits for its exit.
    Left running, it was let go by the store's own probe of the lock (POSIX locks belong to the process) and the
    store's start raced its exit: refused about one run in four."""
    client = MilvusClient(uri)
    try:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=128)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        client.create_collection(collection, schema=schema, index_params=index)
    finally:
        client.close()
        if is_local_uri(uri):
            server_manager_instance.release_server(uri)


@pytest.mark.parametrize("kind", ["lite", "server"])
async def test_existing_collection_with_another_schema_is_refused(
        kind: str, request: pytest.FixtureRequest, lite_path: Path, milvus_stores: Callable[..., MilvusStore]) -> None:
    uri = str(lite_path) if kind == "lite" else _uri(request.getfixturevalue("milvus_server"))
    collection = f"bad_{uuid.uuid4().hex[:12]}"
    _wrong_schema(uri, collection)
    with pytest.raises(CacheSchemaError, match="another schema"):
        await milvus_stores(uri, collection).get(k(1), NOW)


async def test_collection_is_created_then_reopened_with_its_entries(
        lite_path: Path, milvus_stores: Callable[..., MilvusStore]) -> None:
    collection = f"t_{uuid.uuid4().hex[:12]}"
    first = milvus_stores(lite_path, collection)
    await first.upsert(entry(k(9)))
    await first.close()
    assert await milvus_stores(lite_path, collection).get(k(9), NOW) is not None


async def _eventually(call: Callable[[], Awaitable[T]], tries: int = 20) -> T:
    for _ in range(tries - 1):
        try:
            return await call()
        except CacheBackendError:
            await asyncio.sleep(0.5)
    return await call()


async def test_server_stopped_mid_test_misses_counts_and_reconnects(request: pytest.FixtureRequest) -> None:
    """Stops and restarts the session's server (fresh data dir, same port): later tests recreate collections."""
    server = request.getfixturevalue("milvus_server")
    if isinstance(server, str):
        pytest.skip("VSR_MILVUS_URI names a server this test does not own; unset it to run the fault test")
    s = MilvusStore(server.uri, "faults", timeout_s=0.2, write_timeout_s=30, reconnect_backoff_s=0.5,
                    consistency_level=READ_YOUR_WRITES)
    try:
        await s.upsert(entry(k(1)))
        assert await _eventually(lambda: s.get(k(1), NOW)) is not None  # first reads load segments
        assert await _eventually(lambda: s.search("aa", BASE, 3, 0.5, NOW))
        server.stop()
        assert not _accepts(server.port), "something still listens on the stopped server's port"
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(CacheBackendError):
                await s.search("aa", BASE, 3, 0.5, NOW)
            assert time.monotonic() - started < 0.5  # within the budget, or at once while backing off
        assert s.errors >= 3
        server.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                await s.upsert(entry(k(2)))  # the reconnect recreates the collection on the new server
                break
            except CacheBackendError:
                assert time.monotonic() < deadline, f"no reconnection: {s.last_error}"
                await asyncio.sleep(0.5)
        assert await _eventually(lambda: s.get(k(2), NOW)) is not None
        assert s.reconnects >= 2
    finally:
        await s.close()


async def test_a_killed_lite_child_is_restarted_and_the_collection_reopened(
        lite_path: Path, milvus_stores: Callable[..., MilvusStore]) -> None:
    """pymilvus's own Lite manager never notices its child dying; the store owns and restarts it."""
    s = milvus_stores(lite_path, timeout_s=2, reconnect_backoff_s=0.2)
    await s.upsert(entry(k(1)))
    assert s.lite is not None and s.lite.pid is not None
    os.kill(s.lite.pid, signal.SIGKILL)
    killed = time.monotonic()
    while True:
        try:
            found = await s.get(k(1), NOW)
            break
        except CacheBackendError:
            assert time.monotonic() - killed < 10, f"not back within 10 s: {s.last_error}"
            await asyncio.sleep(0.1)
    assert found is not None  # the data survived: the same file, reopened
    assert s.lite.starts == 2


async def test_stores_on_one_lite_file_share_its_child_as_a_reload_does(
        lite_path: Path, milvus_stores: Callable[..., MilvusStore]) -> None:
    """A reload opens a second store on the file while the first still serves: one child, never two. Closing the
    old store again changes nothing (it raised RuntimeError)."""
    collection = f"t_{uuid.uuid4().hex[:12]}"
    old = milvus_stores(lite_path, collection)
    await old.upsert(entry(k(1)))
    new = milvus_stores(lite_path, collection)
    assert new.lite is old.lite and new.lite is not None
    await old.close()
    await old.close()
    assert await new.get(k(1), NOW) is not None and new.lite.alive()
    await new.close()
    assert not new.lite.alive()


def test_a_file_locked_by_another_process_stays_locked_after_a_refused_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`semantic-router cache stats` beside a running router: milvus_lite's Server.stop() unlinks the lock file
    even when that Server never held it, so one refused start used to let the next process open the file beside
    the router's child (two Lite processes on one file corrupt it)."""
    monkeypatch.setattr("router.cache.lite.FREE_WAIT_S", 0.2)  # the router holding it never lets go: refuse soon
    db = tmp_path / "cache.db"
    script = ("import sys, time; from router.cache.lite import LiteProcess; lite = LiteProcess(sys.argv[1]); "
              "lite.ensure_running(); print('up', flush=True); time.sleep(120)")  # holds the child, as a router does
    holder = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        lock = tmp_path / ".cache.db.lock"
        inode = lock.stat().st_ino
        for _ in range(2):  # the second attempt is the one that used to get in
            with pytest.raises(LiteUnavailable, match="another process"):
                LiteProcess(db).ensure_running()
        assert lock.stat().st_ino == inode
    finally:
        holder.terminate()
        holder.wait(10)


@pytest.mark.parametrize("existing", [False, True])
async def test_the_lite_file_is_readable_by_its_owner_only(
        tmp_path: Path, existing: bool, milvus_stores: Callable[..., MilvusStore]) -> None:
    """The file holds every tenant's prompts (PII included) and answers: it was created 0644 under the usual umask,
    so any local user could read them. An older file is tightened at start."""
    db = tmp_path / "cache.db"
    if existing:
        db.touch(mode=0o644)
    store = milvus_stores(db)
    await store.upsert(entry(k(1), text="my card is 4111 1111 1111 1111"))
    await store.close()
    assert db.stat().st_mode & 0o077 == 0, oct(db.stat().st_mode)


@pytest.fixture
def killed_owners_child(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A Lite file whose owner was killed (SIGKILL, OOM) without stopping its child, frozen before it could take the
    file's lock and exit: the instant a restart used to race. Yields the file and the child's pid."""
    db = tmp_path / "cache.db"
    script = ("import sys, time; from router.cache.lite import LiteProcess; lite = LiteProcess(sys.argv[1]); "
              "lite.ensure_running(); print(lite.pid, flush=True); time.sleep(120)")
    owner = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    os.kill(child, signal.SIGSTOP)
    owner.kill()
    owner.wait()
    yield db, child
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)


def _runs(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a zombie's command line is empty)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except FileNotFoundError:
        return False


def _thaw(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def test_a_restart_waits_for_the_child_a_killed_owner_left(killed_owners_child: tuple[Path, int]) -> None:
    """A router killed and restarted at once: its old child exits only after taking the file's lock, and the new
    start took the lock first, so the old child stayed alive beside the new one on the same file (two Lite processes
    on one file) until the new one stopped. The old child is let go a moment after the restart begins."""
    db, old_child = killed_owners_child
    threading.Timer(1.0, _thaw, (old_child,)).start()
    lite = LiteProcess(db)
    try:
        lite.ensure_running()
        assert not _runs(old_child), "the killed owner's Lite child still runs beside the new one"
        assert lite.alive()
    finally:
        lite.stop()


def test_another_program_called_milvus_does_not_stop_a_start(tmp_path: Path) -> None:
    """A start reads the command line of every process named `milvus` and resolves its first argument; a path that
    loops (`loop -> loop`) raised RuntimeError out of the start, which the workers' supervisor does not catch (its
    watch thread died and never restarted the child)."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "milvus").symlink_to("/bin/cat")  # a program that stays up, named milvus, given the looping path
    other = subprocess.Popen([str(tmp_path / "milvus"), str(tmp_path / "loop"), "-"], stdin=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    lite = LiteProcess(tmp_path / "cache.db")
    try:
        lite.ensure_running()
        assert lite.alive()
    finally:
        lite.stop()
        other.kill()
        other.wait()


def test_a_left_child_that_never_exits_refuses_the_start_and_names_it(killed_owners_child: tuple[Path, int]) -> None:
    """After a bounded wait the start is refused, naming the process to stop, instead of serving the file beside it."""
    db, old_child = killed_owners_child
    lite = LiteProcess(db)
    try:
        with pytest.raises(LiteUnavailable, match=f"Lite server pid {old_child} still on it"):
            lite.ensure_running()
    finally:
        lite.stop()
