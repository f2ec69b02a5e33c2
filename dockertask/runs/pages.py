"""The record's pages: the list of runs, a run (its calls, a timeline, resource use, errors) and a call (its
attempts and output), for the dashboard (server.py) and for ``show --html`` (one self-contained file).

Everything a task sent is data: the templates are Jinja2 with autoescaping on, so a task that prints
``<script>`` shows the text. The timeline and the bars are SVG and HTML elements, each with its own label
(the call and its times), for screen readers and for tests; nothing is fetched from a network.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from dockertask.runs import views

PAGE_CALLS = 200  # rows of a run's call table per page: a 10,000-call run opens as fast as a small one
TIMELINE_MAX = 1000  # bars drawn; past it the timeline says how many more there were
OUTPUT_LINES = 2000  # lines of a call's output on its page (the rest: `dockertask logs`)
REPORT_OUTPUT_LINES = 200  # lines of each failed call's output in a report


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("dockertask.runs", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = views.when
    env.filters["took"] = _took
    env.filters["size"] = views.size
    return env


_ENV: Any = None


def render(template: str, **values: Any) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return str(_ENV.get_template(template).render(**values))


def _took(pair: tuple[float | None, float | None]) -> str:
    start, end = pair
    if not start:
        return "-"
    seconds = (end or time.time()) - start
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def runs_page(conn: sqlite3.Connection, failed: bool = False, limit: int = 100) -> str:
    found = views.runs(conn, failed=failed, limit=limit)
    return render("runs.html", runs=found, failed_only=failed, title="dockertask runs")


def run_data(conn: sqlite3.Connection, run_id: str, page: int | None = None) -> dict[str, Any]:
    """The run with what its page draws: counts, the timeline's bars in lanes, each call's memory bar (for
    the calls of table page ``page``; None: for every call, as the report shows them)."""
    run = views.run_only(conn, run_id)
    summary = views.summary(conn, run_id)
    now = time.time()
    t0 = min(x for x in (run["started"], summary["first"], now) if x)
    t1 = now if summary["open"] or not run["ended"] else max(run["ended"], summary["last"] or 0)
    span = max(t1 - t0, 1e-3)
    if page is None:
        items = views.calls(conn, run_id, items_only=True)
        timeline = items[:TIMELINE_MAX]
    else:
        items = views.calls(conn, run_id, items_only=True, limit=PAGE_CALLS, offset=page * PAGE_CALLS)
        timeline = views.calls(conn, run_id, items_only=True, limit=TIMELINE_MAX, attempts=False)
    started_of = dict(conn.execute("SELECT call_id, started FROM calls WHERE run_id = ? AND task LIKE "
                                   "'map_task(%'", (run_id,)).fetchall())
    for c in items + timeline:
        c["label"] = views.label(c)
    for c in items:
        last = c["attempts"][-1] if c["attempts"] else {}
        c["peak"] = last.get("peak_memory")
        c["cpu"] = last.get("cpu_seconds")
        c["oom"] = any(a["oom_killed"] for a in c["attempts"])
        c["timed_out"] = any(a["timed_out"] for a in c["attempts"])
    peak_max = max([c["peak"] or 0 for c in items] + [1])
    for c in items:
        ceiling = c["mem_limit"] or peak_max
        c["mem_pct"] = min(100.0, 100.0 * (c["peak"] or 0) / ceiling) if c["peak"] else 0.0
    bars, lanes = _lanes(timeline, t0, span, started_of, now)
    return {"run": run, "items": items, "counts": summary["counts"], "total": summary["total"], "bars": bars,
            "lanes": lanes, "span": span, "t0": t0, "more_bars": max(summary["total"] - len(bars), 0),
            "signature": _signature(run, summary)}


def _lanes(items: list[dict[str, Any]], t0: float, span: float, started_of: dict[str, float | None],
           now: float) -> tuple[list[dict[str, Any]], int]:
    """Each call as a bar (percent of the run's span), in lanes: calls that overlap never share a lane, so the
    number of lanes in use at a moment is how many calls ran at once (a map's concurrency shows as its height)."""
    ends: list[float] = []
    bars = []
    for c in sorted((c for c in items if c["started"]), key=lambda c: c["started"]):
        start, end = c["started"], c["ended"] or now
        lane = next((i for i, e in enumerate(ends) if e <= start), len(ends))
        if lane == len(ends):
            ends.append(end)
        else:
            ends[lane] = end
        queued = started_of.get(c["parent"]) if c["parent"] else None
        bars.append({"call": c, "lane": lane, "x": 100 * (start - t0) / span,
                     "w": max(100 * (end - start) / span, 0.15),
                     "qx": 100 * ((queued or start) - t0) / span,
                     "title": f"{c['label']} ({c['call_id']}): {c['status']}, started +{start - t0:.2f} s, "
                              f"took {end - start:.2f} s"
                              + (f", queued +{queued - t0:.2f} s" if queued and queued < start else "")})
    return bars, max(len(ends), 1)


def signature(conn: sqlite3.Connection, run_id: str) -> str:
    """What changes when the run's page would: the live view swaps its part in when this does."""
    return _signature(views.run_only(conn, run_id), views.summary(conn, run_id))


def _signature(run: dict[str, Any], summary: dict[str, Any]) -> str:
    return json.dumps([run["status"], summary["calls"], summary["open"], summary["last"]])


def run_page(conn: sqlite3.Connection, run_id: str, page: int = 0, static: bool = False) -> str:
    data = run_data(conn, run_id, None if static else page)
    items = data["items"]
    details = []
    if static:  # the report: every call in the table, and the failed ones' details inline
        details = [call_detail(conn, f"{run_id}/{c['call_id']}", REPORT_OUTPUT_LINES)
                   for c in items if c["status"] in ("failed", "interrupted")]
    pages = max((data["total"] + PAGE_CALLS - 1) // PAGE_CALLS, 1)
    return render("run.html", **data, shown=items, page=page, pages=pages, static=static, details=details,
                  title=f"run {data['run']['name']} ({run_id})")


def call_detail(conn: sqlite3.Connection, ident: str, lines: int = OUTPUT_LINES) -> dict[str, Any]:
    call = views.call(conn, ident)
    output = views.output(conn, call["run_id"], call["call_id"])
    call["output"] = output[:lines]
    call["more_output"] = max(len(output) - lines, 0)
    call["last_row"] = output[-1][5] if output else 0
    call["label"] = views.label(call)
    return call


def call_page(conn: sqlite3.Connection, ident: str) -> str:
    call = call_detail(conn, ident)
    return render("call.html", call=call, title=f"call {call['label']} ({call['call_id']})")
