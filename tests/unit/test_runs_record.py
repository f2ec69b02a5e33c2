"""The run record's database, writer, reader repairs, pruning and tracebacks, without an engine."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from dockertask import MapTaskError, map_task, task
from dockertask.calls import tracebacks
from dockertask.runs import store, views

from ..fakes import InProcessBackend


def _writer(path: Path, monkeypatch: pytest.MonkeyPatch) -> store.Writer:
    monkeypatch.setenv(store.DB_ENV, str(path))
    return store.Writer()


def test_a_new_record_has_the_schema_and_its_version(tmp_path: Path) -> None:
    """The file is created with every table, WAL mode, and the schema version it was made with."""
    conn = store.connect(tmp_path / "runs.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "runs", "calls", "attempts", "output", "results"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(store.SCHEMA_VERSION)


def test_a_record_from_a_newer_dockertask_is_refused_by_name(tmp_path: Path) -> None:
    """A schema newer than this dockertask knows is not written to: the error says which and what to do."""
    conn = store.connect(tmp_path / "runs.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(store.RecordUnavailable, match=r"schema version 99 is newer.*upgrade dockertask"):
        store.connect(tmp_path / "runs.db")


def test_rows_from_many_threads_are_all_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Map threads write at once through the one writer: no row is lost."""
    writer = _writer(tmp_path / "runs.db", monkeypatch)

    def put(n: int) -> None:
        for i in range(250):
            writer.put("INSERT INTO output VALUES (?, ?, ?, ?, ?, ?, ?)", ("r", f"c{n}", 1, i, "stdout", "x", 0.0))

    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    with store.reading(tmp_path / "runs.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM output").fetchone()[0] == 2000


def test_a_damaged_record_is_one_warning_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is not a database: one RuntimeWarning naming it, then the writer stays quiet."""
    bad = tmp_path / "runs.db"
    bad.write_bytes(b"this is not a database" * 200)
    writer = _writer(bad, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.put("INSERT INTO runs (id) VALUES ('x')")
        writer.flush()
        writer.put("INSERT INTO runs (id) VALUES ('y')")
        writer.flush()
    assert writer.broken
    assert len([w for w in caught if "cannot be written" in str(w.message)]) == 1
    assert str(bad) in str(caught[0].message)


def _add_run(conn: sqlite3.Connection, run_id: str, started: float, status: str = "succeeded",
             pid: int = 1, host: str | None = None) -> None:
    import socket

    conn.execute("INSERT INTO runs (id, name, started, status, pid, host) VALUES (?, 'n', ?, ?, ?, ?)",
                 (run_id, started, status, pid, host or socket.gethostname()))
    conn.execute("INSERT INTO calls (run_id, call_id, task, started, status) VALUES (?, 'c1', 't', ?, ?)",
                 (run_id, started, "running" if status == "running" else "succeeded"))
    conn.execute("INSERT INTO output VALUES (?, 'c1', 1, 1, 'stdout', 'hello', ?)", (run_id, started))


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path: Path) -> None:
    """kill -9 leaves 'running' in the file; the next reader marks the run and its running calls interrupted."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn = store.connect(tmp_path / "runs.db")
    _add_run(conn, "dead-run", time.time(), "running", pid=dead.pid)
    _add_run(conn, "live-run", time.time(), "running", pid=os.getpid())
    found = {r["id"]: r["status"] for r in views.runs(conn)}
    assert found == {"dead-run": "interrupted", "live-run": "running"}
    assert views.run(conn, "dead-run")["calls"][0]["status"] == "interrupted"


def test_prune_keeps_the_newest_and_drops_the_old_with_everything_they_hold(tmp_path: Path) -> None:
    """--keep N and --older-than DAYS delete runs with their calls and output; a running run is never pruned."""
    conn = store.connect(tmp_path / "runs.db")
    now = time.time()
    for i in range(5):
        _add_run(conn, f"run-{i}", now - i * 86400)
    _add_run(conn, "still-running", now - 30 * 86400, "running", pid=os.getpid())
    assert views.prune(conn, keep=3) == ["run-3", "run-4"]
    assert views.prune(conn, older_than_days=1.5) == ["run-2"]
    assert [r["id"] for r in views.runs(conn)] == ["run-0", "run-1", "still-running"]
    assert conn.execute("SELECT COUNT(*) FROM output WHERE run_id = 'run-4'").fetchone()[0] == 0


