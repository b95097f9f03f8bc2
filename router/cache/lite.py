"""The embedded Milvus Lite child process, owned and restarted by the router.

pymilvus starts Lite through a process-wide manager that never notices the child dying: after a
crash every call fails until the whole router restarts. Here the store owns the child instead: each
connect checks it is alive and starts a fresh one when it is not (the caller's reconnect backoff
spaces restarts), so a killed child is replaced on the next connect and the collection is reopened.
One child per file and process (`acquire`/`release`): a config reload builds a second store on the same
file while the first still serves, and both must talk to the same child (a second child on one file
would corrupt it; POSIX file locks do not stop a process from locking its own file twice).

Router workers (`server.workers` > 1) cannot each own a child: two processes cannot open one Lite file.
The supervisor owns the child and restarts it (router/extproc/workers.py); it names, in the environment
variable SHARED_LITE_ENV, a file holding the child's current `unix:` URI, and each worker's store reads it
through `SharedLite` on every connect, so a restarted child (a new socket) is found by every worker.

Whoever owns a child publishes its URI beside the file (`uri_file_of`: `.NAME.uri`, next to milvus_lite's
`.NAME.lock`), so another process on the same host, the cache CLI, can use that child instead of asking an
operator to stop the router (`running_child`). The supervisor's workers read the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import structlog

# milvus_lite imports pkg_resources, whose deprecation warning went to stderr as a plain-text line in front of the
# JSON logs of every router start and every CLI call (`--help` included). Only that warning is silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from milvus_lite.server import Server  # type: ignore[import-untyped]

log = structlog.get_logger(__name__)


SOCKET_WAIT_S = 10.0
FREE_WAIT_S = 3.0  # for the Lite server of an owner that died to exit; a few ms unless the machine is loaded
SHARED_LITE_ENV = "VSR_SHARED_LITE"  # JSON {absolute db file: file holding the child's unix: URI}


class _Server(Server):  # type: ignore[misc]
    """milvus_lite's Server, except that stopping it leaves the lock file in place.

    Server.stop() unlinks the lock file, and runs again from __del__. Replacing a killed child, the old Server's
    __del__ unlinked the file the new Server had just locked: the lock lived on in a deleted inode no other process
    could find, so the cache CLI saw no router on the file, found no child to share and refused (`cache invalidate
    --entry` unusable until the router restarted), and nothing kept another process off the file. A refused start's
    stop() unlinked the lock of the process holding it the same way. A lock file has to outlive its holders.
    """

    _lock_path: str  # set by Server.__init__
    _uds_path: str

    def stop(self) -> None:
        # Server.stop() unlinks its socket and its "lock file", each tolerating a missing file: name the socket twice.
        lock_path, self._lock_path = self._lock_path, self._uds_path
        try:
            super().stop()
        finally:
            self._lock_path = lock_path


def _wait_for_socket(uri: str, server: Server) -> None:
    """A fresh child opens its socket some time after it starts; connecting earlier fails and backs off."""
    path = Path(uri.removeprefix("unix:"))
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not path.exists() and time.monotonic() < deadline and server._p is not None and server._p.poll() is None:
        time.sleep(0.05)


def _lock_file(db_file: Path) -> Path:
    """The lock milvus_lite takes beside the file (its Server's own naming)."""
    return db_file.parent / f".{db_file.name}.lock"


def _prepare_files(db_file: Path) -> None:
    """The data file exists and only its owner may read it: it holds every tenant's prompts (PII included) and
    answers, and milvus_lite created it 0644 (it keeps a file it finds, mode included). milvus_lite keeps its lock
    and data beside the file. In a read-only directory its Server raised OSError from start() (the workers'
    supervisor died of it) and again from __del__ ('Exception ignored' tracebacks on stderr)."""
    try:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(db_file, os.O_CREAT | os.O_WRONLY, 0o600))
        db_file.chmod(0o600)  # a file made before this rule
        with open(_lock_file(db_file), "a"):
            pass
    except OSError as exc:
        raise LiteUnavailable(f"cannot start Milvus Lite on {db_file}: {exc.strerror}: {exc.filename}") from None


def _servers_on(db_file: Path) -> list[int]:
    """The pids of the Lite servers that have this file open, found by the command line milvus_lite gives its
    binary (`milvus FILE URI LEVEL LOCK`). Linux's /proc only: elsewhere none are found and only the lock is asked."""
    target, pids = db_file.resolve(), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = [Path(os.fsdecode(arg)) for arg in (proc / "cmdline").read_bytes().split(b"\0")[:2]]
            if len(argv) == 2 and argv[0].name == "milvus" and argv[1].resolve() == target:
                pids.append(int(proc.name))
        except (OSError, RuntimeError):  # gone meanwhile, hidden from us, or another program's path that loops
            continue
    return pids


def _wait_until_free(db_file: Path) -> None:
    """Wait, at most FREE_WAIT_S, until no process holds the file's lock and no Lite server has it open.

    A Lite server waits for its owner's lock and exits once it gets it. An owner that died without stopping its
    child (killed, crashed) left that child to take the lock for an instant and exit: a start in that instant was
    refused, and a start before the child ran took the lock first and left it alive, blocked, beside the new child
    on the same file until the new one stopped. A live owner keeps its lock and its child: refused after the bound.
    """
    deadline = time.monotonic() + FREE_WAIT_S
    while (others := _servers_on(db_file)) or _locked_elsewhere(db_file):
        if time.monotonic() >= deadline:
            still = f"Lite server pid {', '.join(map(str, others))} still on it" if others else "its lock still held"
            raise LiteUnavailable(f"cannot start Milvus Lite on {db_file}: another process has it open and publishes "
                                  f"no child to share (one process per file; {still} after {FREE_WAIT_S:g} s)")
        time.sleep(0.05)


