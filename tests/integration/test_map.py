"""map_task and many submits on a real engine: order, concurrency, failures, and stopping them."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from functools import partial
from pathlib import Path

import pytest

from dockertask import MapTaskError, map_task, task

from .conftest import with_env

ROOT = Path(__file__).resolve().parents[2]


@task
def timed(x: int, hold: float) -> tuple[int, float, float]:
    import time as t

    start = t.time()
    t.sleep(hold)
    return x, start, t.time()


def test_results_are_in_order_and_at_most_concurrency_run_at_once() -> None:
    """9 items, concurrency 3: results in input order; the containers' own clocks show <= 3 overlapping."""
    results = map_task(partial(timed, hold=1.0), concurrency=3)(x=list(range(9)))
    assert [r[0] for r in results] == list(range(9))
    events = sorted([(s, 1) for _, s, _ in results] + [(e, -1) for _, _, e in results], key=lambda ev: (ev[0], ev[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 2 <= peak <= 3, peak


@task
def checked(x: int) -> int:
    if x % 4 == 3:
        raise ValueError(f"bad {x}")
    return x


def test_failures_are_reported_by_index_after_every_item_ran() -> None:
    """Failing items raise MapTaskError with each failure by index; the rest still ran and came back."""
    with pytest.raises(MapTaskError) as info:
        map_task(checked, concurrency=4)(x=list(range(8)))
    assert sorted(info.value.failures) == [3, 7]
    assert info.value.results == [0, 1, 2, None, 4, 5, 6, None]
    assert map_task(checked, min_success_ratio=0.75)(x=list(range(8))) == [0, 1, 2, None, 4, 5, 6, None]


SCRIPT = """
import os, sys, time
from dockertask import map_task, task

@task(environment={{"MARK": "{mark}"}})
def sleeper(x: int) -> int:
    print("started", x, flush=True)
    time.sleep(120)
    return x

{call}
"""


def _marked(api, mark: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return with_env(api, api.containers(all=True, filters={"label": "dockertask.run-id"}), f"MARK={mark}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("call", [
    "map_task(sleeper, concurrency=3)(x=list(range(30)))",
    "fs = [sleeper.submit(i) for i in range(30)]\n[f.result() for f in fs]",
], ids=["map", "queued-submits"])
def test_interrupting_many_calls_starts_nothing_more_and_leaves_nothing(api, sig: signal.Signals,  # type: ignore[no-untyped-def]
                                                                       call: str) -> None:
    """Ctrl-C or SIGTERM during a map or 30 queued submits: no new container starts, running ones are
    removed, and the process exits in seconds (not the length of the queue)."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT.format(mark=mark, call=call))], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "DOCKERTASK_MAX_PARALLEL": "3"})
    try:
        assert proc.stdout is not None
        started = set()
        while len(started) < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            if "started" in line:
                started.add(line.split()[-1])
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 15, "it waited for the queue"
        assert proc.returncode != 0
        later = {line.split()[-1] for line in out.splitlines() if "started" in line}
        assert len(started | later) <= 4, f"more started after the signal: {sorted(started | later)}"
        assert _marked(api, mark) == []
    finally:
        proc.kill()
