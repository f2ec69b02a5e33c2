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
import itertools
import marshal
import os
import site
import struct
import sys
import sysconfig
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, NamedTuple

import cloudpickle

# Runs in the container: read the bootstrap from stdin (see bootstrap_pieces) and hand it the frame
# reader. Kept tiny and version-neutral: it runs before any Python version check.
LOADER = (
    "import sys\n"
    "r = sys.stdin.buffer\n"
    "def f():\n"
    "    n = int(r.readline())\n"
    "    b = r.read(n)\n"
    "    if len(b) != n:\n"
    "        raise SystemExit(70)\n"
    "    return b\n"
    "m, c, s = f(), f(), f()\n"
    "g = {'__name__': 'dockertask_bootstrap'}\n"
    "if m == getattr(sys.modules.get('_frozen_importlib_external'), 'MAGIC_NUMBER', None):\n"
    "    import marshal\n"
    "    exec(marshal.loads(c), g)\n"
    "else:\n"
    "    exec(compile(s, 'dockertask/_bootstrap.py', 'exec'), g)\n"
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


# sys.prefix is a parent of site-packages in a venv; a project inside the venv dir is rare but possible,
# so only the more specific stdlib/site roots decide.
_INSTALLED_ROOTS = tuple(root for root in _installed_roots() if root.count(os.sep) > 2)
_OWN_ROOT = os.path.dirname(os.path.realpath(__file__)) + os.sep
_BY_VALUE_DECIDED: dict[str, bool] = {}
_REGISTER_LOCK = threading.Lock()


def is_user_module(module: ModuleType) -> bool:
    """True for the user's own code: not the standard library, site-packages, dockertask or cloudpickle."""
    path = getattr(module, "__file__", None)
    name = module.__name__
    if not path or name == "__main__" or name.split(".")[0] in ("dockertask", "cloudpickle"):
        return False
    real = _real_path(path)
    if real.startswith(_OWN_ROOT):
        return False
    return not real.startswith(_INSTALLED_ROOTS)


@functools.cache
def _real_dir(directory: str) -> str:
    return os.path.realpath(directory)


def _real_path(path: str) -> str:
    """os.path.realpath, resolving each directory once: a fresh process deciding its ~400 modules one
    realpath each spent ~20 ms of its first call on it. A file that is itself a symlink is resolved whole."""
    if os.path.islink(path):
        return os.path.realpath(path)
    head, tail = os.path.split(path)
    return os.path.join(_real_dir(head), tail)


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
# of the zip is sent and written in every container, so they stay home (the zip is ~760 KB without them).
_HOST_ONLY = frozenset({
    "dockertask/backends/docker.py", "dockertask/backends/discovery.py", "dockertask/cli.py",
    "dockertask/__main__.py", "dockertask/doctor.py", "dockertask/pytest_plugin.py",
    "dockertask/_testpayload.py", "dockertask/_remote_tb.py", "dockertask/fanout.py",
    "dockertask/abandoned.py", "dockertask/backends/swarm.py", "dockertask/backends/swarm_replica.py",
    "dockertask/backends/callback.py",
    "dockertask/backends/streams.py", "dockertask/backends/engine_config.py", "dockertask/_connector.py",
    "dockertask/config.py",
})


# The reconstructors a pickled call names in cloudpickle (functions, closures, classes, enums), copied
# from the installed cloudpickle's own source into the runtime zip as one small module: unpickling a
# call then costs the container `import pickle` (~6 ms) instead of `import cloudpickle` (~35 ms, its
# dataclasses/logging/typing imports). Names not copied here resolve to cloudpickle itself, loaded then.
RECONSTRUCT_MODULE = "_dockertask_reconstruct"
_RECONSTRUCTORS = (
    "instance", "_empty_cell_value", "_make_empty_cell", "_make_cell", "_make_function", "_function_setstate",
    "_builtin_type", "subimport", "dynamic_subimport", "_lookup_class_or_track", "_make_skeleton_class",
    "_class_setstate", "_make_skeleton_enum", "_make_dict_keys", "_make_dict_values", "_make_dict_items",
)
# Plain dicts and a _thread lock where cloudpickle has weak dicts and threading: a task's process is
# short-lived (so is a replica's call), and weakref plus threading would cost it ~3.5 ms of imports.
_RECONSTRUCT_PRELUDE = '''"""Generated from cloudpickle {version} by dockertask.payload: its reconstructors."""
import _thread
import builtins
import sys
import types
from collections import OrderedDict

_DYNAMIC_CLASS_TRACKER_BY_CLASS = {{}}
_DYNAMIC_CLASS_TRACKER_BY_ID = {{}}
_DYNAMIC_CLASS_TRACKER_LOCK = _thread.allocate_lock()
'''


def _global_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _global_names(const)
    return names


def reconstruct_source() -> str | None:
    """The reconstructor module's source, or None when this cloudpickle's reconstructors need something
    the prelude does not define (a newer cloudpickle): the container then imports cloudpickle, as before."""
    import inspect

    from cloudpickle import cloudpickle as cp

    try:
        parts = [_RECONSTRUCT_PRELUDE.format(version=cloudpickle.__version__)]
        for name in _RECONSTRUCTORS:
            obj = getattr(cp, name)
            parts.append(inspect.getsource(obj if callable(obj) and not name.startswith("_empty") else type(obj)))
        source = "\n\n".join(parts) + f"\n\nNAMES = frozenset({sorted(_RECONSTRUCTORS)!r})\n"
        namespace: dict[str, Any] = {"__name__": RECONSTRUCT_MODULE}
        exec(compile(source, RECONSTRUCT_MODULE, "exec"), namespace)  # noqa: S102 - our own generated source
        upstream = set(vars(cp))
        for name in _RECONSTRUCTORS:
            code = getattr(namespace[name], "__code__", None)
            needed = (_global_names(code) & upstream) if code is not None else set()
            if not needed <= set(namespace):
                return None
    except (OSError, TypeError, AttributeError, SyntaxError, NameError):
        return None
    return source


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
    from .paths import user_cache_dir

    return user_cache_dir() / "runtime"


def _build_runtime_zip(sources: list[tuple[str, Path]]) -> bytes:
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="dockertask-rt-") as tmp, zipfile.ZipFile(buf, "w") as zf:
        reconstruct = reconstruct_source()
        if reconstruct is not None:
            generated = Path(tmp) / f"{RECONSTRUCT_MODULE}.py"
            generated.write_text(reconstruct)
            sources = [*sources, (generated.name, generated)]
        for rel, src in sources:
            pyc = os.path.join(tmp, rel.replace("/", "_") + "c")
            import py_compile

            py_compile.compile(str(src), cfile=pyc, dfile=rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            zf.write(src, rel)
            zf.write(pyc, rel + "c")  # zipimport looks for mod.pyc beside mod.py
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def bootstrap_pieces() -> tuple[bytes, ...]:
    """The first three frames LOADER reads: this interpreter's bytecode magic, the bootstrap compiled by it,
    and its source. An image with the same magic runs the code (compiling it cost every call ~3 ms); any
    other compiles the source, which then tells the host that the Pythons differ."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import MAGIC_NUMBER

    path = str(Path(__file__).parent / "_bootstrap.py")
    loader = SourceFileLoader("dockertask._bootstrap", path)  # its cached .pyc when there is one (~3 ms)
    source = loader.get_data(path)
    code = marshal.dumps(loader.get_code("dockertask._bootstrap"))
    return (*frame_pieces(MAGIC_NUMBER), *frame_pieces(code), *frame_pieces(source))


# Small structured frames (headers, secrets, result metadata) are marshal, not JSON: the container
# would pay ~8 ms to import json (and re) where marshal is built in. Version 2 of the format is read
# by every Python 3, so an image with another Python still gets far enough to say so.
_META_LEN = struct.Struct(">I")


def encode_meta(value: Any) -> bytes:
    """dicts, lists, str, int, bool and None, for the container to read (see decode_meta)."""
    return marshal.dumps(value, 2)


def decode_meta(data: bytes | bytearray | memoryview) -> Any:
    """The other side's encode_meta; a damaged frame is a ValueError."""
    try:
        return marshal.loads(data)
    except (EOFError, TypeError) as exc:
        raise ValueError(f"a damaged control frame: {exc}") from None


EMPTY_LIST = encode_meta([])


def frame_pieces(data: bytes) -> tuple[bytes, bytes]:
    """One stdin frame as (its length in ASCII and a newline, its bytes): what LOADER's f() reads, sent in
    turn so a large frame is never copied."""
    return b"%d\n" % len(data), data


class Envelope(NamedTuple):  # records internal to the package are NamedTuples: cheaper to import
    """What one call sends: the header the bootstrap reads first, and the pickled call."""

    header: dict[str, Any]
    pickled_call: bytes
    inputs: tuple[Any, ...] = ()  # the File/Directory objects the call's persistent ids stand for

    def stdin_pieces(self, header: dict[str, Any], secrets_frame: bytes = EMPTY_LIST) -> Iterable[bytes]:
        """Everything the container reads from stdin, for one attempt (``header`` adds to ours), in pieces:
        a tuple, or with File/Directory inputs an iterator that reads them from disk as it is sent."""
        if self.inputs:
            header = {**header, "inputs": [[obj.kind, obj.name] for obj in self.inputs]}
        head = (
            *bootstrap_pieces(),
            *frame_pieces(encode_meta({**self.header, **header})),
            *frame_pieces(runtime_zip()),
            *frame_pieces(self.pickled_call),
            *frame_pieces(secrets_frame),
        )
        if not self.inputs:
            return head
        return itertools.chain(head, input_frames(self.inputs))

    def stdin_bytes(self, header: dict[str, Any], secrets_frame: bytes = EMPTY_LIST) -> bytes:
        """The same as one bytes object (tests feed it to a local interpreter)."""
        return b"".join(self.stdin_pieces(header, secrets_frame))


def input_frames(inputs: tuple[Any, ...]) -> Iterator[bytes]:
    """The inputs as one tar stream of ``<i>/<name>``, framed, ended by an empty frame: what follows a
    call's frames when it has File/Directory inputs."""
    from . import files

    for piece in files.tar_pieces([(f"{i}/{obj.name}", obj.path) for i, obj in enumerate(inputs)]):
        yield from frame_pieces(piece)
    yield b"0\n"


def make_envelope(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  task_name: str = "", with_files: bool = False) -> Envelope:
    """Pickle the call once; each attempt adds its own header fields in ``stdin_bytes``.

    What cannot be pickled (a lock, a 10,000-deep structure) is a TaskInputError naming the
    argument, raised before any container starts. ``with_files``: the arguments may hold File or
    Directory objects, which are sent as files (see files.py), not pickled."""
    register_user_modules()
    try:
        pickled, inputs = _dumps_call((func, args, kwargs), with_files)
    except Exception as exc:  # PicklingError, TypeError, RecursionError...: whatever pickle says
        raise _unpicklable(func, args, kwargs, task_name or getattr(func, "__qualname__", "?"), exc) from None
    return Envelope(header={"python": HOST_PYTHON}, pickled_call=pickled, inputs=inputs)


def _dumps_call(value: Any, with_files: bool) -> tuple[bytes, tuple[Any, ...]]:
    """The pickled call (or arguments) and its File/Directory inputs; the plain cloudpickle path for a
    task whose arguments cannot hold any (no Python callback per pickled object)."""
    if not with_files:
        return bytes(cloudpickle.dumps(value, protocol=5)), ()
    inputs: list[Any] = []
    return dumps_with_paths(value, inputs), tuple(inputs)


def dumps_with_paths(value: Any, found: list[Any]) -> bytes:
    """cloudpickle.dumps, with each File/Directory in ``value`` appended to ``found`` (once per object)
    and pickled as its index there (a persistent id)."""
    from . import files

    index: dict[int, int] = {}

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, files._PathValue):
                if id(obj) not in index:
                    index[id(obj)] = len(found)
                    found.append(obj)
                return (files.PERSISTENT_TAG, index[id(obj)])
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=5).dump(value)
    return buf.getvalue()


