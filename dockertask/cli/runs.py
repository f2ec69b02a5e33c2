"""``dockertask runs | show | logs | rerun | runs prune``: the run record, read from the command line.

Each reads the record only (never the engine), so it answers in a fraction of a second however many calls
are recorded, and works after the program that made the calls has ended.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from dockertask.runs import store, views


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


@contextmanager
def _record(write: bool = False) -> Iterator[sqlite3.Connection]:
    try:
        with store.reading(write=write) as conn:
            yield conn
    except store.RecordUnavailable as exc:
        _fail(f"dockertask: {exc}")
    except sqlite3.Error as exc:
        _fail(f"dockertask: the run record at {store.db_path()} cannot be read ({type(exc).__name__}: {exc}); "
              f"move it aside to start a new one, or name another file in {store.DB_ENV}")


def _took(start: float | None, end: float | None) -> str:
    if not start:
        return "-"
    seconds = (end or time.time()) - start
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _dump(value: Any) -> None:
    # Indented for a person at a terminal; compact (json's C encoder, ~5x faster on a 10,000-call run) for
    # a program reading a pipe.
    click.echo(json.dumps(value, indent=2 if sys.stdout.isatty() else None, default=str))


@click.group(invoke_without_command=True)
@click.option("--failed", is_flag=True, help="Only runs that failed or were interrupted.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of runs.")
@click.pass_context
def runs(ctx: click.Context, failed: bool, limit: int, as_json: bool) -> None:
    """The latest runs, one line each (newest first); `runs prune` deletes old ones."""
    if ctx.invoked_subcommand is not None:
        return
    with _record() as conn:
        found = views.runs(conn, failed=failed, limit=limit)
    if as_json:
        _dump(found)
        return
    if not found:
        click.echo("no runs recorded" + (" that failed" if failed else ""))
        return
    click.echo(f"{'RUN':<24} {'STATUS':<12} {'STARTED':<19} {'TOOK':>7}  {'CALLS':<26} NAME")
    for r in found:
        counts = r["counts"]
        calls = f"{sum(counts.values())} ({counts.get('failed', 0)} failed)"
        took = _took(r["started"], r["ended"])
        click.echo(f"{r['id']:<24} {r['status']:<12} {views.when(r['started']):<19} {took:>7}  {calls:<26} {r['name']}")


@runs.command(name="prune")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Delete runs that started more than DAYS ago.")
@click.option("--keep", type=click.IntRange(min=0), default=None, metavar="N", help="Keep only the newest N runs.")
def runs_prune(older_than: float | None, keep: int | None) -> None:
    """Delete finished runs (their calls, attempts, output and kept results)."""
    if older_than is None and keep is None:
        _fail("dockertask runs prune: say what to delete: --older-than DAYS and/or --keep N", 2)
    with _record(write=True) as conn:
        removed = views.prune(conn, older_than, keep)
    click.echo(f"removed {len(removed)} run(s)" + (": " + ", ".join(removed[:10]) if removed else "")
               + (" ..." if len(removed) > 10 else ""))


@click.command()
@click.argument("ident", metavar="RUN|CALL")
@click.option("--json", "as_json", is_flag=True, help="The run (with its calls) or the call, as JSON.")
@click.option("--html", "html", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write a self-contained HTML report of the run.")
def show(ident: str, as_json: bool, html: str | None) -> None:
    """A run's calls (status, duration, attempts, errors), or one call's attempts with their evidence."""
    with _record() as conn:
        run_id = views.find_run(conn, ident)
        if run_id is not None:
            if html is not None:
                from dockertask.runs import pages

                Path(html).write_text(pages.run_page(conn, run_id, static=True), encoding="utf-8")
                click.echo(f"wrote {html}: run {run_id}, one file that opens offline", err=True)
                return
            if as_json:
                click.echo(views.run_json(conn, run_id))
            else:
                _show_run(views.run_only(conn, run_id), views.call_lines(conn, run_id))
            return
        if html is not None:
            _fail(f"dockertask show --html: {ident!r} is not a run (`dockertask runs` lists them)", 2)
        try:
            one = views.call(conn, ident)
        except views.NotFound:
            _fail(f"dockertask show: no run or call {ident!r} in {store.db_path()} (`dockertask runs` lists runs)")
    _dump(one) if as_json else _show_call(one)


def _show_run(r: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    out: list[str] = []
    echo = out.append  # one write at the end: a 10,000-call run is 10,000 lines
    _run_lines(r, rows, echo)
    click.echo("\n".join(out))


def _run_lines(r: dict[str, Any], rows: list[tuple[Any, ...]], echo: Callable[[str], Any]) -> None:
    echo(f"run {r['id']}  {r['name']}  {r['status']}  started {views.when(r['started'])}, took "
         f"{_took(r['started'], r['ended'])}")
    echo(f"  command: {' '.join(json.loads(r['command'] or '[]')[1:])}  (in {r['cwd']}, {r['user']}@{r['host']})")
    if r["resumed_from"]:
        echo(f"  resumed from {r['resumed_from']}")
    echo(f"  {'CALL':<16} {'STATUS':<11} {'TOOK':>7} {'ATT':>3}  TASK")
    failed = 0
    for call_id, status, started, ended, attempts, parent, task, index, cache_hit, replayed, etype, error, grp in rows:
        how = " (cache hit)" if cache_hit else " (from the record)" if replayed else ""
        how += f"  [{grp}]" if grp and not parent else ""
        item = f"[{index}]" if index is not None else ""
        indent = "  " if parent else ""
        echo(f"  {call_id:<16} {status:<11} {_took(started, ended):>7} {attempts:>3}  {indent}{task}{item}{how}")
        if status == "failed":
            echo(f"  {'':<16} {etype}: {error.splitlines()[0] if error else ''}")
        failed += status in ("failed", "interrupted")
    if failed:
        echo(f"{failed} call(s) failed: `dockertask show CALL` for one; `dockertask rerun {r['id']}` "
             "runs the program again without the calls that succeeded")


def _show_call(c: dict[str, Any]) -> None:
    item = f"[{c['map_index']}]" if c["map_index"] is not None else ""
    click.echo(f"call {c['call_id']} of run {c['run_id']}: {c['task']}{item}  {c['status']}, took "
               f"{_took(c['started'], c['ended'])}")
    click.echo(f"  inputs: {c['inputs']}")
    if c["upstream"]:
        click.echo(f"  inputs from: {', '.join(c['upstream'])}")
    if c["status"] == "succeeded":
        click.echo(f"  result: {c['result']}" + (" (cache hit)" if c["cache_hit"] else "")
                   + (" (from the record of the resumed run)" if c["replayed"] else ""))
    for a in c["attempts"]:
        flags = [f for f in ("oom_killed", "timed_out", "preempted") if a[f]]
        click.echo(f"  attempt {a['attempt']}: exit {a['exit_code']}{' ' + ', '.join(flags) if flags else ''}, "
                   f"took {_took(a['started'], a['ended'])}, peak memory {views.size(a['peak_memory'])}, CPU "
                   f"{'-' if a['cpu_seconds'] is None else format(a['cpu_seconds'], '.2f') + ' s'}")
        digest = f", {a['image_digest']}" if a["image_digest"] else ""
        node = f"  node {a['node']}" if a["node"] else ""
        click.echo(f"    container {(a['container_id'] or '-')[:12]}  image {a['image']} ({a['image_id'] or '-'}"
                   f"{digest}){node}")
        if a["error"]:
            click.echo(f"    {a['error'].splitlines()[0]}")
    if c["traceback"]:
        click.echo(c["traceback"].rstrip())


@click.command()
@click.argument("ident", metavar="CALL|RUN")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are recorded until it ends.")
def logs(ident: str, follow: bool) -> None:
    """The recorded output (stdout and stderr) of a call, or of every call of a run."""
    with _record() as conn:
        run_id = views.find_run(conn, ident)
        call_id = None
        if run_id is None:
            try:
                one = views.call(conn, ident)
            except views.NotFound:
                _fail(f"dockertask logs: no run or call {ident!r} in {store.db_path()}")
            run_id, call_id = one["run_id"], one["call_id"]
        shown = 0  # the row id of the last line shown
        while True:
            ended = follow and _ended(conn, run_id, call_id)  # asked first: no line of its last moment is lost
            for cid, _attempt, _seq, _stream, line, rowid in views.output(conn, run_id, call_id, shown):
                click.echo(line if call_id else f"[{cid}] {line}")
                shown = rowid
            if not follow or ended:
                return
            sys.stdout.flush()  # a follower's reader (a pipe, a CI log) sees each line as it comes
            time.sleep(0.2)


def _ended(conn: sqlite3.Connection, run_id: str, call_id: str | None) -> bool:
    views.reap(conn)
    if call_id is None:
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    else:
        row = conn.execute("SELECT status FROM calls WHERE run_id = ? AND call_id = ?", (run_id, call_id)).fetchone()
    return row is None or row[0] != "running"


@click.command()
@click.argument("run_id", metavar="RUN")
def rerun(run_id: str) -> None:
    """Run RUN's command line again, in its directory: calls that succeeded in RUN return their recorded
    result without a container; failed calls and calls that never ran run now."""
    with _record() as conn:
        found = views.find_run(conn, run_id)
        if found is None:
            _fail(f"dockertask rerun: no run {run_id!r} in {store.db_path()} (`dockertask runs` lists runs)")
        command, cwd = conn.execute("SELECT command, cwd FROM runs WHERE id = ?", (found,)).fetchone()
    argv = json.loads(command or "[]")
    if not argv:
        _fail(f"dockertask rerun: run {found} recorded no command line")
    click.echo(f"dockertask: re-running run {found}: {' '.join(argv[1:])} (in {cwd})", err=True)
    env = {**os.environ, "DOCKERTASK_RESUME": found}
    try:
        os.chdir(cwd)
    except OSError as exc:
        _fail(f"dockertask rerun: the run's directory {cwd} cannot be entered ({exc})")
    os.execve(argv[0], argv, env)


@click.command()
@click.option("--port", default=8265, show_default=True, type=click.IntRange(0, 65535), help="The port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; anything but loopback shows the record to your network.")
def ui(port: int, host: str) -> None:
    """A local web dashboard of the record: runs, calls, timeline, resource use, errors, live output."""
    from dockertask.runs import server

    if not store.db_path().exists():
        click.echo(f"dockertask: no record at {store.db_path()} yet; the dashboard shows runs as they are made",
                   err=True)
        store.connect().close()
    click.echo(f"dockertask ui: http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    try:
        server.serve(host, port)
    except OSError as exc:
        _fail(f"dockertask ui: cannot listen on {host}:{port} ({exc}); choose another with --port")


def register(group: click.Group) -> None:
    for command in (runs, show, logs, rerun, ui):
        group.add_command(command)
