"""Fault injection on a real engine: output floods, hostile tasks, results the host cannot load.

Every test here names a fault a user met (issue #7) and pins what they get instead: a typed
dockertask error (or their own exception), bounded time and memory, and nothing left behind.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dockertask import task
from dockertask.calls import progress

from .conftest import remove_container

MiB = 1024 * 1024


class Sink:
    """Stands in for the terminal: counts what arrives, when, and the longest piece."""

    def __init__(self) -> None:
        self.bytes = 0
        self.longest = 0
        self.pieces: list[tuple[float, str, str]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.bytes += len(line)
        self.longest = max(self.longest, len(line))
        if len(self.pieces) < 1000:
            self.pieces.append((time.monotonic(), stream, line[:40]))


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Sink:
    s = Sink()
    monkeypatch.setattr(progress, "print_line", s)
    return s


@task
def flood(mib: int, stream: str) -> int:
    import sys

    out = sys.stdout if stream == "stdout" else sys.stderr
    chunk = "x" * MiB
    for _ in range(mib):
        out.write(chunk)
    out.flush()
    return mib


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_without_newlines_takes_linear_time_and_bounded_pieces(sink: Sink, stream: str) -> None:
    """50 MiB written without a newline arrives whole, in bounded pieces, in seconds (it was 27 s, quadratic)."""
    start = time.monotonic()
    assert flood(50, stream) == 50
    elapsed = time.monotonic() - start
    assert sink.bytes == 50 * MiB
    assert sink.longest <= 64 * 1024
    assert elapsed < 12, f"{elapsed:.1f} s for 50 MiB"


@task
def progress_bar() -> str:
    import sys
    import time as t

    for pct in (10, 50, 90):
        sys.stderr.write(f"{pct}%\r")
        sys.stderr.flush()
        t.sleep(0.8)
    sys.stderr.write("done\n")
    return "ok"


def test_carriage_return_updates_are_shown_live(sink: Sink) -> None:
    """A \\r progress bar's updates reach the host as they are written, not when the task ends."""
    assert progress_bar() == "ok"
    ended = time.monotonic()
    updates = [(at, line) for at, _, line in sink.pieces if line.endswith("\r")]
    assert [line for _, line in updates] == ["10%\r", "50%\r", "90%\r"]
    assert ended - updates[0][0] > 1.5, "the first update arrived only at the end"


FRAME_MODULE = "class Frame:\n    def __init__(self, rows):\n        self.rows = rows\n"


@task
def returns_image_only_object() -> object:
    import os
    import sys

    os.makedirs("/tmp/imgonly", exist_ok=True)
    with open("/tmp/imgonly/dt_image_only_mod.py", "w") as f:
        f.write(FRAME_MODULE)
    sys.path.insert(0, "/tmp/imgonly")
    import dt_image_only_mod  # type: ignore[import-not-found]

    return dt_image_only_mod.Frame([1, 2, 3])