def loads_with_paths(data: bytes | memoryview | BinaryIO, objects: list[Any]) -> Any:
    """The other side's dumps_with_paths: each persistent id becomes ``objects[i]``."""
    import pickle

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return objects[pid[1]]

    stream = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    return Unpickler(stream).load()


def pickle_function(func: Callable[..., Any], task_name: str) -> bytes:
    """The task's function alone (reuse mode loads it once per replica)."""
    register_user_modules()
    try:
        return bytes(cloudpickle.dumps(func, protocol=5))
    except Exception as exc:
        raise _unpicklable(func, (), {}, task_name, exc) from None


def pickle_call_args(args: tuple[Any, ...], kwargs: dict[str, Any], task_name: str,
                     with_files: bool = False) -> tuple[bytes, tuple[Any, ...]]:
    """One call's arguments alone (reuse mode), and the File/Directory inputs among them (sent as files);
    an unpicklable one is a TaskInputError naming it."""
    register_user_modules()
    try:
        return _dumps_call((args, kwargs), with_files)
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


class RawResult(NamedTuple):
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


def result_frame_head(meta: dict[str, Any]) -> bytes:
    """What starts an R frame's body: the metadata's length, then the metadata (the payload follows)."""
    data = encode_meta(meta)
    return _META_LEN.pack(len(data)) + data


