"""The container protocol, exercised without Docker: the real loader and bootstrap run in a
local subprocess, fed the same stdin frames a container gets."""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dockertask.calls import envelope, pickling, runtime_zip
from dockertask.runtime import protocol
from dockertask.runtime.protocol import FrameDecoder, parse_result


def _run_locally(func: Any, *args: Any, python_override: str | None = None, **kwargs: Any) -> tuple[Any, bytes]:
    env = envelope.make_envelope(func, args, kwargs)
    header = {"task": "t", "attempt": 2, "run_id": "r"}
    if python_override:
        header["python"] = python_override
    # -I -S: no site-packages, as in an image with only Debian's python3; the runtime zip brings the rest.
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", protocol.LOADER], input=env.stdin_bytes(header),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out: list[bytes] = []
    dec = FrameDecoder(out.append)
    dec.feed(proc.stdout)
    assert dec.result is not None
    return parse_result(dec.result), b"".join(out)


def _attempt() -> int:
    from dockertask import current_context

    print("hello from the task")
    return current_context().attempt


def test_bootstrap_runs_the_call_and_separates_stdout_from_the_result() -> None:
    """The result comes back as its own frame; the task's print as stdout frames."""
    result, out = _run_locally(_attempt)
    assert result.status == "ok" and pickling.loads(result.payload) == 2
    assert out == b"hello from the task\n"


def test_an_image_with_other_bytecode_compiles_the_bootstrap_from_source() -> None:
    """LOADER runs the host's bytecode only when the magic number matches; otherwise it compiles the
    source, which is what lets another Python get as far as reporting its version."""
    env = envelope.make_envelope(_attempt, (), {})
    magic, *rest = runtime_zip.bootstrap_pieces()[1::2]
    pieces = (*protocol.frame_pieces(b"\0\0\0\0"), *protocol.frame_pieces(rest[0]), *protocol.frame_pieces(rest[1]))
    stdin = b"".join(pieces) + env.stdin_bytes({"task": "t", "attempt": 2, "run_id": "r"})[
        len(b"".join(runtime_zip.bootstrap_pieces())):]
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", protocol.LOADER], input=stdin, capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    dec = FrameDecoder(lambda _: None)
    dec.feed(proc.stdout)
    assert dec.result is not None and pickling.load_value(parse_result(dec.result)) == 2
    assert magic != b"\0\0\0\0"


@pytest.mark.parametrize("body", [b"", b"\0\0\0\x09abc", b"\0\0\0\x02\xff\xff", b"\xff" * 12])
def test_a_damaged_result_frame_is_reported_not_raised(body: bytes) -> None:
    """A truncated or foreign R frame becomes the status 'damaged' (a TaskFailedError to the user)."""
    raw = parse_result(body)
    assert raw.status == "damaged" and raw.data() == b""


def test_bootstrap_refuses_another_python() -> None:
    """A header asking for another major.minor gets a python_version report, nothing is run."""
    result, out = _run_locally(_attempt, python_override="2.7")
    assert result.status == "python_version" and result.meta["host_python"] == "2.7"
    assert out == b""


@pytest.mark.parametrize("with_file", [False, True])
def test_bootstrap_reads_the_whole_call_before_refusing_another_python(tmp_path: Path, with_file: bool) -> None:
    """The refusal is sent only once everything the host writes was read: on Podman a container that
    exits while its stdin is still being written loses its output ("connection reset by peer")."""
    from dockertask import File

    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * 2**20))  # several frames of input tar stream
    args = (File(str(data)),) if with_file else ()
    made = envelope.make_envelope(lambda *a: None, args, {}, with_files=with_file)
    assert bool(made.inputs) == with_file
    stdin = made.stdin_bytes({"task": "t", "attempt": 1, "run_id": "r", "python": "2.7"})
    fed = tmp_path / "stdin"
    fed.write_bytes(stdin)
    with fed.open("rb") as f:  # a file shares its offset with the child: it shows how far the child read
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", protocol.LOADER], stdin=f, capture_output=True,
                              timeout=60)
        consumed = f.tell()
    assert proc.returncode == 0, proc.stderr
    dec = FrameDecoder(lambda _: None)
    dec.feed(proc.stdout)
    assert dec.result is not None and parse_result(dec.result).status == "python_version"
    assert consumed == len(stdin)


def _boom(x: int) -> None:
    raise KeyError(x)


def test_bootstrap_reports_user_exception_with_traceback() -> None:
    """A user exception is pickled back with its traceback text."""
    result, _ = _run_locally(_boom, 7)
    assert result.status == "error" and result.meta["type"] == "builtins.KeyError"
    assert "_boom" in result.meta["traceback"]
    assert isinstance(pickling.loads(result.payload), KeyError)


