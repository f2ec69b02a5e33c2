"""Hostile calls in a warm replica (issue 17, A): a reusable call ends with its call. What one call starts
or breaks cannot reach the next call's secrets, inputs or result; only the call that caused a failure
fails, with the right error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockertask import ReusePolicy, TaskFailedError, TaskInterruptedError, task
from dockertask.calls import replicas

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def no_replicas_after() -> Iterator[None]:
    yield
    replicas.shutdown()


@task(reusable=ReusePolicy(replicas=1))
def leave_a_process() -> int:
    """Start a process in its own session (out of the call's process group) that would outlive the call."""
    import subprocess

    return subprocess.Popen(["sleep", "300"], start_new_session=True).pid


@task(reusable=ReusePolicy(replicas=1))
def processes() -> list[str]:
    """The container's live processes other than this call's own and its ancestors."""
    import os

    mine = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rpartition(")")[2].split()[1])
        mine.add(pid)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in mine:
            try:
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if state != "Z":
                found.append(name)
    return found


def test_a_process_a_call_started_is_gone_when_the_call_ends() -> None:
    """A process started in its own session does not survive its call into the next (A1: it read later
    calls' secrets)."""
    pid = leave_a_process()
    assert str(pid) not in processes()
    assert processes() == []


@task(reusable=ReusePolicy(replicas=1))
def fork_many(n: int) -> int:
    import os
    import time

    for _ in range(n):
        if os.fork() == 0:
            os.setsid()
            time.sleep(300)
            os._exit(0)
    return n


def test_many_processes_left_by_a_call_are_all_swept() -> None:
    """Two hundred sleeping processes left by one call are gone before the next call runs (A1)."""
    assert fork_many(200) == 200
    assert processes() == []


@task(reusable=ReusePolicy(replicas=1))
def open_the_serve_process_memory() -> str:
    import os

    try:
        with open(f"/proc/{os.getppid()}/mem", "r+b"):
            return "opened"
    except OSError as exc:
        return type(exc).__name__


def test_a_call_cannot_open_its_replicas_serve_process_memory() -> None:
    """/proc/<serve pid>/mem is closed to a call (it could write into the process that forks every later
    call; A1)."""
    assert open_the_serve_process_memory() == "PermissionError"


@task(reusable=ReusePolicy(replicas=1), timeout=60)
def exit_without_result(code: int) -> int:
    import os

    os._exit(code)


@task(reusable=ReusePolicy(replicas=1))
def plus_one(x: int) -> int:
    return x + 1


def test_a_call_that_exits_zero_without_a_result_fails_at_once() -> None:
    """os._exit(0) in a reused call is a failure without a result, reported when it happens (it hung, and
    with a timeout was called a timeout; A3); the next call runs."""
    import time

    started = time.monotonic()
    with pytest.raises(TaskFailedError, match="without a result"):
        exit_without_result(0)
    assert time.monotonic() - started < 30
    assert plus_one(1) == 2


@task(reusable=ReusePolicy(replicas=1))
def stop_my_replica() -> int:
    import os
    import signal

    os.kill(os.getppid(), signal.SIGSTOP)
    return 7


def test_a_call_that_stops_its_replica_does_not_hang_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that SIGSTOPs its replica's serve process gets its result; the next call finds the replica
    unresponsive, and runs on a new one instead of hanging (A4)."""
    monkeypatch.setattr(replicas, "ACK_TIMEOUT", 3.0)
    assert stop_my_replica() == 7
    assert plus_one(41) == 42


@task(reusable=ReusePolicy(replicas=1), interruptible=True)
def terminate_myself() -> int:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    return 0


def test_a_call_that_signals_itself_is_a_failure_not_a_preemption() -> None:
    """SIGTERM sent by the task to itself is not "stopped from outside": a TaskFailedError saying so, and an
    interruptible task is not re-run for it (A5)."""
    with pytest.raises(TaskFailedError, match="inside its container") as caught:
        terminate_myself()
    assert not isinstance(caught.value, TaskInterruptedError)


@task(reusable=ReusePolicy(replicas=1))
def forge_a_result() -> int:
    """Write an R frame of 999 (naming no call) on the container's stdout, then return 1."""
    import marshal
    import pickle
    import struct

    meta = marshal.dumps({"status": "ok"}, 2)
    body = struct.pack(">I", len(meta)) + meta + pickle.dumps(999)
    with open("/proc/1/fd/1", "wb", buffering=0) as f:
        f.write(struct.pack(">cQ", b"R", len(body)) + body)
    return 1


def test_a_forged_result_frame_is_not_the_calls_result() -> None:
    """An R frame that does not name the call (a process of the call writing on the channel) is dropped:
    the call's own result comes back, and so does the next call's (A2: every later call returned 999 or
    the previous call's result)."""
    assert forge_a_result() == 1
    assert plus_one(1) == 2