def parse_result(data: bytes | bytearray | BinaryIO) -> RawResult:
    """An R frame's body: the metadata and a view of (or, spooled, the file holding) the payload. A damaged
    one is reported as the status ``damaged``, never as a bare exception."""
    try:
        if not isinstance(data, (bytes, bytearray)):  # a spooled result: the metadata, then the payload
            data.seek(0)
            (size,) = _META_LEN.unpack(data.read(_META_LEN.size))
            meta = decode_meta(data.read(size))
            meta["_offset"] = _META_LEN.size + size
            return RawResult(meta=meta, payload=data)
        (size,) = _META_LEN.unpack_from(data)
        end = _META_LEN.size + size
        meta = decode_meta(memoryview(data)[_META_LEN.size:end])
        if not isinstance(meta, dict) or end > len(data):
            raise ValueError("not a result's metadata")
        return RawResult(meta=meta, payload=memoryview(data)[end:])
    except (ValueError, struct.error, KeyError, TypeError) as exc:
        return RawResult(meta={"status": "damaged", "message": str(exc)}, payload=b"")


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
        self._archive: BinaryIO | None = None  # T frames: the returned files' tar stream, on disk
        self.oom_killed = False  # an X frame said the call's process was killed by the cgroup's OOM killer

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
                elif self._kind == b"T":
                    self._archive_piece(frame)
                else:
                    self._deliver(self._kind, frame)

    def _archive_piece(self, piece: bytearray) -> None:
        if self._archive is None:
            from . import files

            # Beside the outputs, not in /tmp (which may be memory): a returned file is bounded by disk.
            self._archive = tempfile.TemporaryFile(dir=files.spool_dir(), prefix=".incoming-")  # noqa: SIM115
        self._archive.write(piece)

    def take_archive(self) -> BinaryIO | None:
        """The returned files' archive so far (a call's, once its R frame came), and a fresh start."""
        archive, self._archive = self._archive, None
        return archive

    def _deliver(self, kind: bytes, frame: bytearray | BinaryIO) -> None:
        if self._on_frame is not None:
            self._on_frame(kind, frame)
        elif kind == b"R":
            self.result = frame
        elif kind == b"X" and isinstance(frame, bytearray):  # the one-shot bootstrap's call died of a signal
            try:
                self.oom_killed = bool(decode_meta(frame).get("oom"))
            except (ValueError, AttributeError):
                pass


def loads(payload: bytes | memoryview) -> Any:
    return cloudpickle.loads(payload)


def load_value(raw: RawResult, paths: list[Any] | None = None) -> Any:
    """A successful result: the returned bytes as they came (``raw``), or the unpickled value; from a
    spooled file, read or unpickled straight from it, so only the value itself is ever in memory.
    ``paths``: the host's File/Directory objects for the result's persistent ids."""
    if paths is not None:
        if not isinstance(raw.payload, (bytes, memoryview)):
            raw.payload.seek(raw._start())
        return loads_with_paths(raw.payload, paths)
    if isinstance(raw.payload, (bytes, memoryview)):
        return bytes(raw.payload) if raw.meta.get("raw") == "bytes" else loads(raw.payload)
    start = raw._start()
    raw.payload.seek(start)
    if raw.meta.get("raw") == "bytes":
        # read(n) fills one bytes object of that size; read() would gather pieces and copy them once more.
        return raw.payload.read(os.fstat(raw.payload.fileno()).st_size - start)
    return cloudpickle.load(raw.payload)
