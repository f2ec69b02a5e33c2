"""The result cache: a directory of files keyed by a canonical hash, safe across processes.

Key = sha256 of (task name, cache_version, interface signature, canonical hash of inputs).
Inputs are hashed from a canonical, type-tagged form (``1``, ``1.0`` and ``True`` differ; dict
order does not matter), never from pickle bytes, which differ between runs and Pythons.
A per-key file lock makes concurrent identical calls (threads or processes) run the task once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import math
import os
import sys
import tempfile
import types
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

import cloudpickle

from dockertask.errors import DockerTaskError, TaskDefinitionError
from dockertask.host import owner


class NotHashable(DockerTaskError, TypeError):
    """An input has no canonical form: the call runs without the cache (with a warning)."""


def canonical(value: Any) -> Any:
    """A JSON-able, type-tagged form of ``value`` that is equal exactly when the values are."""
    if value is None or isinstance(value, str):
        return value
    if type(value).__module__ == "dockertask.files":  # File/Directory: what it holds, not its path or mtime
        from dockertask import files

        return [type(value).__name__, files.content_hash(value)]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", "nan" if math.isnan(value) else repr(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", hashlib.sha256(bytes(value)).hexdigest()]
    if isinstance(value, (Decimal, complex, uuid.UUID, dt.date, dt.time, dt.timedelta, PurePath)):
        return [type(value).__qualname__, str(value)]
    if isinstance(value, enum.Enum):
        return ["enum", _qualname(type(value)), canonical(value.value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ["dataclass", _qualname(type(value)),
                [[f.name, canonical(getattr(value, f.name))] for f in dataclasses.fields(value)]]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return ["namedtuple", _qualname(type(value)), [canonical(v) for v in value]]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [canonical(v) for v in value]]
    if isinstance(value, (set, frozenset)):
        return [type(value).__name__, sorted((canonical(v) for v in value), key=_sort_key)]
    if isinstance(value, Mapping):
        items = [[canonical(k), canonical(v)] for k, v in value.items()]
        return ["dict", sorted(items, key=_sort_key)]
    raise NotHashable(
        f"cannot hash an input of type {type(value).__qualname__} for the cache; "
        "use builtins, dataclasses, NamedTuples, enums or collections of them"
    )


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def hash_inputs(inputs: Mapping[str, Any]) -> str:
    try:
        text = json.dumps(canonical(dict(inputs)), sort_keys=True, separators=(",", ":"))
    except RecursionError:
        raise NotHashable("an input is nested too deeply to hash for the cache") from None
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(task_name: str, cache_version: str, interface_fingerprint: str, inputs: Mapping[str, Any],
              code_fingerprint: str = "") -> str:
    parts = [task_name, cache_version, interface_fingerprint, code_fingerprint, hash_inputs(inputs)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def code_fingerprint(function: Any, source_text: str) -> str:
    """What the code is: the function's source, and the content of every project module it reaches.

    The task's ``version`` cannot serve: in a git checkout it stays ``<sha>-dirty`` whatever the
    edit. Modules are found by walking the function's globals, closures and nested code (and,
    through them, the project functions, classes and modules they use); the standard library and
    installed packages are left out, as they are when the call is pickled.
    """
    from dockertask.calls.pickling import is_user_module

    files: dict[str, str] = {}
    seen: set[int] = set()

    def visit_code(code: types.CodeType, namespace: Mapping[str, Any]) -> None:
        for name in code.co_names:
            if name in namespace:
                visit(namespace[name])
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                visit_code(const, namespace)

    def visit(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(getattr(obj, "__module__", "") or "")
        if module is None or not (is_user_module(module) or module.__name__ == "__main__"):
            return
        path = getattr(module, "__file__", None)
        if path and module.__name__ not in files:
            try:
                files[module.__name__] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                files[module.__name__] = "unreadable"
        if isinstance(obj, types.FunctionType):
            visit_code(obj.__code__, obj.__globals__)
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
        elif isinstance(obj, type):
            for value in vars(obj).values():
                visit(getattr(value, "__func__", value))
        elif isinstance(obj, types.ModuleType):
            for value in list(vars(obj).values()):
                visit(value)

    visit(function)
    digest = hashlib.sha256(source_text.encode())
    for name in sorted(files):
        digest.update(f"\x00{name}\x00{files[name]}".encode())
    # The source is not all the code is: where it cannot be read (a REPL, `python -`, exec) it is the task's
    # name alone, and a task made by a factory (`make_adder(k)`) has one source for every k. So the compiled
    # code and the values it closes over, and its defaults, count too.
    digest.update(b"\x00code\x00")
    code = getattr(function, "__code__", None)
    if isinstance(code, types.CodeType):
        _digest_code(code, digest)
    cells = []
    for cell in getattr(function, "__closure__", None) or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # an empty cell
            cells.append(None)
    for part in (cells, getattr(function, "__defaults__", None), getattr(function, "__kwdefaults__", None)):
        digest.update(b"\x00" + _value_digest(part).encode())
    return digest.hexdigest()


def _digest_code(code: types.CodeType, digest: Any) -> None:
    """The bytecode, names and constants of ``code`` and of the code nested in it (not line numbers or the
    file name: moving a task in its file is no change)."""
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code(const, digest)
        elif isinstance(const, frozenset):  # its repr's order follows the process's string hashing
            digest.update(repr(sorted(const, key=repr)).encode())
        else:
            digest.update(repr(const).encode())


def _value_digest(value: Any) -> str:
    """A value's hash that is the same in every process where it can be (the cache's own canonical form),
    else its pickle's (functions, classes), else its type alone."""
    try:
        return hash_inputs({"v": value})
    except (NotHashable, TypeError, ValueError):
        pass
    try:
        return hashlib.sha256(cloudpickle.dumps(value, protocol=5)).hexdigest()
    except Exception:
        return f"unpicklable:{type(value).__module__}.{type(value).__qualname__}"


