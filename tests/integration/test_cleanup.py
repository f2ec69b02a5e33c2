"""Cleanup when the host is interrupted: Ctrl-C, SIGTERM, and gc after kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from .conftest import with_env

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, time
from dockertask import task
@task(environment={{"MARK": "{mark}"}})
def slow() -> int:
    print("started", flush=True)
    time.sleep(120)
    return 1
{call}
"""


def _containers(api, mark: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return with_env(api, api.containers(all=True, filters={"label": "dockertask.run-id"}), f"MARK={mark}")


def _start(mark: str, call: str, labels: str = "") -> subprocess.Popen[str]:
    code = textwrap.dedent(SCRIPT.format(mark=mark, call=call))
    env = {**os.environ}
    if labels:
        env["DOCKERTASK_LABELS"] = ",".join(x for x in (env.get("DOCKERTASK_LABELS", ""), labels) if x)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_started(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    # A submit's lines carry its prefix ("[slow#1] started"); a plain call's do not.
    assert line.strip() in ("started", "[slow#1] started"), (line, proc.stderr.read() if proc.stderr else "")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("call", ["slow()", "slow.submit().result()"], ids=["call", "submit"])
def test_interrupted_host_leaves_no_container(api, sig: signal.Signals, call: str) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C or SIGTERM to the host process removes the running task's container before it exits."""
    mark = uuid.uuid4().hex
    proc = _start(mark, call)
    _wait_started(proc)
    assert len(_containers(api, mark)) == 1
    start = time.monotonic()
    proc.send_signal(sig)
    proc.wait(30)
    assert time.monotonic() - start < 20, "the host waited for the task instead of stopping it"
    assert proc.returncode != 0
    assert _containers(api, mark) == []


def test_gc_removes_what_a_killed_host_left_and_spares_live_ones(api) -> None:  # type: ignore[no-untyped-def]
    """After kill -9 the container stays; `dockertask gc` removes it but not a live host's container."""
    dead_mark, live_mark = uuid.uuid4().hex, uuid.uuid4().hex
    dead = _start(dead_mark, "slow()")
    live = _start(live_mark, "slow()")
    try:
        _wait_started(dead)
        _wait_started(live)
        dead.kill()
        dead.wait(10)
        assert len(_containers(api, dead_mark)) == 1
        out = subprocess.run([str(Path(sys.executable).parent / "dockertask"), "gc"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert _containers(api, dead_mark) == []
        assert len(_containers(api, live_mark)) == 1
        assert "removed 1" in out.stdout
        # It says whose it was: the task, the host and the process that started it.
        assert f"task __main__.slow, host {socket.gethostname()}, process {dead.pid}" in out.stderr
    finally:
        live.send_signal(signal.SIGINT)
        live.wait(30)
        dead.kill()


def test_gc_label_removes_only_what_carries_the_label(api) -> None:  # type: ignore[no-untyped-def]
    """Two dead hosts' containers, labelled team=a and team=b through DOCKERTASK_LABELS: `gc --label team=a`
    removes the first only; a malformed --label is refused before anything is removed."""
    marks = {team: uuid.uuid4().hex for team in ("a", "b")}
    procs = {team: _start(mark, "slow()", f"team={team}-{mark}") for team, mark in marks.items()}
    dockertask = str(Path(sys.executable).parent / "dockertask")
    try:
        for proc in procs.values():
            _wait_started(proc)
            proc.kill()
            proc.wait(10)
        bad = subprocess.run([dockertask, "gc", "--label", "team"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "'team': expected KEY=VALUE" in bad.stderr
        assert all(len(_containers(api, mark)) == 1 for mark in marks.values())
        out = subprocess.run([dockertask, "gc", "--label", f"team=a-{marks['a']}"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert _containers(api, marks["a"]) == [] and len(_containers(api, marks["b"])) == 1
        assert f"process {procs['a'].pid}" in out.stderr and f"process {procs['b'].pid}" not in out.stderr
    finally:
        subprocess.run([dockertask, "gc", "--label", f"team=b-{marks['b']}"], capture_output=True, timeout=60)
