"""The record's database: one SQLite file, its schema, and the one writer path every call goes through.

Writes are queued and committed by one thread per process in short batched transactions (a warm reused
call takes ~2.4 ms; a commit per row would cost a tenth of that), WAL mode so that readers (the CLI, the
dashboard, other processes) never wait for writers and several processes write at once. Recording never
fails a call: a database that cannot be opened or written is one warning, after which this process stops
recording and its calls go on.

Schema (versioned in ``meta``; ``_migrate`` moves an older file forward):

    runs      one execution of a program          calls    one call of a task (or a map), by run
    attempts  one container (or replica call)     output   its lines, capped per call
    results   pickled values kept for resume
"""

from __future__ import annotations

import atexit
import os
import queue
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockertask.host import paths

SCHEMA_VERSION = 3
DB_ENV = "DOCKERTASK_RUNS_DB"
RECORD_ENV = "DOCKERTASK_RECORD"
BUSY_MS = 5000  # how long a statement waits for another process's transaction before it counts as locked

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, command TEXT, cwd TEXT, host TEXT, user TEXT, pid INTEGER,
    pid_started TEXT, version TEXT, git_commit TEXT, started REAL, ended REAL, status TEXT,
    resumed_from TEXT);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT, call_id TEXT, parent TEXT, task TEXT, code_version TEXT, input_digest TEXT, inputs TEXT,
    map_index INTEGER, grp TEXT, started REAL, ended REAL, status TEXT, cache_hit INTEGER DEFAULT 0,
    replayed INTEGER DEFAULT 0, result TEXT, error_type TEXT, error TEXT, traceback TEXT,
    mem_limit INTEGER, cpu_limit REAL, upstream TEXT, PRIMARY KEY (run_id, call_id));
CREATE INDEX IF NOT EXISTS calls_id ON calls (call_id);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT, call_id TEXT, attempt INTEGER, container_id TEXT, image TEXT, image_id TEXT,
    image_digest TEXT, node TEXT, started REAL, ended REAL, exit_code INTEGER, oom_killed INTEGER,
    timed_out INTEGER, preempted INTEGER, peak_memory INTEGER, cpu_seconds REAL, usage_source TEXT,
    error TEXT, PRIMARY KEY (run_id, call_id, attempt));
CREATE TABLE IF NOT EXISTS output (
    run_id TEXT, call_id TEXT, attempt INTEGER, seq INTEGER, stream TEXT, line TEXT, at REAL);
CREATE INDEX IF NOT EXISTS output_call ON output (run_id, call_id, seq);
CREATE TABLE IF NOT EXISTS results (run_id TEXT, call_id TEXT, data BLOB, PRIMARY KEY (run_id, call_id));
"""


def env_int(name: str, default: int) -> int:
    """A whole number from the environment; ``default`` when unset or not a number."""
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


def enabled() -> bool:
    return os.environ.get(RECORD_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def db_path() -> Path:
    named = os.environ.get(DB_ENV, "").strip()
    return Path(named) if named else paths.user_state_dir() / "runs.sqlite3"


class RecordUnavailable(Exception):
    """The database cannot be opened, read or written (locked, full, damaged, unwritable)."""


def connect(path: Path | None = None, *, create: bool = True) -> sqlite3.Connection:
    """A connection with the schema in place (created or migrated); RecordUnavailable if it cannot be."""
    path = path or db_path()
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise RecordUnavailable(f"no record at {path} yet: nothing has run with recording on")
        conn = sqlite3.connect(str(path), timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process, not a power cut
        _migrate(conn)
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise RecordUnavailable(f"the run record at {path} cannot be used ({type(exc).__name__}: {exc})") from None


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this dockertask's "
                                        f"({SCHEMA_VERSION}): upgrade dockertask, or name another file in {DB_ENV}")
        # Version 0 is a fresh file (made whole above); each later version's changes, in order, for a file
        # an older dockertask made.
        if 0 < version < 2:  # 2: the call's limits, for the dashboard's memory bars
            conn.execute("ALTER TABLE calls ADD COLUMN mem_limit INTEGER")
            conn.execute("ALTER TABLE calls ADD COLUMN cpu_limit REAL")
        if 0 < version < 3:  # 3: the calls whose results a call's inputs were (a JSON list of call ids)
            conn.execute("ALTER TABLE calls ADD COLUMN upstream TEXT")
        if version < SCHEMA_VERSION:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def reading(path: Path | None = None, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection for the command line and resume's lookups: read-only unless ``write`` (prune). A
    read-only one never checkpoints the WAL as it closes, which costs a reader of a busy record ~0.3 s."""
    if write:
        conn = connect(path, create=False)
    else:
        path = path or db_path()
        if not path.exists():
            raise RecordUnavailable(f"no record at {path} yet: nothing has run with recording on")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error as exc:
            raise RecordUnavailable(f"the run record at {path} cannot be read ({type(exc).__name__}: {exc})") \
                from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            conn.close()
            conn = connect(path, create=False)  # an older schema is migrated (a newer one refused) first
    try:
        yield conn
    finally:
        conn.close()