def test_trim_deletes_the_oldest_runs_until_the_record_is_under_its_cap(tmp_path: Path) -> None:
    """The size cap: the oldest finished runs go first."""
    conn = store.connect(tmp_path / "runs.db")
    for i in range(20):
        _add_run(conn, f"run-{i:02}", 1000.0 + i)
        conn.execute("INSERT INTO results VALUES (?, 'c1', ?)", (f"run-{i:02}", b"x" * 100_000))
    removed = store.trim(conn, 1_000_000)
    assert removed[0] == "run-00" and "run-19" not in removed
    assert store.used_bytes(conn) <= 1_000_000


def _fails(x: int) -> int:
    y = x + 1
    raise ValueError(f"bad {y}")


def test_a_container_traceback_names_the_real_file_and_line_without_dockertask_frames() -> None:
    """cloudpickle's <dynamic-code> frames get the host's file and source line; the bootstrap's frames go."""
    line = _fails.__code__.co_firstlineno + 2
    remote = ("Traceback (most recent call last):\n"
              f'  File "{tracebacks.__file__.replace("calls/tracebacks.py", "runtime/bootstrap.py")}", line 462, '
              "in run_and_report\n"
              f'  File "<dynamic-code>", line {line}, in _fails\n'
              "ValueError: bad 2\n")
    shown = tracebacks.localize(remote, _fails)
    assert shown == ("Traceback (most recent call last):\n"
                     f'  File "{__file__}", line {line}, in _fails\n'
                     '    raise ValueError(f"bad {y}")\n'
                     "ValueError: bad 2\n")


@task
def checked(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"multiple of three: {x}")
    return x


def test_return_exceptions_puts_each_failure_in_its_slot(inproc: InProcessBackend,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """return_exceptions=True: the exception, not None; each failure was printed as one line when it happened."""
    results = map_task(checked, min_success_ratio=0.5, return_exceptions=True)(x=[1, 2, 3, 4])
    assert results[:2] == [1, 2] and results[3] == 4
    assert isinstance(results[2], ValueError) and "multiple of three: 3" in str(results[2])
    assert "[checked[2]] failed: ValueError: multiple of three: 3" in capsys.readouterr().err
    assert map_task(checked, min_success_ratio=0.5)(x=[1, 3]) == [1, None]
    with pytest.raises(MapTaskError):
        map_task(checked, return_exceptions=True)(x=[3])


def test_a_result_holding_files_is_kept_by_content_and_comes_back_in_a_new_place(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    """Resume returns a File/Directory result from the record: the same content, in a fresh output directory
    (the original may be gone by then); a result over the limit is not kept."""
    from dockertask import Directory, File
    from dockertask.calls import kept

    monkeypatch.setenv("DOCKERTASK_OUTPUT_DIR", str(tmp_path / "outputs"))
    (tmp_path / "report.txt").write_text("hello")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "a.csv").write_text("1,2")
    value = {"report": File(str(tmp_path / "report.txt")), "tree": Directory(str(tmp_path / "tree")), "n": 3}
    blob = kept.dumps(value, 1 << 20)
    assert blob is not None
    (tmp_path / "report.txt").unlink()
    back = kept.loads(blob, "m.t")
    assert back["n"] == 3
    assert Path(back["report"].path).read_text() == "hello" and back["report"].path != str(tmp_path / "report.txt")
    assert (Path(back["tree"].path) / "sub" / "a.csv").read_text() == "1,2"
    assert kept.dumps(value | {"report": File(str(tmp_path / "tree" / "sub" / "a.csv"))}, 10) is None
    assert kept.loads(kept.dumps([1, 2], 100) or b"", "m.t") == [1, 2]


def test_a_record_of_schema_1_is_migrated_forward_keeping_its_rows(tmp_path: Path) -> None:
    """A file an older dockertask wrote gains the new columns and keeps every row."""
    path = tmp_path / "runs.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE calls (run_id TEXT, call_id TEXT, parent TEXT, task TEXT, code_version TEXT,
            input_digest TEXT, inputs TEXT, map_index INTEGER, grp TEXT, started REAL, ended REAL, status TEXT,
            cache_hit INTEGER DEFAULT 0, replayed INTEGER DEFAULT 0, result TEXT, error_type TEXT, error TEXT,
            traceback TEXT, PRIMARY KEY (run_id, call_id));
        INSERT INTO calls (run_id, call_id, task, status) VALUES ('r', 'c', 'm.t', 'succeeded');
    """)
    old.close()
    conn = store.connect(path)
    assert conn.execute("SELECT task, status, mem_limit FROM calls").fetchall() == [("m.t", "succeeded", None)]
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(store.SCHEMA_VERSION)


def test_a_module_s_bound_method_travels_by_reference_not_with_its_generator_s_state() -> None:
    """`from random import randint` in a task: the container uses its own generator. By value it carried the
    host's, and every item of a map (and every retry) drew the same number (found running flytekit's
    flakey map example: all items failed or passed together)."""
    import pickle
    import random

    from dockertask.calls import pickling

    def draw() -> int:
        return random.randint(0, 10) + randint(0, 10)

    randint = random.randint
    loaded = pickle.loads(pickling.dumps(randint))
    assert loaded is random.randint  # the receiving side's own, not a copy of ours
    assert pickle.loads(pickling.dumps([random.random, random.choice]))[0] is random.random
    assert pickling.dumps(draw).count(b"getstate") == 0 and b"randint" in pickling.dumps(draw)


def test_a_call_s_output_is_capped_with_a_line_saying_how_much_was_cut(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the cap, lines still reach the terminal but not the record; one marker line says how many."""
    from dockertask.runs import record

    monkeypatch.setenv(store.DB_ENV, str(tmp_path / "runs.db"))
    monkeypatch.setattr(store, "WRITER", store.Writer())
    monkeypatch.setattr(record, "MAX_OUTPUT_LINES", 5)
    run = record.RunState("capped")
    rec = record.CallRecord(run, "c1", ("hunter22",))
    shown: list[str] = []
    sink = rec.sink(lambda stream, line: shown.append(line))
    for i in range(12):
        sink("stdout", f"line {i} hunter22")
    rec.succeeded(1)
    store.WRITER.flush()
    with store.reading(tmp_path / "runs.db") as conn:
        lines = [r[4] for r in views.output(conn, run.id, "c1")]
    assert len(shown) == 12
    assert lines == [f"line {i} ***" for i in range(5)] + ["[dockertask: output cut here: 7 more lines not recorded]"]