def _heavy_imports() -> list[str]:
    import sys

    return sorted(m for m in sys.modules if m.split(".")[0] in ("cloudpickle", "dataclasses", "typing", "logging",
                                                                  "dockertask"))


def test_a_plain_call_never_imports_cloudpickle_in_the_container() -> None:
    """The call is unpickled with the generated reconstructors and the result pickled by the stdlib: the
    container skips cloudpickle's ~30 ms of imports (and dockertask's own modules)."""
    result, _ = _run_locally(_heavy_imports)
    assert result.status == "ok" and pickling.loads(result.payload) == []


def test_the_reconstructors_are_generated_from_the_installed_cloudpickle() -> None:
    """A cloudpickle upgrade that needs more than the prelude gives would silently cost every call ~30 ms:
    this fails instead, so the prelude gets looked at."""
    source = runtime_zip.reconstruct_source()
    assert source is not None and "_make_function" in source and "_make_skeleton_class" in source


@dataclasses.dataclass
class Point:
    x: int
    y: int

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


def _round_trip(p: Point, c: Colour, scale: int) -> tuple[Point, Colour, Any, Any]:
    def scaled(v: int) -> int:  # a closure over an argument: cells, made and filled
        return v * scale

    class Local:  # a class made in the container: only cloudpickle can send it back
        value = scaled(p.norm1())

    import threading

    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(_attempt_quiet()))
    thread.start()
    thread.join()
    return Point(scaled(p.x), scaled(p.y)), Colour.BLUE if c is Colour.RED else Colour.RED, Local, seen


def _attempt_quiet() -> int:
    from dockertask import current_context

    return current_context().attempt


def test_host_classes_closures_and_enums_come_back_as_the_hosts_own() -> None:
    """A dataclass and an enum from the host's own module, sent by value, come back as instances of the
    host's classes (class tracking survives the two picklers); a class made in the container comes back
    through cloudpickle; a thread of the task sees the call's context."""
    result, _ = _run_locally(_round_trip, Point(1, -2), Colour.RED, 3)
    assert result.status == "ok", result.meta
    point, colour, local, seen = pickling.loads(result.payload)
    assert type(point) is Point and point == Point(3, -6) and point.norm1() == 9
    assert colour is Colour.BLUE
    assert local.value == 9
    assert seen == [2]


@pytest.mark.parametrize("cut", [1, 3, 9, 10, 17])
def test_frame_decoder_handles_any_split(cut: int) -> None:
    """Frames split at any byte boundary decode the same."""
    import struct

    data = struct.pack(">cQ", b"O", 3) + b"abc" + struct.pack(">cQ", b"R", 4) + b"done"
    seen: list[bytes] = []
    dec = FrameDecoder(seen.append)
    for i in range(0, len(data), cut):
        dec.feed(data[i:i + cut])
    assert seen == [b"abc"] and dec.result == b"done"


def test_runtime_zip_imports_without_dockertask_installed(tmp_path: Any) -> None:
    """The runtime zip alone provides cloudpickle and dockertask (python -I: no site-packages)."""
    z = tmp_path / "rt.zip"
    z.write_bytes(runtime_zip.runtime_zip())
    code = (f"import sys; sys.path.insert(0, {str(z)!r}); import cloudpickle; from dockertask.spec import context; "
            "print(cloudpickle.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert str(z) in out.stdout


def test_every_module_in_the_runtime_zip_imports_without_site_packages(tmp_path: Path) -> None:
    """What the zip carries must import in an image with no docker, click, pytest or tqdm; host-only
    modules stay out (every byte of the zip is sent to every container)."""
    import zipfile

    path = tmp_path / "runtime.zip"
    path.write_bytes(runtime_zip.runtime_zip())
    names = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in zipfile.ZipFile(path).namelist()
                   if n.endswith(".py") and n.startswith("dockertask/"))
    assert "dockertask.cli.commands" not in names and "dockertask.backends.docker" not in names
    code = f"import sys; sys.path.insert(0, {str(path)!r})\nfor n in {names!r}:\n    __import__(n)\n"
    out = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _control_frame(kind: bytes, body: bytes) -> bytes:
    import struct

    return struct.pack(">cQ", kind, len(body)) + body


@pytest.mark.parametrize("size", [10, protocol.SPOOL_AT + 123], ids=["in-memory", "spooled"])
def test_result_frames_survive_any_chunking_and_large_ones_are_spooled(size: int) -> None:
    """A result frame split anywhere comes back whole; one over SPOOL_AT goes to a file, not memory."""
    body = b"x" * size
    head = protocol.result_frame_head({"status": "ok", "raw": "bytes"})
    stream = _control_frame(b"O", b"hello") + _control_frame(b"R", head + body)
    seen: list[bytes] = []
    dec = FrameDecoder(seen.append)
    for i in range(0, len(stream), 7777):
        dec.feed(stream[i:i + 7777])
    assert seen == [b"hello"]
    assert dec.result is not None
    assert isinstance(dec.result, bytearray) == (size < protocol.SPOOL_AT)
    raw = parse_result(dec.result)
    assert pickling.load_value(raw) == body and raw.data() == body


