"""The host side of the envelope: what is copied into a container and what comes back.

The function and its arguments are pickled with cloudpickle; every module of the user's
project (anything outside the standard library and installed site-packages) is registered
to travel by value, so the image needs none of the user's code. The runtime zip carries
cloudpickle and dockertask themselves as precompiled, source-unchecked bytecode, so the
container neither needs them installed nor spends time compiling them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import py_compile
import site
import struct
import sys
import sysconfig
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import cloudpickle

# Runs in the container: read the bootstrap's source from stdin and hand it the frame reader.
# Kept tiny and version-neutral: it runs before any Python version check.
LOADER = (
    "import sys\n"
    "r = sys.stdin.buffer\n"
    "def f():\n"
    "    n = int(r.readline())\n"
    "    b = r.read(n)\n"
    "    if len(b) != n:\n"
    "        raise SystemExit(70)\n"
    "    return b\n"
    "g = {'__name__': 'dockertask_bootstrap'}\n"
    "exec(compile(f(), 'dockertask/_bootstrap.py', 'exec'), g)\n"
    "sys.exit(g['main'](f))\n"
)
COMMAND = ["python3", "-c", LOADER]
HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
# A result frame this large is received into a temporary file instead of memory (see FrameDecoder).
SPOOL_AT = 8 * 2**20


def _installed_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    paths.add(sys.base_prefix)
    paths.add(sys.prefix)
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths if p))


_INSTALLED_ROOTS = _installed_roots()
_OWN_ROOT = os.path.dirname(os.path.realpath(__file__)) + os.sep
_BY_VALUE_DECIDED: dict[str, bool] = {}
_REGISTER_LOCK = threading.Lock()


def is_user_module(module: ModuleType) -> bool:
    """True for the user's own code: not the standard library, site-packages, dockertask or cloudpickle."""
    path = getattr(module, "__file__", None)
    name = module.__name__
    if not path or name == "__main__" or name.split(".")[0] in ("dockertask", "cloudpickle"):
        return False
    real = os.path.realpath(path)
    if real.startswith(_OWN_ROOT):
        return False
    # sys.prefix is a parent of site-packages in a venv; a project inside the venv dir is rare
    # but possible, so only the more specific stdlib/site roots decide.
    return not any(real.startswith(root) for root in _INSTALLED_ROOTS if root.count(os.sep) > 2)


def register_user_modules() -> None:
    """Mark every imported user module to be pickled by value (decided once per module)."""
    with _REGISTER_LOCK:
        for name, module in list(sys.modules.items()):
            if name in _BY_VALUE_DECIDED or module is None:
                continue
            by_value = is_user_module(module)
            _BY_VALUE_DECIDED[name] = by_value
            if by_value:
                cloudpickle.register_pickle_by_value(module)


# Host-only modules: each needs what an image does not have (the docker SDK, click, pytest, tqdm) or
# serves only the host (CLI, doctor, the pytest plugin's host side, fan-out bookkeeping). Every byte
# of the zip is sent and written in every container, so they stay home (740 KB → about 500 KB).
_HOST_ONLY = frozenset({
    "dockertask/backends/docker.py", "dockertask/backends/discovery.py", "dockertask/cli.py",
    "dockertask/__main__.py", "dockertask/doctor.py", "dockertask/pytest_plugin.py",
    "dockertask/_testpayload.py", "dockertask/_remote_tb.py", "dockertask/fanout.py",
    "dockertask/abandoned.py",
})


def _runtime_sources() -> list[tuple[str, Path]]:
    out = []
    for pkg in (Path(cloudpickle.__file__).parent, Path(__file__).parent):
        for src in sorted(pkg.rglob("*.py")):
            rel = src.relative_to(pkg.parent).as_posix()
            if rel != "dockertask/_bootstrap.py" and rel not in _HOST_ONLY:  # the bootstrap is sent on its own
                out.append((rel, src))
    return out


@functools.lru_cache(maxsize=1)
def runtime_zip() -> bytes:
    """cloudpickle + dockertask as .py and unchecked-hash .pyc: built once per version of the sources and
    kept in the user cache dir, since compiling it cost every fresh process ~80 ms."""
    sources = _runtime_sources()
    key = hashlib.sha256(sys.version.encode())
    for rel, src in sources:
        st = src.stat()
        key.update(f"\0{rel}\0{st.st_mtime_ns}\0{st.st_size}".encode())
    cached = _runtime_cache_dir() / f"runtime-{key.hexdigest()[:24]}.zip"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    data = _build_runtime_zip(sources)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, cached)
        for old in sorted(cached.parent.glob("runtime-*.zip"), key=lambda p: p.stat().st_mtime)[:-4]:
            old.unlink(missing_ok=True)  # older versions of the sources: keep a few, not all
    except OSError:
        pass  # a read-only home: build it each time, as before
    return data