def test_a_result_the_host_cannot_load_is_a_task_output_error_that_keeps_the_bytes(tmp_path: Any,
                                                                                    monkeypatch: Any) -> None:
    """A result whose class exists only in the image: TaskOutputError naming the module, with the raw result kept."""
    import pickle

    from dockertask import TaskOutputError

    with pytest.raises(TaskOutputError, match="dt_image_only_mod") as info:
        returns_image_only_object()
    assert "install" in str(info.value)
    (tmp_path / "dt_image_only_mod.py").write_text(FRAME_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pickle.loads(info.value.raw_result).rows == [1, 2, 3]  # the long task need not run again


@task
def needs_pandas() -> int:
    import pandas  # type: ignore[import-not-found]  # noqa: F401

    return 1


def test_a_module_missing_in_the_image_names_the_image_and_the_fix() -> None:
    """ModuleNotFoundError inside the container comes back as itself, with a note naming the image and ImageSpec."""
    with pytest.raises(ModuleNotFoundError) as info:
        needs_pandas()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "dockertask-runtime" in notes and "ImageSpec(" in notes and "packages=['pandas']" in notes


@pytest.fixture
def relay(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The engine behind a relay the test can cut (engine lost) and restore (engine back)."""
    from dockertask.backends import set_default_backend
    from dockertask.backends.discovery import locate

    from ..relay import Relay

    engine = locate().base_url  # Docker's socket, or Podman's under ./dev.sh test-podman
    if not engine.startswith("unix://"):
        pytest.fail(f"the relay stands in front of a unix socket; the engine here is {engine}")
    r = Relay(tmp_path / "engine.sock", upstream=engine[len("unix://"):])
    monkeypatch.setenv("DOCKER_HOST", r.url)
    set_default_backend(None)  # the next call connects through the relay
    yield r
    r.close()
    set_default_backend(None)


@task
def sleeps_after_start(tag: str) -> str | bytes:
    import time as t

    print("started", flush=True)
    if tag == "50MB":  # the engine goes while the result is on its way back
        return b"r" * (50 * MiB)
    t.sleep(60)
    return tag


class CutWhenStarted(Sink):
    def __init__(self, relay: Any) -> None:
        super().__init__()
        self.relay = relay

    def __call__(self, stream: str, line: str) -> None:
        super().__call__(stream, line)
        if line == "started":
            self.relay.cut()


def _ours(api: Any) -> list[dict[str, Any]]:
    name = f"{sleeps_after_start.__module__}.sleeps_after_start"
    return api.containers(all=True, filters={"label": f"dockertask.task={name}"})


def _lose_engine_mid_task(relay: Any, monkeypatch: pytest.MonkeyPatch, tag: str = "sleep") -> None:
    from dockertask import DockerUnavailableError

    monkeypatch.setattr(progress, "print_line", CutWhenStarted(relay))
    start = time.monotonic()
    with pytest.raises(DockerUnavailableError, match=r"task .*sleeps_after_start: lost the Docker engine") as info:
        sleeps_after_start(tag)
    assert time.monotonic() - start < 20, "the lost engine was noticed only when the task would have ended"
    assert "removed once the engine is back" in str(info.value)
    assert info.value.__suppress_context__  # the requests error underneath is not shown to the user


@pytest.mark.parametrize("tag", ["sleep", "50MB"], ids=["while-running", "during-a-50MB-result"])
def test_engine_lost_mid_task_is_docker_unavailable_and_the_next_call_removes_the_container(
        relay: Any, api: Any, monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    """Engine gone mid-task or mid-result: DockerUnavailableError naming the task (no requests error); once it
    is back, the next call removes the container the failed removal left."""
    _lose_engine_mid_task(relay, monkeypatch, tag)
    assert len(_ours(api)) == 1  # the real engine still has it: our removal could not reach it
    relay.restore()
    monkeypatch.setattr(progress, "print_line", Sink())
    assert flood(0, "stdout") == 0  # any call on that engine, from any process
    assert _ours(api) == []


def test_gc_removes_a_lost_engines_container_while_its_host_process_lives(
        relay: Any, api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the engine is back, `dockertask gc` removes what the lost engine left, though this process lives."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _lose_engine_mid_task(relay, monkeypatch)
    relay.restore()
    gc = subprocess.run([str(Path(sys.executable).parent / "dockertask"), "gc"], capture_output=True, text=True,
                        timeout=60, env=os.environ)
    assert gc.returncode == 0, gc.stderr
    assert "removed 1 container(s)" in gc.stdout
    assert _ours(api) == []


# -- hostile tasks: whatever a task does to its process, the host gets a typed answer ---------

def _closes_every_fd() -> int:
    import os

    os.closerange(0, 4096)
    return 1


def _exits_without_result(code: int) -> int:
    import os

    os._exit(code)


def _forges_frames() -> str:
    import os
    import struct

    fake = b'{"status": "ok"}\n' + b"not a pickle"
    os.write(1, struct.pack(">cQ", b"R", len(fake)) + fake)
    os.write(1, b"\n")
    return "real"


def _closes_stdout_and_stderr() -> str:
    import os

    os.close(1)
    os.close(2)
    return "still here"


def _returns_a_lock() -> object:
    import threading

    return threading.Lock()


def _kills_its_init() -> int:
    import os
    import signal

    os.kill(1, signal.SIGKILL)
    return 1


@pytest.mark.parametrize("function, args, expected", [
    (_closes_every_fd, (), "TaskFailedError: .*without a result \\(the task.s process ended before sending"),
    (_exits_without_result, (0,), "TaskFailedError: .*exited with code 0 without a result"),
    (_exits_without_result, (3,), "TaskFailedError: .*exited with code 3 without a result"),
    (_forges_frames, (), "value: real"),
    (_closes_stdout_and_stderr, (), "value: still here"),
    (_returns_a_lock, (), "TaskFailedError: .*could not be pickled"),
    (_kills_its_init, (), "value: 1"),  # a PID namespace's init ignores SIGKILL from inside it
], ids=["closes-all-fds", "os._exit(0)", "os._exit(3)", "fake-frames-on-fd-1", "closes-stdout-stderr",
        "unpicklable-result", "kills-pid-1"])
def test_hostile_tasks_end_in_a_typed_answer(sink: Sink, function: Any, args: tuple[Any, ...], expected: str) -> None:
    """Closed fds, os._exit, forged frames, closed std streams, an unpicklable result, a killed PID 1:
    the value or a dockertask error, promptly, and no container left (checked after every test)."""
    import re

    from dockertask import DockerTaskError

    start = time.monotonic()
    try:
        got = f"value: {task(function)(*args)}"
    except DockerTaskError as exc:
        got = f"{type(exc).__name__}: {exc}"
    assert re.search(expected, got), got
    assert time.monotonic() - start < 20


@task(limits=__import__("dockertask").Resources(mem="256Mi"))
def returns_150MB() -> bytes:
    return b"z" * (150 * MiB)


def test_a_256MiB_container_returns_a_150MB_result() -> None:
    """A bytes result is sent as it is (no pickled copy, no concatenation): 150 MB fits in 256 MiB."""
    out = returns_150MB()
    assert len(out) == 150 * MiB and out[:3] == b"zzz" and out[-3:] == b"zzz"


@task
def forge_a_huge_frame() -> int:
    """Announce a 2 GiB stdout frame on the container's own stdout (the host's control channel)."""
    import struct
    import time

    with open("/proc/1/fd/1", "wb", buffering=0) as f:  # PID 1 is the init: its stdout is the attach stream
        f.write(struct.pack(">cQ", b"O", 2**31))
    time.sleep(0.5)
    return 1


def test_a_forged_frame_size_fails_the_call_and_allocates_nothing() -> None:
    """Nine bytes announcing a 2 GiB frame, from a task: a TaskFailedError saying the stream was damaged,
    and the host's peak memory does not grow by the announced size (it grew by 2 GiB before; issue 17, B9).
    Measured in a fresh process, whose peak is this call's alone."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import resource\n"
            "from dockertask import TaskFailedError\n"
            "from tests.integration.test_faults import forge_a_huge_frame\n"
            "try:\n    forge_a_huge_frame()\nexcept TaskFailedError as exc:\n    print('failed:', exc)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    failed, peak_kib = out.stdout.strip().splitlines()[-2:]
    assert failed.startswith("failed:") and "damaged" in failed
    assert int(peak_kib) < 512 * 1024


@task
def print_then_crash(i: int) -> int:
    import os

    print(f"last line {i}", flush=True)
    os._exit(3)


def test_a_line_flushed_before_a_crash_reaches_the_host(sink: Sink) -> None:
    """What a task printed and flushed comes back even when its process then dies at once (os._exit): it
    was lost in 20-70% of runs, as stderr never was (issue 17, E22)."""
    from dockertask import TaskFailedError

    for i in range(20):
        with pytest.raises(TaskFailedError):
            print_then_crash(i)
    got = {line for _, stream, line in sink.pieces if stream == "stdout"}
    assert {f"last line {i}" for i in range(20)} <= got


# -- the engine connection blips: what was made ahead is checked, not trusted (issue 17, E20) ----------

def test_a_spare_whose_connection_broke_in_a_blip_is_not_used(relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine connection drops for a moment: the spare made before it (its attach connection gone) is
    discarded and the call runs in a fresh container (it failed: "exited ... without a result")."""
    from dockertask.calls import spares

    monkeypatch.setattr(progress, "print_line", Sink())
    for _ in range(3):  # from the second call of a configuration on, a spare waits for the next
        assert flood(0, "stdout") == 0
    deadline = time.monotonic() + 30
    while not spares.SPARES.idle_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spares.SPARES.idle_count() >= 1
    try:
        relay.cut()
        time.sleep(0.5)
        relay.restore()
        assert flood(0, "stdout") == 0
    finally:
        spares.SPARES.reset()  # while the relay they were made through is up: after, it cannot reach them


@task(reusable=__import__("dockertask").ReusePolicy(replicas=1))
def reused_echo(x: int) -> int:
    return x


@task(reusable=__import__("dockertask").ReusePolicy(replicas=1))
def reused_sleeps_after_start() -> int:
    import time as t

    print("started", flush=True)
    t.sleep(60)
    return 1


def test_a_replica_whose_connection_broke_in_a_blip_is_replaced(relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a blip the warm replica's stream has ended: the next call goes to a new replica and succeeds."""
    from dockertask.calls import replicas

    try:
        assert reused_echo(1) == 1
        relay.cut()
        time.sleep(0.5)
        relay.restore()
        assert reused_echo(2) == 2
    finally:
        replicas.shutdown()


def test_the_engine_lost_mid_reused_call_is_docker_unavailable(relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losing the engine while a reused call runs is a DockerUnavailableError, as for an isolated call (it was
    "exited ... without a result"); once the engine is back the replica is gone with the next cleanup."""
    from dockertask import DockerUnavailableError
    from dockertask.calls import replicas

    try:
        assert reused_echo(1) == 1  # the replica exists
        monkeypatch.setattr(progress, "print_line", CutWhenStarted(relay))
        with pytest.raises(DockerUnavailableError):
            reused_sleeps_after_start()
    finally:
        relay.restore()
        replicas.shutdown()
        monkeypatch.setattr(progress, "print_line", Sink())
        flood(0, "stdout")  # a call on the engine that is back removes what the lost one left


WEDGE_SCRIPT = """
import sys, time
from dockertask import ReusePolicy, map_task, task
from dockertask.calls import spares

@task
def inc(x: int) -> int:
    return x + 1

@task(reusable=ReusePolicy(replicas=2))
def reused_inc(x: int) -> int:
    import time
    time.sleep(0.5)
    return x + 1

for i in range(3):
    inc(i)
while not spares.SPARES.idle_count():
    time.sleep(0.05)
assert map_task(reused_inc, concurrency=2)(x=[1, 2, 3, 4]) == [2, 3, 4, 5]
print("ready", flush=True)
sys.stdin.readline()
"""


def test_exit_with_a_wedged_engine_is_bounded_in_total(relay: Any, api: Any, tmp_path: Any) -> None:
    """A process with two replicas and a spare exits within seconds when the engine has stopped answering
    (it waited 60 s for each, one after the other; issue 17, E21), and says what gc will remove."""
    import os
    import subprocess
    import sys

    script = tmp_path / "wedge.py"
    script.write_text(WEDGE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "DOCKER_HOST": relay.url})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        relay.wedge()
        started = time.monotonic()
        _, err = proc.communicate("\n", timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        theirs = api.containers(all=True, filters={"label": f"dockertask.host-pid={proc.pid}"})
        for c in theirs:
            remove_container(api, c["Id"])
    assert took < 30, f"exit took {took:.0f} s"
    assert "not removed within" in err and "dockertask gc" in err
    assert len(theirs) == 3  # what the wedged engine kept: two replicas and a spare