def _locked_elsewhere(db_file: Path) -> bool:
    """Whether another process holds the lock milvus_lite takes for this file (never unlinked: `_Server`).
    Closing the probe drops any lock this process holds on the file: not for the owner to ask about its own."""
    try:
        fd = os.open(_lock_file(db_file), os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the probe's own lock
    return False


def uri_file_of(db_file: Path) -> Path:
    """Where the process owning the child for `db_file` writes the child's current `unix:` URI."""
    return db_file.parent / f".{db_file.name}.uri"


def running_child(db_file: str | Path) -> Path | None:
    """The URI file of a child another process runs for this file, if any: use it rather than start one."""
    path = Path(db_file).absolute()
    uri_file = uri_file_of(path)
    return uri_file if _locked_elsewhere(path) and uri_file.exists() else None


def vacuum(db_file: str | Path) -> bool:
    """Rewrite the file without the free pages that deleted rows leave behind (their bytes stay readable there until
    SQLite reuses the pages; Milvus Lite has no compaction: its Compact call answers UNIMPLEMENTED). Only while no
    process has it open, holding its lock meanwhile so that no router starts on it: False when one has it. Lite keys
    its rows by an INTEGER PRIMARY KEY, which VACUUM keeps (a reopened file answers the same searches)."""
    path = Path(db_file).absolute()
    fd = os.open(_lock_file(path), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        if _servers_on(path):
            return False
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("VACUUM")
        return True
    finally:
        os.close(fd)


class LiteUnavailable(RuntimeError):
    """The Lite child could not be started (file locked by another process, binary missing)."""


_SHARED: dict[Path, LiteProcess] = {}
_SHARED_LOCK = threading.Lock()


class LiteProcess:
    """One Lite child serving `db_file` on a unix socket; thread-safe. Get it with `acquire`."""

    def __init__(self, db_file: str | Path):
        self.db_file = Path(db_file).absolute()
        self.uri_file = uri_file_of(self.db_file)
        self._server: Server | None = None
        self._lock = threading.Lock()  # guards start/stop only, never taken on the event loop
        self.starts = 0
        self.users = 0

    @classmethod
    def acquire(cls, db_file: str | Path) -> LiteProcess:
        """The process-wide child for this file, shared by every store on it."""
        path = Path(db_file).absolute()
        with _SHARED_LOCK:
            lite = _SHARED.setdefault(path, cls(path))
            lite.users += 1
            return lite

    def release(self) -> None:
        """A store is done with the child; the last one stops it (blocking: call off the event loop)."""
        with _SHARED_LOCK:
            self.users -= 1
            last = self.users <= 0
            if last:
                _SHARED.pop(self.db_file, None)
        if last:
            self.stop()

    @property
    def pid(self) -> int | None:
        proc = getattr(self._server, "_p", None)
        return None if proc is None else int(proc.pid)

    def alive(self) -> bool:
        proc = getattr(self._server, "_p", None)
        return proc is not None and proc.poll() is None

    def ensure_running(self) -> str:
        """The `unix:` URI of a live child, (re)starting it first when needed; blocking (~0.5 s per start, up to
        FREE_WAIT_S more while an earlier owner's child exits)."""
        with self._lock:
            if self._server is not None and self.alive():
                return str(self._server.uds_path)
            if self._server is not None:
                code = self._server._p.returncode if self._server._p is not None else None
                log.warning("milvus_lite_restarting", db=str(self.db_file), exit_code=code, starts=self.starts)
                self._server.stop()  # releases the file lock and the stale socket
            _prepare_files(self.db_file)
            _wait_until_free(self.db_file)
            server = _Server(str(self.db_file))
            if not server.init() or not server.start():
                server.stop()
                self._server = None
                raise LiteUnavailable(f"cannot start Milvus Lite on {self.db_file} (locked by another process?)")
            self._server = server
            self.starts += 1
            _wait_for_socket(str(server.uds_path), server)
            tmp = self.uri_file.with_name(self.uri_file.name + ".tmp")
            tmp.write_text(str(server.uds_path))
            tmp.replace(self.uri_file)  # readers never see half a URI
            return str(server.uds_path)

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.stop()
                self._server = None
                self.uri_file.unlink(missing_ok=True)


class SharedLite:
    """A Lite child owned by another process (the workers' supervisor, or the router beside the cache CLI);
    this process only reads its URI."""

    def __init__(self, db_file: Path, uri_file: Path):
        self.db_file, self.uri_file = db_file, uri_file

    def ensure_running(self) -> str:
        """The child's current URI; LiteUnavailable while the supervisor has not (re)started it."""
        try:
            uri = self.uri_file.read_text().strip()
        except OSError:
            uri = ""
        if not uri or not Path(uri.removeprefix("unix:")).exists():
            raise LiteUnavailable(f"the Milvus Lite child another process runs for {self.db_file} is not running")
        return uri

    def release(self) -> None:
        """The owner stops the child, never a user of it."""

    @property
    def pid(self) -> int | None:
        return None


def shared_lite_env(db_file: str | Path, uri_file: Path) -> str:
    """The SHARED_LITE_ENV value that makes `lite_for(db_file)` in a process use the child publishing `uri_file`."""
    return json.dumps({str(Path(db_file).absolute()): str(uri_file)})


def lite_for(db_file: str | Path) -> LiteProcess | SharedLite:
    """The supervisor's child when this process is a router worker and it owns one for the file, else our own."""
    path = Path(db_file).absolute()
    shared = json.loads(os.environ.get(SHARED_LITE_ENV) or "{}")
    if str(path) in shared:
        return SharedLite(path, Path(shared[str(path)]))
    return LiteProcess.acquire(path)