def _runtime_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("dockertask")) / "runtime"


def _build_runtime_zip(sources: list[tuple[str, Path]]) -> bytes:
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="dockertask-rt-") as tmp, zipfile.ZipFile(buf, "w") as zf:
        for rel, src in sources:
            pyc = os.path.join(tmp, rel.replace("/", "_") + "c")
            py_compile.compile(str(src), cfile=pyc, dfile=rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            zf.write(src, rel)
            zf.write(pyc, rel + "c")  # zipimport looks for mod.pyc beside mod.py
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def _bootstrap_source() -> bytes:
    return (Path(__file__).parent / "_bootstrap.py").read_bytes()


def frame_pieces(data: bytes) -> tuple[bytes, bytes]:
    """One stdin frame as (its length in ASCII and a newline, its bytes): what LOADER's f() reads, sent in
    turn so a large frame is never copied."""
    return b"%d\n" % len(data), data


@dataclass(frozen=True)
class Envelope:
    """What one call sends: the header the bootstrap reads first, and the pickled call."""

    header: dict[str, Any]
    pickled_call: bytes

    def stdin_pieces(self, header: dict[str, Any], secrets_json: bytes = b"[]") -> tuple[bytes, ...]:
        """Everything the container reads from stdin, for one attempt (``header`` adds to ours), in pieces."""
        return (
            *frame_pieces(_bootstrap_source()),
            *frame_pieces(json.dumps({**self.header, **header}).encode()),
            *frame_pieces(runtime_zip()),
            *frame_pieces(self.pickled_call),
            *frame_pieces(secrets_json),
        )

    def stdin_bytes(self, header: dict[str, Any], secrets_json: bytes = b"[]") -> bytes:
        """The same as one bytes object (tests feed it to a local interpreter)."""
        return b"".join(self.stdin_pieces(header, secrets_json))


def make_envelope(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  task_name: str = "") -> Envelope:
    """Pickle the call once; each attempt adds its own header fields in ``stdin_bytes``.

    What cannot be pickled (a lock, a 10,000-deep structure) is a TaskInputError naming the
    argument, raised before any container starts."""
    register_user_modules()
    try:
        pickled = cloudpickle.dumps((func, args, kwargs), protocol=5)
    except Exception as exc:  # PicklingError, TypeError, RecursionError...: whatever pickle says
        raise _unpicklable(func, args, kwargs, task_name or getattr(func, "__qualname__", "?"), exc) from None
    return Envelope(header={"python": HOST_PYTHON}, pickled_call=pickled)


def pickle_function(func: Callable[..., Any], task_name: str) -> bytes:
    """The task's function alone (reuse mode loads it once per replica)."""
    register_user_modules()
    try:
        return bytes(cloudpickle.dumps(func, protocol=5))
    except Exception as exc:
        raise _unpicklable(func, (), {}, task_name, exc) from None


def pickle_call_args(args: tuple[Any, ...], kwargs: dict[str, Any], task_name: str) -> bytes:
    """One call's arguments alone (reuse mode); an unpicklable one is a TaskInputError naming it."""
    register_user_modules()
    try:
        return bytes(cloudpickle.dumps((args, kwargs), protocol=5))
    except Exception as exc:
        raise _unpicklable(lambda: None, args, kwargs, task_name, exc) from None


def _unpicklable(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], task_name: str,
                 exc: Exception) -> Exception:
    from .errors import DockerTaskError, TaskInputError

    named = [(f"argument {i}", v) for i, v in enumerate(args)] + [(f"parameter {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as arg_exc:
            return TaskInputError(f"task {task_name}: {where} ({type(value).__qualname__}) cannot be sent to the "
                                  f"container: {type(arg_exc).__name__}: {arg_exc}")
    return DockerTaskError(f"task {task_name}: the function cannot be sent to the container "
                           f"(it, or a global it uses, cannot be pickled): {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RawResult:
    """The bootstrap's report, before the runner turns it into a value or an exception.

    ``payload`` is a view into the received frame (no copy), or for a large result a file holding
    it: a pickle, or with ``raw`` set in the metadata, the returned ``bytes`` themselves."""

    meta: dict[str, Any]
    payload: bytes | memoryview | BinaryIO

    @property
    def status(self) -> str:
        return str(self.meta.get("status", ""))

    def data(self) -> bytes:
        """The payload as bytes (a copy: for small things, errors and raw_result)."""
        if isinstance(self.payload, (bytes, memoryview)):
            return bytes(self.payload)
        self.payload.seek(self._start())
        return self.payload.read()

    def _start(self) -> int:
        return int(self.meta.get("_offset", 0))


def parse_result(data: bytes | bytearray | BinaryIO) -> RawResult:
    if not isinstance(data, (bytes, bytearray)):  # a spooled result: the JSON line, then the payload
        data.seek(0)
        line = data.readline()
        meta = json.loads(line.decode("utf-8"))
        meta["_offset"] = len(line)
        return RawResult(meta=meta, payload=data)
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    return RawResult(meta=json.loads(bytes(data[:end]).decode("utf-8")), payload=memoryview(data)[end + 1:])


class FrameDecoder:
    """Splits the container's control channel (its original stdout) into frames.

    Feed it chunks as they arrive; ``O`` frames (the task's stdout) go to ``on_stdout``, the
    ``R`` frame (the result) is kept. Chunks may split frames anywhere. Each frame is received
    into one buffer of its announced size: a 50 MB result is held once, not re-copied per chunk.
    """

    _HEAD = struct.Struct(">cQ")

    def __init__(self, on_stdout: Callable[[bytes], None],
                 on_frame: Callable[[bytes, bytearray | BinaryIO], None] | None = None) -> None:
        self._on_frame = on_frame  # reuse mode: every frame but O, in order (R, X, W), instead of .result
        self._head = bytearray()
        self._kind = b""
        self._frame: bytearray | None = None
        self._filled = 0
        self._spool: BinaryIO | None = None
        self._spool_left = 0
        self._on_stdout = on_stdout
        self.result: bytearray | BinaryIO | None = None

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        pos = 0
        while pos < len(view) or (self._frame is not None and self._filled == len(self._frame)):
            if self._spool is not None:  # a large result goes to its file, never whole in memory
                take = view[pos:pos + self._spool_left]
                self._spool.write(take)
                self._spool_left -= len(take)
                pos += len(take)
                if self._spool_left == 0:
                    spooled, self._spool = self._spool, None
                    self._deliver(b"R", spooled)
                continue
            if self._frame is None:
                take = view[pos:pos + self._HEAD.size - len(self._head)]
                self._head += take
                pos += len(take)
                if len(self._head) < self._HEAD.size:
                    return
                kind, size = self._HEAD.unpack(self._head)
                self._head.clear()
                if kind == b"R" and size >= SPOOL_AT:
                    # Unlinked at creation: nothing to clean up, whatever happens to this process.
                    spool = tempfile.TemporaryFile(prefix="dockertask-result-")  # noqa: SIM115 - outlives this call
                    self._spool, self._spool_left = spool, size
                    continue
                self._kind, self._frame, self._filled = kind, bytearray(size), 0
            if self._filled < len(self._frame):
                take = view[pos:pos + len(self._frame) - self._filled]
                self._frame[self._filled:self._filled + len(take)] = take
                self._filled += len(take)
                pos += len(take)
            if self._filled == len(self._frame):
                frame, self._frame = self._frame, None
                if self._kind == b"O":
                    self._on_stdout(bytes(frame))
                else:
                    self._deliver(self._kind, frame)

    def _deliver(self, kind: bytes, frame: bytearray | BinaryIO) -> None:
        if self._on_frame is not None:
            self._on_frame(kind, frame)
        elif kind == b"R":
            self.result = frame


def loads(payload: bytes | memoryview) -> Any:
    return cloudpickle.loads(payload)


def load_value(raw: RawResult) -> Any:
    """A successful result: the returned bytes as they came (``raw``), or the unpickled value; from a
    spooled file, read or unpickled straight from it, so only the value itself is ever in memory."""
    if isinstance(raw.payload, (bytes, memoryview)):
        return bytes(raw.payload) if raw.meta.get("raw") == "bytes" else loads(raw.payload)
    start = raw._start()
    raw.payload.seek(start)
    if raw.meta.get("raw") == "bytes":
        # read(n) fills one bytes object of that size; read() would gather pieces and copy them once more.
        return raw.payload.read(os.fstat(raw.payload.fileno()).st_size - start)
    return cloudpickle.load(raw.payload)
