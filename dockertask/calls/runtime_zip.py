"""The runtime a container gets on stdin: the bootstrap, and cloudpickle + dockertask as a zip.

The zip carries precompiled, source-unchecked bytecode, so the container neither needs them
installed nor spends time compiling them. Host-only modules (SDK, CLI, pytest plugin) stay home.
"""

from __future__ import annotations

import functools
import hashlib
import io
import marshal
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle

from dockertask.runtime.protocol import frame_pieces

# Host-only modules: each needs what an image does not have (the docker SDK, click, pytest, tqdm) or
# serves only the host (CLI, doctor, the pytest plugin's host side, fan-out bookkeeping). Every byte
# of the zip is sent and written in every container, so they stay home (the zip is ~760 KB without them).
_HOST_ONLY = frozenset({
    "dockertask/backends/docker.py", "dockertask/backends/discovery.py", "dockertask/__main__.py",
    "dockertask/fanout.py", "dockertask/host/abandoned.py", "dockertask/backends/swarm.py",
    "dockertask/backends/swarm_replica.py", "dockertask/backends/callback.py",
    "dockertask/backends/streams.py", "dockertask/backends/engine_config.py", "dockertask/runtime/connector.py",
    "dockertask/mypy.py",  # mypy's plugin: it imports mypy
})
_HOST_ONLY_DIRS = ("dockertask/cli/", "dockertask/pytest/")  # the command line and the pytest plugin's host side
BOOTSTRAP = "dockertask/runtime/bootstrap.py"  # sent on its own, ahead of the zip (bootstrap_pieces)


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
_RECONSTRUCT_PRELUDE = '''"""Generated from cloudpickle {version} by dockertask (runtime_zip.py): its reconstructors."""
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
    for pkg in (Path(cloudpickle.__file__).parent, Path(__file__).parent.parent):
        for src in sorted(pkg.rglob("*.py")):
            rel = src.relative_to(pkg.parent).as_posix()
            if rel != BOOTSTRAP and rel not in _HOST_ONLY and not rel.startswith(_HOST_ONLY_DIRS):
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
    from dockertask.host.paths import user_cache_dir

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

    path = str(Path(__file__).parent.parent / "runtime" / "bootstrap.py")
    loader = SourceFileLoader("dockertask.runtime.bootstrap", path)  # its cached .pyc when there is one (~3 ms)
    source = loader.get_data(path)
    code = marshal.dumps(loader.get_code("dockertask.runtime.bootstrap"))
    return (*frame_pieces(MAGIC_NUMBER), *frame_pieces(code), *frame_pieces(source))