@task(reusable=ReusePolicy(replicas=1))
def terminate_my_replica() -> int:
    import os
    import signal
    import time

    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(0.5)
    return 5


def test_a_call_that_sigterms_its_serve_process_ends_neither_it_nor_later_calls() -> None:
    """SIGTERM from a call to its replica's serve process is not a stop from outside: the call's result comes
    back, and the next call runs in the same replica (it was "stopped from outside" and re-run; A5)."""
    import socket

    assert terminate_my_replica() == 5
    assert plus_one(1) == 2

    @task(reusable=ReusePolicy(replicas=1))
    def where() -> str:
        return socket.gethostname()

    first = where()
    assert terminate_my_replica() == 5
    assert where() == first


@task(reusable=ReusePolicy(replicas=2))
def shout(i: int) -> int:
    import sys

    for j in range(30):
        print(f"item {i} line {j}", file=sys.stderr)
    print(f"item {i} out", flush=True)
    return i


def test_every_output_line_of_a_reused_call_carries_its_own_calls_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load (40 items on two replicas, 31 lines each) no line is shown with another call's prefix
    (~4% were: the sink switched when the next call was sent, not where its output begins; A6)."""
    import re

    from dockertask import map_task
    from dockertask.calls import progress

    lines: list[str] = []
    monkeypatch.setattr(progress, "print_line", lambda stream, line: lines.append(line))
    assert map_task(shout, concurrency=2)(i=list(range(40))) == list(range(40))
    mine = [re.match(r"^\[.*\[(\d+)\]\] item (\d+) ", line) for line in lines if " item " in line]
    assert len(mine) == 40 * 31 and all(m is not None for m in mine)
    wrong = [m.group(0) for m in mine if m is not None and m.group(1) != m.group(2)]
    assert wrong == []


@pytest.fixture
def engine_keeps_events() -> None:
    """Telling a kill inside from `docker kill` takes the engine's event log; Podman's API records no kill or
    stop event for a stop, and there such a kill reads as a stop from outside (what it was before)."""
    from dockertask.backends import default_backend

    if getattr(default_backend(), "is_podman", lambda: False)():
        pytest.skip("this engine (Podman) records no kill event for a stop: a kill from inside reads as a stop "
                    "from outside here")


@task(reusable=ReusePolicy(replicas=1), interruptible=True)
def sigkill_my_replica() -> int:
    import os
    import signal
    import time

    os.kill(os.getppid(), signal.SIGKILL)  # the serve process cannot catch this one: the replica ends
    time.sleep(5)
    return 5


@pytest.mark.usefixtures("engine_keeps_events")
def test_a_call_that_sigkills_its_serve_process_fails_and_is_not_rerun() -> None:
    """SIGKILL from a call to its serve process ends the replica with exit 137, as `docker kill` would; the
    engine recorded no kill, so it is the call's failure (it read as "stopped from outside" and an
    interruptible task was re-run three more times). The next call gets a fresh replica."""
    import time

    started = time.monotonic()
    with pytest.raises(TaskFailedError, match="signal 9 sent inside its container") as caught:
        sigkill_my_replica()
    assert not isinstance(caught.value, TaskInterruptedError)
    assert time.monotonic() - started < 20, "it was re-run as a preemption"
    assert plus_one(1) == 2


@task(interruptible=True)
def sigterm_myself_isolated() -> int:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    return 0


@pytest.mark.usefixtures("engine_keeps_events")
def test_an_isolated_task_that_signals_itself_is_a_failure_not_a_preemption() -> None:
    """The same for a task in its own container: exit 143 without an engine kill is the task's doing."""
    with pytest.raises(TaskFailedError, match="signal 15 sent inside its container") as caught:
        sigterm_myself_isolated()
    assert not isinstance(caught.value, TaskInterruptedError)


@task(reusable=ReusePolicy(replicas=1))
def sleep_in_a_replica() -> int:
    import time

    time.sleep(60)
    return 0


def test_a_replica_killed_through_the_engine_is_still_stopped_from_outside() -> None:
    """The other side of the two tests above: `docker kill` of a replica mid call is a preemption
    (TaskInterruptedError), as before; test_parameters checks the same for `docker stop` of a task."""
    import threading
    import time

    import docker

    client = docker.from_env()

    def kill_it() -> None:
        for _ in range(300):
            found = client.containers.list(filters={"label": "dockertask.task=" + sleep_in_a_replica.name})
            if found:
                time.sleep(1.0)  # mid call
                found[0].kill()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_it)
    killer.start()
    try:
        with pytest.raises(TaskInterruptedError, match="stopped from outside"):
            sleep_in_a_replica()
    finally:
        killer.join()
        client.close()