def _killed_by(signum: int) -> None:
    import os

    print("about to die", flush=True)
    os.kill(os.getpid(), signum)


def _sleeps() -> None:
    import time

    print("sleeping", flush=True)
    time.sleep(60)


def _start_locally(func: Any) -> subprocess.Popen[bytes]:
    """The bootstrap as the Podman and Swarm backends start it: the call in a watched child."""
    import os

    env = envelope.make_envelope(func, (), {})
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", protocol.LOADER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "DOCKERTASK_WATCH_CALL": "1"})
    assert proc.stdin is not None
    proc.stdin.write(env.stdin_bytes({"task": "t", "attempt": 1, "run_id": "r"}))
    proc.stdin.close()
    proc.stdin = None  # sent and closed: communicate() must not flush it
    return proc


def test_a_call_killed_by_a_signal_is_reported_by_the_bootstrap_that_outlives_it() -> None:
    """The call runs in a child: when a signal kills it (the OOM killer's SIGKILL), the bootstrap sends an
    X frame naming the signal and exits 128 + N, as the engine would report the container."""
    proc = _start_locally(lambda: _killed_by(9))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 137, err
    import marshal

    frames: list[tuple[bytes, Any]] = []
    FrameDecoder(lambda b: None, lambda kind, frame: frames.append((kind, frame))).feed(out)
    assert [k for k, _ in frames] == [b"X"]
    report = marshal.loads(bytes(frames[0][1]))
    usage = report.pop("usage")
    assert report == {"exit": None, "signal": 9, "oom": False}  # no cgroup here
    assert {"peak", "cpu", "source"} <= set(usage)  # what it had used, for the run record
    dec = FrameDecoder(lambda b: None)
    dec.feed(out)
    assert dec.result is None and dec.oom_killed is False


def test_the_bootstrap_passes_a_stop_signal_on_to_the_call() -> None:
    """`docker stop` signals PID 1's child, the bootstrap: the call gets the SIGTERM and ends at once."""
    import os
    import signal
    import time

    proc = _start_locally(_sleeps)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    seen = b""
    deadline = time.monotonic() + 30
    while b"sleeping" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.read() or b""
        time.sleep(0.05)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert time.monotonic() - began < 5


def test_an_oom_note_from_the_bootstrap_marks_the_outcome_oom() -> None:
    """An X frame saying the cgroup's OOM killer fired is what tells the host on Podman and Swarm."""
    import marshal
    import struct

    note = marshal.dumps({"exit": None, "signal": 9, "oom": True}, 2)
    dec = FrameDecoder(lambda b: None)
    dec.feed(struct.pack(">cQ", b"X", len(note)) + note)
    assert dec.oom_killed is True and dec.result is None


@pytest.mark.parametrize("kind", [b"O", b"X", b"W", b"T", b"?"])
def test_an_announced_frame_size_over_its_kind_bound_is_damage_not_an_allocation(kind: bytes) -> None:
    """Nine bytes announcing a 2 GiB frame allocate nothing: the stream is marked damaged, the rest of it
    ignored, and the call fails as sent a damaged result (issue 17, B9)."""
    import struct
    import tracemalloc

    decoder = FrameDecoder(lambda _: None)
    tracemalloc.start()
    try:
        decoder.feed(struct.pack(">cQ", kind, 2**31) + b"x" * 1000)
        decoder.feed(b"y" * 100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
    assert decoder.result is not None
    raw = parse_result(decoder.result)
    assert raw.status == "damaged" and "frame" in raw.meta["message"]


def test_a_damaged_stream_is_reported_to_a_replica_reader_as_such() -> None:
    """In reuse mode the reader gets a D frame, so the replica is replaced instead of read on."""
    import struct

    seen: list[bytes] = []
    decoder = FrameDecoder(lambda _: None, lambda kind, _frame: seen.append(kind))
    decoder.feed(struct.pack(">cQ", b"O", 2**40))
    decoder.feed(struct.pack(">cQ", b"R", 1) + b"x")  # whatever follows damage is not a frame
    assert seen == [b"D"]


def test_frames_within_their_bounds_still_arrive() -> None:
    """A 64 KiB stdout piece and a 1 MiB files piece are ordinary frames."""
    import struct

    out: list[bytes] = []
    decoder = FrameDecoder(out.append)
    decoder.feed(struct.pack(">cQ", b"O", 65536) + b"o" * 65536)
    assert out == [b"o" * 65536] and decoder.result is None