def cache_dir() -> Path:
    configured = os.environ.get("DOCKERTASK_CACHE_DIR")
    if configured:
        path = Path(configured)
        if path.exists() and not path.is_dir():
            raise TaskDefinitionError(f"DOCKERTASK_CACHE_DIR={configured!r}: expected a directory (or a path "
                                      "to make one at), but that is a file")
        return path
    from dockertask.host.paths import user_cache_dir

    return user_cache_dir() / "results"


@dataclass(frozen=True)
class Entry:
    key: str
    task: str
    cache_version: str
    created: str
    size: int
    damaged: bool = False  # its index file cannot be read: shown, and removed by clear()
    code: str = ""  # the task's code fingerprint when it was stored ("" for an entry an older dockertask made)
    source: str = ""  # the file that defined the task, and the function's qualified name there
    qualname: str = ""


class Cache:
    """Results on disk: ``<key>.pkl`` (value) and ``<key>.json`` (what it is)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or cache_dir()

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.directory / f"{key}.pkl", self.directory / f"{key}.json", self.directory / f"{key}.lock"

    def _files(self, key: str) -> Path:
        """A cached value's File/Directory contents: ``<key>.files/<i>/<name>``."""
        return self.directory / f"{key}.files"

    def get(self, key: str, task: str = "") -> tuple[bool, Any]:
        """(True, value) on a hit; a missing or damaged entry is a miss (a damaged one with a warning).
        A value holding files gets copies of them in a new output directory of ``task``."""
        pkl, meta, _ = self._paths(key)
        if self._files(key).is_dir():
            return self._get_with_files(key, task)
        try:
            data = pkl.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return False, None
        except OSError as exc:
            warnings.warn(f"cache entry {pkl} cannot be read ({exc}); running the task", RuntimeWarning, stacklevel=3)
            return False, None
        try:
            return True, cloudpickle.loads(data)
        except Exception as exc:  # truncated, empty, garbage, or a class that no longer exists
            warnings.warn(f"cache entry {pkl} is damaged ({type(exc).__name__}: {exc}); treating it as a miss, "
                          "the task's result will replace it", RuntimeWarning, stacklevel=3)
            return False, None

    def _get_with_files(self, key: str, task: str) -> tuple[bool, Any]:
        import shutil

        from dockertask import files
        from dockertask.calls.pickling import loads_with_paths

        pkl, meta, _ = self._paths(key)
        dest = files.output_dir(task or "cached", os.urandom(8).hex())
        try:
            manifest = [(str(k), str(n)) for k, n in json.loads(meta.read_text())["files"]]
            placed = files.deliver(dest, manifest,
                                   lambda staged: shutil.copytree(self._files(key), staged, symlinks=True))
            return True, loads_with_paths(pkl.read_bytes(), placed)
        except Exception as exc:
            shutil.rmtree(dest, ignore_errors=True)  # the copies, when it is the value that cannot be loaded
            warnings.warn(f"cache entry {key} (with files) is damaged ({type(exc).__name__}: {exc}); treating it "
                          "as a miss, the task's result will replace it", RuntimeWarning, stacklevel=4)
            return False, None

    def put(self, key: str, value: Any, task: str, cache_version: str, code: str = "", source: str = "",
            qualname: str = "") -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        pkl, meta, _ = self._paths(key)
        from dockertask import files
        from dockertask.calls.pickling import dumps_with_paths

        found: list[Any] = []
        data = dumps_with_paths(value, found) if any(True for _ in files.walk(value)) \
            else cloudpickle.dumps(value, protocol=5)
        info = {"task": task, "cache_version": cache_version,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "size": len(data),
                "code": code[:16], "source": source, "qualname": qualname}
        if found:  # the files first, whole, under their final name: a reader never sees an entry without them
            info["files"] = [[obj.kind, obj.name] for obj in found]
            self._put_files(key, found)
        # Value first, each by rename: a reader sees a whole entry or none, never half a file.
        for path, payload in ((pkl, data), (meta, json.dumps(info).encode())):
            # The writer's pid in the name: a sweep can tell a dead writer's leftover from a live write.
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".tmp-{os.getpid()}-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                os.replace(tmp, path)
            except BaseException:  # disk full, Ctrl-C: leave no half-written temp file behind
                Path(tmp).unlink(missing_ok=True)
                raise

    def _put_files(self, key: str, found: list[Any]) -> None:
        import shutil

        tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".tmp-{os.getpid()}-"))
        try:
            for i, obj in enumerate(found):
                target = tmp / str(i) / obj.name
                target.parent.mkdir()
                if obj.kind == "d":
                    shutil.copytree(obj.path, target, symlinks=True)
                else:  # never through a link: the cache keeps what the task returned, not what a link names
                    shutil.copy2(obj.path, target, follow_symlinks=False)
            shutil.rmtree(self._files(key), ignore_errors=True)
            os.replace(tmp, self._files(key))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the key's lock: a second identical call waits, then finds the result."""
        import filelock

        self.directory.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self._paths(key)[2])):
            yield

    def sweep_temps(self) -> int:
        """Remove temp files of writes that were killed half-way (their writer is gone); how many."""
        removed = 0
        for tmp in self.directory.glob(".tmp-*"):
            writer = tmp.name.split("-")[1]
            if writer.isdigit():
                gone = not owner.alive(int(writer))
            else:  # written before temp names carried the pid: stale once an hour old
                try:
                    gone = tmp.stat().st_mtime < dt.datetime.now().timestamp() - 3600
                except OSError:
                    continue
            if gone:
                if tmp.is_dir():  # the files of an entry being written
                    import shutil

                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def entries(self) -> list[Entry]:
        self.sweep_temps()
        out = []
        for meta in sorted(self.directory.glob("*.json")):
            try:
                info = json.loads(meta.read_text())
                entry = Entry(key=meta.stem, task=str(info.get("task", "")),
                              cache_version=str(info.get("cache_version", "")), created=str(info.get("created", "")),
                              size=int(info.get("size", 0)), code=str(info.get("code", "")),
                              source=str(info.get("source", "")), qualname=str(info.get("qualname", "")))
            except (OSError, ValueError, TypeError, AttributeError):  # unreadable, not JSON, not an entry's
                # Listed as damaged rather than skipped or fatal: `cache clear` is how it goes away.
                entry = Entry(key=meta.stem, task="", cache_version="", created="", size=0, damaged=True)
            out.append(entry)
        return out

    def clear(self, task: str | None = None) -> int:
        """Remove every entry (or only ``task``'s: its full name, or its short one, ``square`` for
        ``flows.square``); returns how many."""
        removed = 0
        for entry in self.entries():
            if task is not None and not names(entry.task, task) and not entry.damaged:
                continue
            self.remove(entry)
            removed += 1
        return removed

    def remove(self, entry: Entry) -> None:
        import shutil

        for path in self._paths(entry.key):
            path.unlink(missing_ok=True)
        shutil.rmtree(self._files(entry.key), ignore_errors=True)


def names(task: str, given: str) -> bool:
    """Whether ``given`` names ``task``: in full (``flows.square``) or by its short name (``square``)."""
    return task == given or task.endswith("." + given)


def list_entries() -> list[Entry]:
    return Cache().entries()


def clear(task: str | None = None) -> int:
    return Cache().clear(task)
