"""The container protocol, exercised without Docker: the real loader and bootstrap run in a
local subprocess, fed the same stdin frames a container gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dockertask import payload
from dockertask.payload import FrameDecoder, parse_result


def _run_locally(func: Any, *args: Any, python_override: str | None = None, **kwargs: Any) -> tuple[Any, bytes]:
    env = payload.make_envelope(func, args, kwargs)
    header = {"task": "t", "attempt": 2, "run_id": "r"}
    if python_override:
        header["python"] = python_override
    proc = subprocess.run([sys.executable, "-c", payload.LOADER], input=env.stdin_bytes(header),
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
    assert result.status == "ok" and payload.loads(result.payload) == 2
    assert out == b"hello from the task\n"


def test_bootstrap_refuses_another_python() -> None:
    """A header asking for another major.minor gets a python_version report, nothing is run."""
    result, out = _run_locally(_attempt, python_override="2.7")
    assert result.status == "python_version" and result.meta["host_python"] == "2.7"
    assert out == b""


def _boom(x: int) -> None:
    raise KeyError(x)


def test_bootstrap_reports_user_exception_with_traceback() -> None:
    """A user exception is pickled back with its traceback text."""
    result, _ = _run_locally(_boom, 7)
    assert result.status == "error" and result.meta["type"] == "builtins.KeyError"
    assert "_boom" in result.meta["traceback"]
    assert isinstance(payload.loads(result.payload), KeyError)


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
    z.write_bytes(payload.runtime_zip())
    code = (f"import sys; sys.path.insert(0, {str(z)!r}); import cloudpickle; from dockertask import context; "
            "print(cloudpickle.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert str(z) in out.stdout


def test_every_module_in_the_runtime_zip_imports_without_site_packages(tmp_path: Path) -> None:
    """What the zip carries must import in an image with no docker, click, pytest or tqdm; host-only
    modules stay out (every byte of the zip is sent to every container)."""
    import zipfile

    path = tmp_path / "runtime.zip"
    path.write_bytes(payload.runtime_zip())
    names = sorted(n[:-3].replace("/", ".").removesuffix(".__init__") for n in zipfile.ZipFile(path).namelist()
                   if n.endswith(".py") and n.startswith("dockertask/"))
    assert "dockertask.cli" not in names and "dockertask.backends.docker" not in names
    code = f"import sys; sys.path.insert(0, {str(path)!r})\nfor n in {names!r}:\n    __import__(n)\n"
    out = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _control_frame(kind: bytes, body: bytes) -> bytes:
    import struct

    return struct.pack(">cQ", kind, len(body)) + body


@pytest.mark.parametrize("size", [10, payload.SPOOL_AT + 123], ids=["in-memory", "spooled"])
def test_result_frames_survive_any_chunking_and_large_ones_are_spooled(size: int) -> None:
    """A result frame split anywhere comes back whole; one over SPOOL_AT goes to a file, not memory."""
    body = b"x" * size
    stream = _control_frame(b"O", b"hello") + _control_frame(b"R", b'{"status": "ok", "raw": "bytes"}\n' + body)
    seen: list[bytes] = []
    dec = FrameDecoder(seen.append)
    for i in range(0, len(stream), 7777):
        dec.feed(stream[i:i + 7777])
    assert seen == [b"hello"]
    assert dec.result is not None
    assert isinstance(dec.result, bytearray) == (size < payload.SPOOL_AT)
    raw = parse_result(dec.result)
    assert payload.load_value(raw) == body and raw.data() == body
