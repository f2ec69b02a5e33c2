"""The host side of the envelope: what is copied into a container and what comes back.

The function and its arguments are pickled with cloudpickle; every module of the user's
project (anything outside the standard library and installed site-packages) is registered
to travel by value, so the image needs none of the user's code. The runtime zip carries
cloudpickle and dockertask themselves as precompiled, source-unchecked bytecode, so the
container neither needs them installed nor spends time compiling them.
"""

from __future__ import annotations

import functools
import io
import json
import os
import py_compile
import site
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import cloudpickle

from . import _bootstrap

RUN_DIR = "/tmp/.dockertask"
RESULT_DIR = RUN_DIR + "/out"
COMMAND = ["python3", RUN_DIR + "/_bootstrap.py"]
HOST_PYTHON = "%d.%d" % sys.version_info[:2]


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


def _is_user_module(module: ModuleType) -> bool:
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
            by_value = _is_user_module(module)
            _BY_VALUE_DECIDED[name] = by_value
            if by_value:
                cloudpickle.register_pickle_by_value(module)


@functools.lru_cache(maxsize=1)
def runtime_zip() -> bytes:
    """cloudpickle + dockertask as .py and unchecked-hash .pyc (built once per process)."""
    buf = io.BytesIO()
    packages = [Path(cloudpickle.__file__).parent, Path(__file__).parent]
    with tempfile.TemporaryDirectory(prefix="dockertask-rt-") as tmp, zipfile.ZipFile(buf, "w") as zf:
        for pkg in packages:
            for src in sorted(pkg.rglob("*.py")):
                rel = src.relative_to(pkg.parent).as_posix()
                if rel.startswith("dockertask/backends/") or rel == "dockertask/_bootstrap.py":
                    continue  # never imported in a container
                pyc = os.path.join(tmp, rel.replace("/", "_") + "c")
                py_compile.compile(str(src), cfile=pyc, dfile=rel, doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
                zf.write(src, rel)
                zf.write(pyc, rel + "c")  # zipimport looks for mod.pyc beside mod.py
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def _bootstrap_source() -> bytes:
    return Path(_bootstrap.__file__).read_bytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info)


@dataclass(frozen=True)
class Envelope:
    """What one attempt sends: the header the bootstrap reads first, and the pickled call."""

    header: dict[str, Any]
    pickled_call: bytes

    def to_tar(self) -> bytes:
        """A tar to extract at ``/tmp``: creates RUN_DIR with everything the bootstrap needs."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            # World-writable (sticky) so an image whose USER is not root can still write out/.
            _add_dir(tar, ".dockertask", 0o1777)
            _add_dir(tar, ".dockertask/out", 0o1777)
            _add(tar, ".dockertask/_bootstrap.py", _bootstrap_source())
            _add(tar, ".dockertask/runtime.zip", runtime_zip())
            _add(tar, ".dockertask/header.json", json.dumps(self.header).encode())
            _add(tar, ".dockertask/envelope.pkl", self.pickled_call)
        return buf.getvalue()


def make_envelope(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], header: dict[str, Any]
) -> Envelope:
    register_user_modules()
    pickled = cloudpickle.dumps((func, args, kwargs), protocol=5)
    return Envelope(header={"python": HOST_PYTHON, **header}, pickled_call=pickled)


@dataclass(frozen=True)
class RawResult:
    """The bootstrap's report, before the runner turns it into a value or an exception."""

    meta: dict[str, Any]
    payload: bytes

    @property
    def status(self) -> str:
        return str(self.meta.get("status", ""))


def parse_result(data: bytes) -> RawResult:
    line, _, payload = data.partition(b"\n")
    return RawResult(meta=json.loads(line.decode("utf-8")), payload=payload)


def result_from_tar(tar_bytes: bytes) -> RawResult | None:
    """The result file out of the archive of RESULT_DIR, or None when the task wrote none."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.rsplit("/", 1)[-1] == "result":
                f = tar.extractfile(member)
                return parse_result(f.read()) if f else None
    return None


def loads(payload: bytes) -> Any:
    return cloudpickle.loads(payload)
