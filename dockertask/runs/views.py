"""Reading the record: the runs, a run's calls, a call's attempts and output, and pruning old runs.

Only reads (and the two repairs below) happen here; the dashboard and the command line share them.
A run whose process is gone while it says "running" (killed with ``kill -9``, a host that lost power)
is marked "interrupted" the first time anyone looks, along with its calls that were still running.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from dockertask.host import owner
from dockertask.runs import store

RUN_FIELDS = ("id", "name", "status", "started", "ended", "command", "cwd", "host", "user", "pid", "version",
              "git_commit", "resumed_from")
CALL_FIELDS = ("call_id", "parent", "grp", "task", "code_version", "input_digest", "inputs", "map_index", "started",
               "ended", "status", "cache_hit", "replayed", "result", "error_type", "error", "traceback", "mem_limit",
               "cpu_limit", "upstream")
ATTEMPT_FIELDS = ("attempt", "container_id", "image", "image_id", "image_digest", "node", "started", "ended",
                  "exit_code", "oom_killed", "timed_out", "preempted", "peak_memory", "cpu_seconds", "usage_source",
                  "error")

_ITEMS = "task NOT LIKE 'map_task(%'"  # a map's own row is the parent of its items' calls


def when(t: float | None) -> str:
    """A recorded time as the command line and the pages show it."""
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def size(n: int | None) -> str:
    """A recorded byte count (peak memory, a limit) in binary units."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def label(call: dict[str, Any]) -> str:
    """A call as a person names it: its task's short name, and its index in its map."""
    short = str(call["task"]).rsplit(".", 1)[-1]
    return short + (f"[{call['map_index']}]" if call["map_index"] is not None else "")


class NotFound(LookupError):
    """No run or call has that id."""


def reap(conn: sqlite3.Connection) -> int:
    """Mark runs of this host whose process has died as interrupted (and their running calls); how many."""
    here = socket.gethostname()
    dead = []
    for run_id, pid, started in conn.execute(
            "SELECT id, pid, pid_started FROM runs WHERE status = 'running' AND host = ?", (here,)):
        if not owner.alive(int(pid or 0)) or (started and owner._start_ticks(int(pid)) not in (None, started)):
            dead.append(run_id)
    if not dead:
        return 0
    # The reader's connection is read-only: the repair goes through a connection of its own (it is rare).
    writer = store.connect(Path(conn.execute("PRAGMA database_list").fetchone()[2]), create=False)
    try:
        for run_id in dead:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE runs SET status = 'interrupted', ended = COALESCE(ended, ?) WHERE id = ? AND "
                           "status = 'running'", (time.time(), run_id))
            writer.execute("UPDATE calls SET status = 'interrupted' WHERE run_id = ? AND status = 'running'",
                           (run_id,))
            writer.execute("COMMIT")
    finally:
        writer.close()
    return len(dead)


