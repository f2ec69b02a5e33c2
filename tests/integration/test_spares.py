"""Containers created ahead of time for isolated calls, on a real engine: a spare runs exactly one call,
sees nothing of earlier calls or their secrets, and is never left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockertask import Secret, current_context, task
from dockertask.calls import spares

from .conftest import remove_container, with_env

ROOT = Path(__file__).resolve().parents[2]
DOCKERTASK = str(Path(sys.executable).parent / "dockertask")


def _spares(api: Any, mark: str | None = None) -> list[dict[str, Any]]:
    """Containers made ahead (created, or started and waiting for a call), of this process (or of the script
    marked ``mark``); asked when no call of theirs runs."""
    # By State, not a status filter: Podman's compat API answers status=created with nothing.
    found = [c for c in api.containers(all=True, filters={"label": "dockertask.run-id"})
             if c["State"] in ("created", "running")]
    if mark is None:
        return [c for c in found if c["Labels"].get("dockertask.host-pid") == str(os.getpid())]
    return with_env(api, found, f"MARK={mark}")


def _wait_for_spare(api: Any, mark: str | None = None, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = _spares(api, mark)
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, "no container was made ahead for the next call"
        time.sleep(0.05)


@task
def leaves_a_mark(token: str) -> tuple[str, str, bool, str]:
    """Who ran me (container hostname and run id), and did an earlier call's file survive?"""
    import socket

    path = "/tmp/earlier-call"
    seen = os.path.exists(path)
    with open(path, "w") as f:
        f.write(token)
    return socket.gethostname(), current_context().run_id, seen, token


@pytest.mark.parametrize("precreate", ["1", "created"])
def test_a_later_call_runs_in_a_container_made_ahead_and_sees_nothing_of_earlier_calls(
        api: Any, monkeypatch: pytest.MonkeyPatch, precreate: str) -> None:
    """From the second call on, the next call's container is made during the current one: started, its Python
    waiting for a call with the runtime loaded (only created with DOCKERTASK_PRECREATE=created). The next call
    runs in exactly that container, under its run id, and finds no file an earlier call wrote."""
    monkeypatch.setenv("DOCKERTASK_PRECREATE", precreate)
    first = leaves_a_mark("one")
    second = leaves_a_mark("two")
    spare = _wait_for_spare(api)
    assert spare["State"] == ("running" if precreate == "1" else "created")
    third = leaves_a_mark("three")
    assert third[0] == spare["Id"][:12], "the third call did not run in the container made ahead"
    assert third[1] == spare["Labels"]["dockertask.run-id"], "the call's run id is not its container's label"
    assert [r[2] for r in (first, second, third)] == [False, False, False]
    assert len({r[0] for r in (first, second, third)}) == 3, "two calls shared a container"
    assert len({r[1] for r in (first, second, third)}) == 3


@task(secret_requests=[Secret("db", "password")])
def reads_secret() -> tuple[str, str]:
    import socket

    return socket.gethostname(), current_context().secrets.get("db", "password")


def test_a_spare_holds_no_secret_and_its_call_gets_its_own(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets are sent with the call, never when the container is made: `docker inspect` of a spare shows
    none, and the call that takes it reads its own value, not an earlier call's."""
    values = [f"s3cret-{i}-{uuid.uuid4().hex}" for i in range(3)]
    got = []
    for i, value in enumerate(values):
        monkeypatch.setenv("DOCKERTASK_SECRET_DB_PASSWORD", value)
        if i == 2:
            spare = _wait_for_spare(api)
            inspected = json.dumps(api.inspect_container(spare["Id"]))
            assert not any(v in inspected for v in values)
        got.append(reads_secret())
    assert [g[1] for g in got] == values
    assert got[2][0] == spare["Id"][:12]


def test_a_spare_removed_from_outside_is_replaced_by_a_fresh_container(api: Any) -> None:
    """`docker container prune` (or rm) of a spare before its call: the call makes a container as usual."""
    leaves_a_mark("one")
    leaves_a_mark("two")
    spare = _wait_for_spare(api)
    remove_container(api, spare["Id"])
    third = leaves_a_mark("three")
    assert third[3] == "three" and third[0] != spare["Id"][:12]


SCRIPT = """
import time
from dockertask import task

@task(environment={{"MARK": "{mark}"}})
def work(x: int) -> int:
    return x

print(work(1), work(2), flush=True)
{then}
"""


def _script(mark: str, then: str) -> subprocess.Popen[str]:
    code = textwrap.dedent(SCRIPT.format(mark=mark, then=then))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_spares_go_at_exit(api: Any) -> None:
    """A program whose last call left a spare waiting ends without leaving it."""
    mark = uuid.uuid4().hex
    proc = _script(mark, "import dockertask.calls.spares as s\nwhile not s.SPARES.idle_count(): time.sleep(0.05)")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split() == ["1", "2"]
    assert _spares(api, mark) == []


def test_gc_removes_the_spare_of_a_killed_process(api: Any) -> None:
    """After kill -9 the spare stays, a container with its owner's labels; `gc` removes it."""
    mark = uuid.uuid4().hex
    proc = _script(mark, "time.sleep(120)")
    try:
        assert proc.stdout is not None and proc.stdout.readline().split() == ["1", "2"]
        _wait_for_spare(api, mark)
        proc.kill()
        proc.wait(10)
        out = subprocess.run([DOCKERTASK, "gc"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert _spares(api, mark) == []
    finally:
        proc.kill()


def test_spares_are_off_with_precreate_0(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKERTASK_PRECREATE", "0")
    for token in ("one", "two", "three"):
        leaves_a_mark(token)
    time.sleep(0.5)
    assert _spares(api) == [] and spares.SPARES.idle_count() == 0