def test_a_locked_record_is_one_warning_and_the_writer_goes_on_without_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the record's write lock past the busy wait: one warning, no exception."""
    path = tmp_path / "runs.db"
    store.connect(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store, "BUSY_MS", 200)
    writer = _writer(path, monkeypatch)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            writer.put("INSERT INTO runs (id) VALUES ('x')")
            writer.flush()
        assert [str(w.message) for w in caught if "cannot be written" in str(w.message)], caught
        assert writer.broken
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_record_over_its_cap_drops_its_oldest_runs_when_a_process_first_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """DOCKERTASK_RUNS_MAX_BYTES: the first write of a process trims the oldest runs, with a line saying so."""
    path = tmp_path / "runs.db"
    conn = store.connect(path)
    for i in range(30):
        _add_run(conn, f"run-{i:02}", 1000.0 + i)
        conn.execute("INSERT INTO results VALUES (?, 'c1', ?)", (f"run-{i:02}", b"x" * 50_000))
    conn.close()
    monkeypatch.setenv(store.MAX_BYTES_ENV, "500000")
    writer = _writer(path, monkeypatch)
    writer.put("INSERT INTO runs (id, started, status) VALUES ('new', 5000, 'running')")
    writer.flush()
    with store.reading(path) as conn:
        left = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY started")]
    assert "new" in left and "run-29" in left and "run-00" not in left
    assert "oldest run(s)" in capfd.readouterr().err


def test_a_group_labels_the_calls_made_in_it_and_in_its_map_s_threads(inproc: InProcessBackend,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`with dockertask.group("features")`: its calls (and a map's items, made in other threads) carry it,
    nested as outer/inner; a call after it carries none."""
    import dockertask
    from dockertask.runs import record

    monkeypatch.setenv(store.DB_ENV, str(tmp_path / "runs.db"))
    monkeypatch.setattr(store, "WRITER", store.Writer())
    monkeypatch.setattr(record, "_default", None)
    with dockertask.group("features"):
        checked(1)
        with dockertask.group("inner"):
            map_task(checked)(x=[4, 5])
    checked(2)
    store.WRITER.flush()
    with store.reading(tmp_path / "runs.db") as conn:
        rows = conn.execute("SELECT inputs, map_index, grp FROM calls ORDER BY started").fetchall()
    assert sorted(rows, key=str) == sorted([("x=1", None, "features"), ("2 items", None, "features/inner"),
                                            ("x=4", 0, "features/inner"), ("x=5", 1, "features/inner"),
                                            ("x=2", None, None)], key=str)