def _row(fields: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    found = dict(zip(fields, row))  # noqa: B905 - one SELECT names both
    if "upstream" in found:
        found["upstream"] = json.loads(found["upstream"] or "[]")
    return found


def runs(conn: sqlite3.Connection, failed: bool = False, limit: int = 20) -> list[dict[str, Any]]:
    reap(conn)
    where = "WHERE status IN ('failed', 'interrupted')" if failed else ""
    found = [_row(RUN_FIELDS, r) for r in conn.execute(
        f"SELECT {', '.join(RUN_FIELDS)} FROM runs {where} ORDER BY started DESC LIMIT ?", (limit,))]
    for run in found:
        counts = dict(conn.execute(f"SELECT status, COUNT(*) FROM calls WHERE run_id = ? AND {_ITEMS} "
                                   "GROUP BY status", (run["id"],)).fetchall())
        run["counts"] = counts
    return found


def find_run(conn: sqlite3.Connection, ident: str) -> str | None:
    """The run id ``ident`` names (whole, or a unique prefix), or None."""
    rows = conn.execute("SELECT id FROM runs WHERE id = ? OR id LIKE ? LIMIT 2", (ident, ident + "%")).fetchall()
    exact = [r[0] for r in rows if r[0] == ident]
    return exact[0] if exact else rows[0][0] if len(rows) == 1 else None


def run_only(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """The run's own row, without its calls."""
    reap(conn)
    row = conn.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(run_id)
    return _row(RUN_FIELDS, row)


def run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """The run with all its calls and their attempts."""
    found = run_only(conn, run_id)
    found["calls"] = calls(conn, run_id)
    return found


def calls(conn: sqlite3.Connection, run_id: str, items_only: bool = False, limit: int = -1, offset: int = 0,
          attempts: bool = True) -> list[dict[str, Any]]:
    """A run's calls in the order they started (its map items only, a window of them, without attempts:
    what a page of a 10,000-call run needs)."""
    fields = tuple(f for f in CALL_FIELDS if f != "traceback")  # a call's own view has it (`show CALL`)
    where = f"run_id = ? AND {_ITEMS}" if items_only else "run_id = ?"
    found = [_row(fields, r) for r in conn.execute(
        f"SELECT {', '.join(fields)} FROM calls WHERE {where} ORDER BY started, map_index LIMIT ? OFFSET ?",
        (run_id, limit, offset))]
    if attempts:
        by_call: dict[str, list[dict[str, Any]]] = {}
        ids = [c["call_id"] for c in found]
        query = f"SELECT call_id, {', '.join(ATTEMPT_FIELDS)} FROM attempts WHERE run_id = ?"
        params: list[Any] = [run_id]
        if limit >= 0 and len(ids) <= 900:  # a window: its calls' attempts only (within SQLite's parameter limit)
            query += f" AND call_id IN ({', '.join('?' * len(ids))})"
            params += ids
        for r in conn.execute(query + " ORDER BY attempt", params):
            by_call.setdefault(r[0], []).append(_row(ATTEMPT_FIELDS, r[1:]))
        for c in found:
            c["attempts"] = by_call.get(c["call_id"], [])
    return found


def summary(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """Counts by status of a run's items, their first start and last end, and how many are running: what a
    page's header and its live view need, from one aggregate rather than every row."""
    counts = dict(conn.execute(f"SELECT status, COUNT(*) FROM calls WHERE run_id = ? AND {_ITEMS} GROUP BY status",
                               (run_id,)).fetchall())
    first, last, open_ = conn.execute("SELECT MIN(started), MAX(ended), SUM(ended IS NULL) FROM calls "
                                      "WHERE run_id = ?", (run_id,)).fetchone()
    return {"counts": counts, "first": first, "last": last, "open": open_ or 0,
            "total": sum(counts.values()), "calls": conn.execute("SELECT COUNT(*) FROM calls WHERE run_id = ?",
                                                                 (run_id,)).fetchone()[0]}


def _json_object(alias: str, fields: tuple[str, ...]) -> str:
    return "json_object(" + ", ".join(f"'{f}', {_json_value(alias, f)}" for f in fields) + ")"


def _json_value(alias: str, field: str) -> str:
    if field == "upstream":  # kept as JSON text: a list in the JSON, not a string holding one
        return f"json(COALESCE({alias}.upstream, '[]'))"
    return f"{alias}.{field}"


def run_json(conn: sqlite3.Connection, run_id: str) -> str:
    """``run()`` as JSON text, made by SQLite's JSON functions: a 10,000-call run's ``show --json`` spends its
    time in C rather than building 20,000 dicts to encode them again."""
    reap(conn)
    run_row = conn.execute(f"SELECT {_json_object('r', RUN_FIELDS)} FROM runs r WHERE id = ?", (run_id,)).fetchone()
    if run_row is None:
        raise NotFound(run_id)
    fields = tuple(f for f in CALL_FIELDS if f != "traceback")
    attempts = (f"json((SELECT json_group_array({_json_object('a', ATTEMPT_FIELDS)}) FROM "
                "(SELECT * FROM attempts WHERE run_id = c.run_id AND call_id = c.call_id ORDER BY attempt) a))")
    call_object = _json_object("c", fields)[:-1] + f", 'attempts', {attempts})"
    calls = [r[0] for r in conn.execute(f"SELECT {call_object} FROM calls c WHERE run_id = ? "
                                        "ORDER BY started, map_index", (run_id,))]
    return str(run_row[0])[:-1] + ', "calls": [' + ", ".join(calls) + "]}"


def call_lines(conn: sqlite3.Connection, run_id: str) -> list[tuple[Any, ...]]:
    """What ``show RUN`` prints of each call, as rows (no dicts: a 10,000-call run prints in ~0.1 s)."""
    return list(conn.execute(
        "SELECT c.call_id, c.status, c.started, c.ended, (SELECT COUNT(*) FROM attempts a WHERE a.run_id = "
        "c.run_id AND a.call_id = c.call_id), c.parent, c.task, c.map_index, c.cache_hit, c.replayed, "
        "c.error_type, c.error, c.grp FROM calls c WHERE c.run_id = ? ORDER BY c.started, c.map_index", (run_id,)))


def call(conn: sqlite3.Connection, ident: str) -> dict[str, Any]:
    """A call by ``CALL`` (its latest run) or ``RUN/CALL``, with its attempts."""
    run_part, _, call_part = ident.rpartition("/")
    if run_part:
        run_id = find_run(conn, run_part)
        row = conn.execute(f"SELECT run_id, {', '.join(CALL_FIELDS)} FROM calls WHERE run_id = ? AND call_id = ?",
                           (run_id, call_part)).fetchone()
    else:
        reap(conn)
        row = conn.execute(f"SELECT c.run_id, {', '.join('c.' + f for f in CALL_FIELDS)} FROM calls c JOIN runs r "
                           "ON r.id = c.run_id WHERE c.call_id = ? ORDER BY r.started DESC LIMIT 1",
                           (call_part,)).fetchone()
    if row is None:
        raise NotFound(ident)
    found = {"run_id": row[0], **_row(CALL_FIELDS, row[1:])}
    found["attempts"] = [_row(ATTEMPT_FIELDS, r) for r in conn.execute(
        f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM attempts WHERE run_id = ? AND call_id = ? ORDER BY attempt",
        (found["run_id"], found["call_id"]))]
    return found


def output(conn: sqlite3.Connection, run_id: str, call_id: str | None,
           after: int = 0) -> list[tuple[str, int, int, str, str, int]]:
    """Recorded lines (call id, attempt, seq, stream, line, row id) of one call or of a whole run, in the
    order they were recorded, after the row id ``after`` (what a follower has shown)."""
    if call_id is not None:
        return list(conn.execute("SELECT call_id, attempt, seq, stream, line, rowid FROM output WHERE run_id = ? "
                                 "AND call_id = ? AND rowid > ? ORDER BY rowid", (run_id, call_id, after)))
    return list(conn.execute("SELECT call_id, attempt, seq, stream, line, rowid FROM output WHERE run_id = ? AND "
                             "rowid > ? ORDER BY rowid", (run_id, after)))


def prune(conn: sqlite3.Connection, older_than_days: float | None = None, keep: int | None = None) -> list[str]:
    """Delete finished runs older than ``older_than_days`` and/or beyond the newest ``keep``; their ids."""
    reap(conn)
    doomed: set[str] = set()
    if older_than_days is not None:
        cutoff = time.time() - older_than_days * 86400
        doomed |= {r[0] for r in conn.execute(
            "SELECT id FROM runs WHERE status != 'running' AND started < ?", (cutoff,))}
    if keep is not None:
        doomed |= {r[0] for r in conn.execute(
            "SELECT id FROM runs WHERE status != 'running' ORDER BY started DESC LIMIT -1 OFFSET ?", (keep,))}
    store.delete(conn, sorted(doomed))
    return sorted(doomed)
