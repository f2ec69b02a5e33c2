"""Reusable replicas on a real engine: isolation, failures, secrets, and their removal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from dockertask import Resources, ReusePolicy, Secret, TaskFailedError, TaskOOMError, TaskTimeoutError, task
from dockertask.calls import replicas

from .conftest import with_env

ROOT = Path(__file__).resolve().parents[2]
DOCKERTASK = str(Path(sys.executable).parent / "dockertask")
STATE: list[int] = []


@pytest.fixture(autouse=True)
def no_replicas_after() -> Iterator[None]:
    """Replicas live as long as this process; each test removes its own."""
    yield
    replicas.shutdown()


def _replicas(api, mark: str | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
    found = api.containers(all=True, filters={"label": "dockertask.replica=true"})
    if mark is None:
        return [c for c in found if c["Labels"].get("dockertask.host-pid") == str(os.getpid())]
    return with_env(api, found, f"MARK={mark}")


@task(reusable=ReusePolicy(replicas=1))
def remembers(x: int) -> tuple[str, int, int]:
    import socket

    STATE.append(x)
    return socket.gethostname(), os.getpid(), len(STATE)


def test_calls_share_a_warm_container_but_never_state(api) -> None:  # type: ignore[no-untyped-def]
    """Calls run in the same container, each in its own process: a global one call changes is fresh in the next."""
    results = [remembers(i) for i in range(4)]
    assert len({host for host, _, _ in results}) == 1
    assert len({pid for _, pid, _ in results}) == 4
    assert [n for _, _, n in results] == [1, 1, 1, 1]
    assert len(_replicas(api)) == 1


def test_the_function_is_sent_once_per_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its function (and by-value modules) travel with the first call of a replica, then only arguments do."""
    from dockertask.backends import docker as docker_backend

    sent: list[bytes] = []
    original = docker_backend.WorkerConnection.send

    def counting(self, pieces):  # type: ignore[no-untyped-def]
        sent.append(pieces[1])  # the op frame: b"load" or b"call"
        return original(self, pieces)

    monkeypatch.setattr(docker_backend.WorkerConnection, "send", counting)
    for i in range(5):
        remembers(i)
    assert sent.count(b"load") == 1 and sent.count(b"call") == 5


@task(reusable=ReusePolicy(replicas=1), timeout=2)
def misbehaves(how: str) -> str:
    import socket

    if how == "hang":
        time.sleep(60)
    if how == "crash":
        os._exit(5)
    if how == "hog":
        hog = bytearray(600 * 1024 * 1024)
        hog[::4096] = b"x" * len(hog[::4096])
    return socket.gethostname()


