"""`dockertask cache list|clear|prune`: the results ``@task(cache=True)`` keeps, which of them a call would
hit now, and removing the ones none would.

An entry is *current* when it was stored by the task's code as it is now (the code fingerprint that is
part of every cache key): after four edits of a task, four entries for the same inputs are listed, and the
current one is marked. Telling that needs the task's file, which is loaded as ``dockertask run`` loads it;
an entry whose file cannot be loaded (moved, or broken) is shown as unknown and kept by ``prune``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import sys
from typing import Any

import click


@click.group()
def cache() -> None:
    """List, clear or prune cached task results."""


def _current_codes(entries: list[Any]) -> dict[tuple[str, str], str | None]:
    """For each (source file, function qualname) of ``entries``: the task's code fingerprint now (first 16
    characters, as stored), or None when it cannot be told (no file recorded, the file cannot be loaded,
    the task is gone)."""
    import contextlib
    import io
    import os

    from dockertask.tasks import Task

    found: dict[tuple[str, str], str | None] = {}
    modules: dict[str, Any] = {}
    for e in entries:
        place = (e.source, e.qualname)
        if place in found:
            continue
        found[place] = None
        if not e.source or not e.qualname or not os.path.isfile(e.source):
            continue
        if e.source not in modules:
            from dockertask.cli.loading import load_module

            try:  # what the file prints as it loads is not this command's output
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    modules[e.source] = load_module(e.source)
            except BaseException:  # noqa: BLE001 - a file that no longer loads: its entries are unknown
                modules[e.source] = None
        module = modules[e.source]
        if module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, Task) and value.function.__qualname__ == e.qualname:
                found[place] = value.code_fingerprint[:16]
                break
    return found


def _state(entry: Any, codes: dict[tuple[str, str], str | None]) -> str:
    """current (a call with its inputs would hit it), stale (the task's code changed, or it is gone),
    unknown (it cannot be told), damaged."""
    if entry.damaged:
        return "damaged"
    now = codes.get((entry.source, entry.qualname))
    if not entry.code or (now is None and entry.source and not _gone(entry)):
        return "unknown"
    if now is None:
        return "stale"
    return "current" if now == entry.code else "stale"


def _gone(entry: Any) -> bool:
    """The entry's task no longer exists: its file is gone (a file that exists but fails to load is unknown)."""
    import os

    return bool(entry.source) and not os.path.exists(entry.source)


@cache.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array (key, task, cache_version, created, size, "
                                                       "state).")
def cache_list(as_json: bool) -> None:
    """List cached results, the current ones (what a call would hit now) marked with *."""
    from dockertask.calls.cache import Cache

    store = Cache()
    entries = store.entries()
    codes = _current_codes(entries)
    if as_json:
        click.echo(json.dumps([{**dataclasses.asdict(e), "state": _state(e, codes)} for e in entries], indent=2))
        return
    rows = [("", "KEY", "TASK", "VERSION", "CREATED", "SIZE", "STATE")]
    for e in sorted(entries, key=lambda e: (e.task, e.created)):
        state = _state(e, codes)
        task_name = "(damaged: `dockertask cache clear` removes it)" if e.damaged else e.task
        rows.append(("*" if state == "current" else "", e.key[:16], task_name, e.cache_version or "-",
                     e.created.replace("+00:00", "Z"), f"{e.size} B", state))
    if entries:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    click.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {store.directory}"
               + (" (* current: what a call with the same inputs would hit now)" if entries else ""), err=True)


@cache.command(name="clear")
@click.option("--task", "task_name", default=None,
              help="Only this task's results: its full name (flows.square) or its short one (square).")
def cache_clear(task_name: str | None) -> None:
    """Remove cached results (all, or one task's)."""
    from dockertask.calls.cache import Cache, names

    store = Cache()
    if task_name is not None:
        known = sorted({e.task for e in store.entries() if e.task})
        if not any(names(t, task_name) for t in known):
            close = difflib.get_close_matches(task_name, known + [t.rsplit(".", 1)[-1] for t in known], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            click.echo(f"dockertask: no cached results of a task named {task_name!r}{hint} (tasks with cached "
                       f"results: {', '.join(known) or 'none'})", err=True)
            sys.exit(1)
    click.echo(f"removed {store.clear(task_name)} cached result(s)")


@cache.command(name="prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Also remove entries stored more than DAYS days ago, current or not.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def cache_prune(days: float | None, dry_run: bool) -> None:
    """Remove the results no call would hit now: stored by code the task no longer has, of a task whose file
    is gone, or damaged. Current entries, and those whose task cannot be told, are kept."""
    from dockertask.calls.cache import Cache

    store = Cache()
    entries = store.entries()
    codes = _current_codes(entries)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=days) if days is not None else None
    removed, freed = 0, 0
    for e in entries:
        state, created = _state(e, codes), _created(e)
        old = cutoff is not None and created is not None and created < cutoff
        if state in ("stale", "damaged") or old:
            if not dry_run:
                store.remove(e)
            removed, freed = removed + 1, freed + e.size
            click.echo(f"{'would remove' if dry_run else 'removed'} {e.key[:16]}  {e.task or '(damaged)'}  "
                       f"{'older than ' + format(days, 'g') + ' days' if old and state == 'current' else state}",
                       err=True)
    click.echo(f"{'would remove' if dry_run else 'removed'} {removed} cached result(s), {freed} B; "
               f"{len(entries) - removed} kept")


def _created(entry: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(entry.created)
    except ValueError:
        return None


def register(group: click.Group) -> None:
    group.add_command(cache)
