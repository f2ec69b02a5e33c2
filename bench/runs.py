"""The run record's cost: each kind of call with recording on and off, interleaved in one process, and how
fast `dockertask runs` and `show` answer with 10,000 recorded calls.

floor:     docker SDK create → start → wait → remove of ``python3 -c pass`` (as bench/overhead.py)
isolated:  ``inc(x)`` in a fresh container, recording on vs off (DOCKERTASK_RECORD), alternating
warm:      ``winc(x)`` on a warm replica (ReusePolicy(replicas=1)), on vs off, alternating
map:       ``map_task(minc)(x=range(N))`` on 2 replicas, on vs off, alternating
reads:     ``dockertask runs`` and ``dockertask show RUN`` on a record holding --record-calls calls
Targets (issue #19): at most +2% isolated, +10% warm, +5% map; runs/show under 0.3 s at 10,000 calls.

usage: python bench/runs.py [--runs 10] [--calls 1000] [--record-calls 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask import ReusePolicy, map_task, task
from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image
from dockertask.runs import store


@task
def inc(x: int) -> int:
    return x + 1


@task(reusable=ReusePolicy(replicas=1))
def winc(x: int) -> int:
    return x + 1


@task(reusable=ReusePolicy(replicas=2))
def minc(x: int) -> int:
    return x + 1


def _timed(record: bool, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    os.environ[store.RECORD_ENV] = "1" if record else "0"
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def _ratio(on: list[float], off: list[float]) -> str:
    a, b = statistics.median(on), statistics.median(off)
    return f"on {a * 1000:.1f} ms, off {b * 1000:.1f} ms: {100 * (a / b - 1):+.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--record-calls", type=int, default=10_000)
    args = ap.parse_args()
    os.environ["DOCKERTASK_PROGRESS"] = "0"
    tmp = tempfile.mkdtemp(prefix="dockertask-bench-runs-")
    os.environ[store.DB_ENV] = str(Path(tmp) / "runs.sqlite3")
    image = default_image_ref()
    ensure_image(default_backend(), image)
    api = api_client()
    floor_once(api, image)
    inc(0), winc(0), map_task(minc)(x=[0, 1])  # image, replicas, record opened
    floors: list[float] = []
    iso: dict[bool, list[float]] = {True: [], False: []}
    warm: dict[bool, list[float]] = {True: [], False: []}
    maps: dict[bool, list[float]] = {True: [], False: []}
    # Each kind in a phase of its own, on and off strictly alternating, so that the engine's state (spares
    # made ahead, replicas warm) is the same for both: a map's thousand calls just before an isolated call
    # changed what that call found.
    # A pause before each isolated call: the container made ahead for it is ready, as it is for a program
    # that calls at a steady rate (back to back, every second call finds none, recording or not).
    cold: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.runs):
        floors.append(floor_once(api, image))
        for record in (i % 2 == 0, i % 2 == 1):  # which goes first alternates too
            time.sleep(1.0)
            iso[record].append(_timed(record, inc, i))
    os.environ["DOCKERTASK_PRECREATE"] = "0"  # and with none made ahead: a fresh container per call
    for i in range(args.runs):
        for record in (i % 2 == 0, i % 2 == 1):
            cold[record].append(_timed(record, inc, i))
    del os.environ["DOCKERTASK_PRECREATE"]
    for i in range(args.runs * 10):
        for record in (i % 2 == 0, i % 2 == 1):
            warm[record].append(_timed(record, winc, i))
    for i in range(4):
        for record in (i % 2 == 0, i % 2 == 1):
            maps[record].append(_timed(record, map_task(minc), x=list(range(args.calls))))
    store.WRITER.flush()
    f = statistics.median(floors)
    print(f"image {image}; {args.runs} rounds, recording on and off alternating")
    print(f"floor (create/start/wait/remove python3 -c pass): median {f * 1000:.0f} ms")
    print(f"isolated call:       {_ratio(iso[True], iso[False])} (target <= +2%); on = "
          f"{statistics.median(iso[True]) / f:.3f}x the floor")
    print(f"isolated, none made ahead: {_ratio(cold[True], cold[False])} (target <= +2%)")
    print(f"warm reused call:    {_ratio(warm[True], warm[False])} (target <= +10%)")
    print(f"map of {args.calls} on 2 replicas: {_ratio(maps[True], maps[False])} (target <= +5%)")
    _reads(Path(tmp) / "runs.sqlite3", args.record_calls)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _reads(db: Path, calls: int) -> None:
    """Fill the record to ``calls`` calls (one run of them, plus the runs above) and time the CLI reads."""
    import sqlite3

    conn = sqlite3.connect(db)
    now = time.time()
    conn.execute("INSERT INTO runs (id, name, started, ended, status, command) VALUES ('big', 'big', ?, ?, "
                 "'failed', '[]')", (now, now + 60))
    have = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    rows = [("big", f"c{i:015}", None, "m.t", "v", "d", f"x={i}", i, now + i / 1000, now + i / 1000 + 0.5,
             "failed" if i % 97 == 0 else "succeeded") for i in range(max(calls - have, 0))]
    conn.executemany("INSERT INTO calls (run_id, call_id, parent, task, code_version, input_digest, inputs, "
                     "map_index, started, ended, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO attempts (run_id, call_id, attempt, exit_code) VALUES (?, ?, 1, 0)",
                     [(r[0], r[1]) for r in rows])
    conn.commit()
    total = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    conn.close()
    env = {**os.environ, store.DB_ENV: str(db)}
    for label, argv in (("dockertask runs", ["runs"]), ("dockertask show RUN", ["show", "big"]),
                        ("dockertask show RUN --json", ["show", "big", "--json"])):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dockertask", *argv], env=env, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        print(f"{label:<28} with {total} calls recorded: median {statistics.median(times):.3f} s "
              "(target < 0.3 s; the whole command, Python's start included)")


if __name__ == "__main__":
    sys.exit(main())