class Writer:
    """The process's one writer: statements queued by any thread, committed in batches by its thread."""

    FLUSH_SECONDS = 0.05  # how long a batch gathers statements: `logs -f` sees a line this late at most

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, tuple[Any, ...]] | threading.Event | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.broken = False
        self.path: Path | None = None

    def put(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        if self.broken:
            return
        if self._thread is None:
            self._start()
        self._queue.put((sql, params))

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self.path = db_path()
            self._thread = threading.Thread(target=self._loop, name="dockertask-record", daemon=True)
            self._thread.start()
            atexit.register(self.flush)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is committed (or given up on)."""
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _loop(self) -> None:
        # Sleep through the batch window, then take everything queued at once: waking for each row (a
        # get() with a timeout per item) made this thread contend for the GIL with the calls' threads
        # five times a call.
        while True:
            items = [self._queue.get()]
            if not isinstance(items[0], threading.Event):
                time.sleep(self.FLUSH_SECONDS)
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit([item for item in items if isinstance(item, tuple)])
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()

    def _commit(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        if not batch or self.broken:
            return
        try:
            if self._conn is None:
                self._conn = connect(self.path)
                _keep_under_cap(self._conn, self.path)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in _grouped(batch):
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError, RecordUnavailable) as exc:
            self.broken = True
            warnings.warn(f"dockertask: the run record at {self.path} cannot be written ({type(exc).__name__}: "
                          f"{exc}); calls go on unrecorded in this process (DOCKERTASK_RECORD=0 turns recording "
                          f"off, {DB_ENV} names another file)", RuntimeWarning, stacklevel=1)


def _order(sql: str) -> int:
    """Rows are made before they are changed: a run, then calls, then other rows, then updates."""
    return 0 if sql.startswith("INSERT INTO runs") else 1 if "INTO calls" in sql else 3 if sql.startswith(
        "UPDATE") else 2


def _grouped(batch: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The batch as one executemany per statement (a map's thousand calls: a few statements, not thousands
    of execute() calls), in an order that keeps every insert before the updates of its row."""
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for sql, params in batch:
        groups.setdefault(sql, []).append(params)
    return sorted(groups.items(), key=lambda item: _order(item[0]))


MAX_BYTES_ENV = "DOCKERTASK_RUNS_MAX_BYTES"


def max_bytes() -> int:
    return env_int(MAX_BYTES_ENV, 1 << 30)


def _keep_under_cap(conn: sqlite3.Connection, path: Path | None) -> None:
    """Nothing grows without bound: past its cap (1 GiB by default), the oldest finished runs are deleted,
    with a line saying so, when a process first writes."""
    cap = max_bytes()
    if used_bytes(conn) <= cap:
        return
    removed = trim(conn, int(cap * 0.9))
    if removed:
        import sys

        print(f"dockertask: the run record at {path} was over {cap} bytes ({MAX_BYTES_ENV}); removed its "
              f"{len(removed)} oldest run(s)", file=sys.stderr)


def delete(conn: sqlite3.Connection, run_ids: list[str]) -> None:
    for start in range(0, len(run_ids), 200):  # short transactions: writers of running calls wait little
        chunk = run_ids[start:start + 200]
        marks = ", ".join("?" * len(chunk))
        conn.execute("BEGIN IMMEDIATE")
        for table, column in (("output", "run_id"), ("attempts", "run_id"), ("results", "run_id"),
                              ("calls", "run_id"), ("runs", "id")):
            conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
        conn.execute("COMMIT")


def used_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def trim(conn: sqlite3.Connection, cap: int) -> list[str]:
    """Delete the oldest finished runs until the record uses under ``cap`` bytes; their ids."""
    removed: list[str] = []
    while used_bytes(conn) > cap:
        oldest = [r[0] for r in conn.execute(
            "SELECT id FROM runs WHERE status != 'running' ORDER BY started LIMIT 1")]
        if not oldest:
            break
        delete(conn, oldest)
        removed += oldest
    return removed


WRITER = Writer()
