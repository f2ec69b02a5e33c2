"""Pickling a call and its result: the user's own modules by value, File/Directory as persistent ids.

The function and its arguments are pickled with cloudpickle; every module of the user's project
(anything outside the standard library and installed site-packages) is registered to travel by
value, so the image needs none of the user's code. What cannot be pickled is a TaskInputError
naming the argument, before any container starts.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import threading
import types
from collections.abc import Callable
from types import ModuleType
from typing import Any, BinaryIO

import cloudpickle

from dockertask.calls.installed import INSTALLED_ROOTS as _INSTALLED_ROOTS
from dockertask.calls.installed import is_local
from dockertask.runtime.protocol import RawResult

_OWN_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep  # the package


_BY_VALUE_DECIDED: dict[str, bool] = {}


_REGISTER_LOCK = threading.Lock()


def _fresh_lock_in_child() -> None:
    global _REGISTER_LOCK
    _REGISTER_LOCK = threading.Lock()  # a parent thread may have held it at the fork


os.register_at_fork(after_in_child=_fresh_lock_in_child)


def is_user_module(module: ModuleType) -> bool:
    """True for the user's own code: not the standard library, site-packages (but a package installed there
    from a local directory, or named in [tool.dockertask] by_value), dockertask or cloudpickle."""
    path = getattr(module, "__file__", None)
    name = module.__name__
    if not path or name == "__main__" or name.split(".")[0] in ("dockertask", "cloudpickle"):
        return False
    real = _real_path(path)
    if real.startswith(_OWN_ROOT):
        return False
    if not real.startswith(_INSTALLED_ROOTS):
        return True
    return is_local(name)  # the user's own package, installed with `pip install .`


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


def _module_attribute(obj: Any) -> tuple[ModuleType, str] | None:
    """(module, name) when ``obj`` (a bound method) is a module-level name of an installed module."""
    name = getattr(obj, "__name__", None)
    owner = getattr(obj, "__self__", None)
    for module_name in (getattr(obj, "__module__", None), type(owner).__module__ if owner is not None else None):
        module = sys.modules.get(module_name) if isinstance(module_name, str) else None
        if module is None or not isinstance(name, str) or is_user_module(module):
            continue
        try:
            if getattr(module, name, None) is obj:
                return module, name
        except Exception:  # noqa: BLE001 - a module whose attributes misbehave: cloudpickle decides
            continue
    return None


class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's, but a bound method an installed module holds as a module-level name goes by reference
    (``random.randint``, ``numpy.random.randint``): by value it carried its hidden generator with the host's
    state, and every container (and every retry) drew the host's next "random" numbers, all the same."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.MethodType, types.BuiltinMethodType)) and not isinstance(obj.__self__,
                                                                                           ModuleType):
            found = _module_attribute(obj)
            if found is not None:
                return getattr, found
        return super().reducer_override(obj)


def dumps(value: Any) -> bytes:
    buf = io.BytesIO()
    Pickler(buf, protocol=5).dump(value)
    return buf.getvalue()


def dumps_call(value: Any, with_files: bool) -> tuple[bytes, tuple[Any, ...]]:
    """The pickled call (or arguments) and its File/Directory inputs; the plain path for a task whose
    arguments cannot hold any (no Python callback per pickled object)."""
    if not with_files:
        return dumps(value), ()
    inputs: list[Any] = []
    return dumps_with_paths(value, inputs), tuple(inputs)


def dumps_with_paths(value: Any, found: list[Any]) -> bytes:
    """cloudpickle.dumps, with each File/Directory in ``value`` appended to ``found`` (once per object)
    and pickled as its index there (a persistent id)."""
    from dockertask import files

    index: dict[int, int] = {}

    class WithPaths(Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, files._PathValue):
                if id(obj) not in index:
                    index[id(obj)] = len(found)
                    found.append(obj)
                return (files.PERSISTENT_TAG, index[id(obj)])
            return None

    buf = io.BytesIO()
    WithPaths(buf, protocol=5).dump(value)
    return buf.getvalue()


def loads_with_paths(data: bytes | memoryview | BinaryIO, objects: list[Any]) -> Any:
    """The other side's dumps_with_paths: each persistent id becomes ``objects[i]``."""
    import pickle

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return objects[pid[1]]

    stream = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    return Unpickler(stream).load()


def pickle_function(func: Callable[..., Any] | tuple[Callable[..., Any], ...], task_name: str) -> bytes:
    """The task's function alone (reuse mode loads it once per replica), or with its ReusePolicy setup: one
    pickle, so that functions of one module share its globals when loaded."""
    register_user_modules()
    try:
        return dumps(func)
    except Exception as exc:
        raise unpicklable(func if callable(func) else func[0], (), {}, task_name, exc) from None


def pickle_call_args(args: tuple[Any, ...], kwargs: dict[str, Any], task_name: str,
                     with_files: bool = False) -> tuple[bytes, tuple[Any, ...]]:
    """One call's arguments alone (reuse mode), and the File/Directory inputs among them (sent as files);
    an unpicklable one is a TaskInputError naming it."""
    register_user_modules()
    try:
        return dumps_call((args, kwargs), with_files)
    except Exception as exc:
        raise unpicklable(lambda: None, args, kwargs, task_name, exc) from None


def unpicklable(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], task_name: str,
                 exc: Exception) -> Exception:
    from dockertask.errors import DockerTaskError, TaskInputError

    named = [(f"argument {i}", v) for i, v in enumerate(args)] + [(f"parameter {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as arg_exc:
            return TaskInputError(f"task {task_name}: {where} ({type(value).__qualname__}) cannot be sent to the "
                                  f"container: {type(arg_exc).__name__}: {arg_exc}")
    return DockerTaskError(f"task {task_name}: the function cannot be sent to the container "
                           f"(it, or a global it uses, cannot be pickled): {type(exc).__name__}: {exc}")


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
