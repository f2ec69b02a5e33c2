"""``dockertask ui``: the record's pages served on this machine (Flask on Werkzeug's threaded server).

Only GET routes, and each reads the record through its own read-only connection: nothing a page can ask
changes anything. Bound to 127.0.0.1 unless told otherwise. A Content-Security-Policy lets a page load
nothing from anywhere (its CSS and scripts are inline, its data comes from this server), so no request
leaves the machine. Why Flask: a small, well-kept WSGI framework whose templates (Jinja2) escape by default;
a local read-only dashboard needs no async server, and Werkzeug's threaded one serves it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockertask.runs import pages, store, views

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(db: Path | None = None) -> Any:
    import flask

    app = flask.Flask("dockertask.runs")

    @contextmanager
    def record() -> Iterator[sqlite3.Connection]:
        try:
            with store.reading(db) as conn:
                yield conn
        except store.RecordUnavailable as exc:
            flask.abort(flask.make_response(f"dockertask: {exc}", 503, {"Content-Type": "text/plain"}))

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def runs() -> Any:
        with record() as conn:
            return pages.runs_page(conn, failed=bool(flask.request.args.get("failed")))

    @app.get("/runs/<run_id>")
    def run(run_id: str) -> Any:
        page = flask.request.args.get("page", "0")
        with record() as conn:
            try:
                return pages.run_page(conn, run_id, page=int(page) if page.isdigit() else 0)
            except views.NotFound:
                flask.abort(404)

    @app.get("/runs/<run_id>/signature")
    def run_signature(run_id: str) -> Any:
        with record() as conn:
            try:
                return flask.Response(pages.signature(conn, run_id), mimetype="text/plain")
            except views.NotFound:
                flask.abort(404)

    @app.get("/calls/<run_id>/<call_id>")
    def call(run_id: str, call_id: str) -> Any:
        with record() as conn:
            try:
                return pages.call_page(conn, f"{run_id}/{call_id}")
            except views.NotFound:
                flask.abort(404)

    @app.get("/api/output/<run_id>/<call_id>")
    def output(run_id: str, call_id: str) -> Any:
        after = flask.request.args.get("after", "0")
        with record() as conn:
            try:
                status = views.call(conn, f"{run_id}/{call_id}")["status"]
            except views.NotFound:
                flask.abort(404)
            rows = views.output(conn, run_id, call_id, int(after) if after.isdigit() else 0)
        return flask.jsonify({"lines": [r[4] for r in rows], "after": rows[-1][5] if rows else int(after or 0),
                              "status": status})

    return app


def serve(host: str, port: int, db: Path | None = None) -> None:
    from werkzeug.serving import run_simple

    run_simple(host, port, create_app(db), threaded=True, use_reloader=False, use_debugger=False)