@pytest.mark.parametrize("how, error, match", [
    ("hang", TaskTimeoutError, "exceeded its timeout of 2s"),
    ("crash", TaskFailedError, "exited with code 5 without a result"),
])
def test_a_timeout_or_crash_fails_only_its_call_and_the_replica_is_replaced(
        api, how: str, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    """The failing call gets the error; the next call runs, in a fresh replica, and the old one is gone."""
    before = misbehaves("fine")
    start = time.monotonic()
    with pytest.raises(error, match=match):
        misbehaves(how)
    assert time.monotonic() - start < 15
    after = misbehaves("fine")
    assert after != before
    assert len(_replicas(api)) == 1


oom_prone = task(reusable=ReusePolicy(replicas=1), limits=Resources(mem="128Mi"))(misbehaves.function)


def test_an_oom_kill_is_a_task_oom_error_for_that_call_only() -> None:
    """A call over its memory limit is a TaskOOMError; the replica is replaced and the next call runs."""
    oom_prone("fine")
    with pytest.raises(TaskOOMError, match="128Mi"):
        oom_prone("hog")
    assert oom_prone("fine")


@task(reusable=ReusePolicy(replicas=1), secret_requests=[Secret("db", "password")])
def reads_secret() -> tuple[str, list[str]]:
    from dockertask import current_context

    return current_context().secrets.get("db", "password"), sorted(os.listdir("/etc/secrets"))


def test_secrets_travel_per_call_never_in_the_replicas_inspect(api, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Each call gets its secret on the channel; `docker inspect` of the replica never shows the value."""
    value = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv("DOCKERTASK_SECRET_DB_PASSWORD", value)
    assert reads_secret() == (value, ["db"])
    monkeypatch.setenv("DOCKERTASK_SECRET_DB_PASSWORD", value + "-2")
    assert reads_secret() == (value + "-2", ["db"])  # the new value, not the last call's file
    (replica,) = _replicas(api)
    assert value not in json.dumps(api.inspect_container(replica["Id"]))


@task(reusable=ReusePolicy(replicas=1, idle_ttl=timedelta(seconds=1)))
def short_lived() -> int:
    return 1


def test_an_idle_replica_is_removed_after_its_ttl(api) -> None:  # type: ignore[no-untyped-def]
    """With idle_ttl=1s, the replica is gone a moment after its last call."""
    assert short_lived() == 1
    assert len(_replicas(api)) == 1
    deadline = time.monotonic() + 10
    while _replicas(api) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _replicas(api) == []


SCRIPT = """
import time
from dockertask import ReusePolicy, task

@task(reusable=ReusePolicy(replicas=2), environment={{"MARK": "{mark}"}})
def work(x: int) -> int:
    if x < 0:
        time.sleep(120)
    return x

print(work(1), flush=True)
{then}
"""


def _script(mark: str, then: str) -> subprocess.Popen[str]:
    code = textwrap.dedent(SCRIPT.format(mark=mark, then=then))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_replicas_go_at_exit(api) -> None:  # type: ignore[no-untyped-def]
    """A program that used replicas leaves none when it ends."""
    mark = uuid.uuid4().hex
    proc = _script(mark, "")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _replicas(api, mark) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_replicas_go_on_ctrl_c_and_sigterm(api, sig: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C or SIGTERM during a reused call: the call stops, its replicas are removed, promptly."""
    mark = uuid.uuid4().hex
    proc = _script(mark, "work(-1)")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "1"
        time.sleep(1.0)
        start = time.monotonic()
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        assert time.monotonic() - start < 15
        assert _replicas(api, mark) == []
    finally:
        proc.kill()


def test_gc_removes_the_replicas_of_a_killed_process(api) -> None:  # type: ignore[no-untyped-def]
    """After kill -9 the replica stays; `dockertask gc` removes it."""
    mark = uuid.uuid4().hex
    proc = _script(mark, "time.sleep(120)")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "1"
        proc.kill()
        proc.wait(10)
        assert len(_replicas(api, mark)) == 1
        out = subprocess.run([DOCKERTASK, "gc"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert _replicas(api, mark) == []
    finally:
        proc.kill()


def _reused_adder(k: int) -> object:
    @task(reusable=ReusePolicy(replicas=1))
    def add_k(x: int) -> int:
        return x + k

    return add_k


def test_tasks_made_by_a_factory_run_their_own_closure_in_a_shared_replica() -> None:
    """Two tasks from one factory share a replica (same configuration) but each runs its own closure
    (the replica ran the first one's: add_100(1) returned 2; issue 17, C11)."""
    add_1, add_100 = _reused_adder(1), _reused_adder(100)
    assert add_1(1) == 2  # type: ignore[operator]
    assert add_100(1) == 101  # type: ignore[operator]
    assert add_1(1) == 2  # type: ignore[operator]


WARM: dict[str, object] = {}
SETUP_RUNS: list[int] = []


def load_table() -> None:
    """A ReusePolicy setup: state left in this module's globals for every call of the replica."""
    print("loading the table")
    WARM["table"] = {i: i * i for i in range(1000)}
    WARM["pid"] = os.getpid()
    SETUP_RUNS.append(1)


@task(reusable=ReusePolicy(replicas=1, setup=load_table))
def lookup(x: int) -> tuple[int, int, int, int]:
    table: dict[int, int] = WARM["table"]  # type: ignore[assignment]  # no assert: pytest rewrites those
    found = table[x]
    table[x] = -1  # a change no later call may see
    return found, len(SETUP_RUNS), os.getpid(), int(str(WARM["pid"]))


def broken_setup() -> None:
    raise FileNotFoundError("model.bin is not in the image")


@task(reusable=ReusePolicy(replicas=1, setup=broken_setup))
def needs_model(x: int) -> int:
    return x


@task(reusable=ReusePolicy(replicas=1))
def sees_no_setup(x: int) -> bool:
    return "table" in WARM


def test_setup_runs_once_per_replica_and_each_call_starts_from_its_state(capfd: pytest.CaptureFixture[str]) -> None:
    """What setup left is in every call (forked from the process it ran in, once); what a call changes is
    not in the next; setup's output is shown; a task with no setup never gets a replica that ran one."""
    first = lookup(3)
    second = lookup(3)
    assert first[:2] == second[:2] == (9, 1)  # the table as setup made it, setup run once
    assert first[2] != second[2] and first[3] == second[3]  # each call its own process, forked from one
    assert "loading the table" in capfd.readouterr().out
    assert sees_no_setup(1) is False


def test_a_failed_setup_fails_each_call_with_its_own_exception() -> None:
    """Each call fails, with the setup's exception and where it was raised, and is not taken for an image
    that lacks a package."""
    for _ in range(2):
        with pytest.raises(TaskFailedError, match=r"ReusePolicy\(setup=.*broken_setup\) failed: builtins."
                                                  r"FileNotFoundError: model.bin is not in the image") as caught:
            needs_model(1)
        assert "a package the task imports may be missing" not in str(caught.value)
