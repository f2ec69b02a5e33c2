"""What of a pytest test travels into its container, and how (host side of ``runtime/testbody``).

A test body runs where the code under test must be importable, including through an ``import``
written inside the body, which cloudpickle cannot see coming. So the project's Python sources
(everything under pytest's rootdir but virtualenvs, caches and hidden directories) travel as one
zip, built once per session, and the host's import roots inside the rootdir (``sys.path``
entries, and the roots that imported project modules imply) become paths inside it.

Project modules are then pickled *by reference* (they resolve to the zip's copies, so a class
from a fixture value and the same class imported in the body are one class), except the test's
own module, which travels *by value*: its code is pytest's rewritten code, with the assertion
introspection the container must reproduce. The helpers that code calls (``@pytest_ar``, i.e.
``_pytest.assertion.rewrite``) are sent as a reference to ``dockertask.runtime.assertrepr``, their
stdlib-only copy, so an image needs no pytest and nothing is faked in its ``sys.modules``.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import sys
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import cloudpickle

from dockertask.calls import pickling
from dockertask.errors import DockerTaskError, TaskInputError

# Directories never shipped: tools' caches and environments, not the project's code.
_PRUNE = {"__pycache__", "node_modules", "site-packages", ".git"}
_PRUNE_TOP = {"build", "dist"}
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
_PYTEST_ASSERT_HELPERS = "_pytest.assertion.rewrite"


def _is_env_dir(path: Path) -> bool:
    return (path / "pyvenv.cfg").exists()


def _relative_root(rootdir: Path, entry: str | Path) -> str | None:
    """``entry`` as a path relative to ``rootdir`` (``""`` for rootdir itself), if it ships."""
    try:
        rel = Path(os.path.realpath(entry)).relative_to(rootdir)
    except ValueError:
        return None
    here = rootdir
    for part in rel.parts:
        here = here / part
        if part.startswith(".") or part in _PRUNE or _is_env_dir(here):
            return None
    return rel.as_posix() if rel.parts else ""


def _implied_root(module: types.ModuleType) -> Path | None:
    """The directory ``module`` is importable from, going by its name and its file."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(os.path.realpath(file))
    depth = module.__name__.count(".") + (1 if path.name == "__init__.py" else 0)
    root = path.parent
    for _ in range(depth):
        root = root.parent
    return root


def project_roots(rootdir: Path) -> list[str]:
    """Where the host imports project code from, relative to ``rootdir``, in ``sys.path`` order."""
    roots: list[str] = []

    def add(entry: str | Path) -> None:
        rel = _relative_root(rootdir, entry)
        if rel is not None and rel not in roots:
            roots.append(rel)

    for entry in sys.path:
        add(entry or os.getcwd())
    for module in list(sys.modules.values()):
        implied = _implied_root(module) if isinstance(module, types.ModuleType) else None
        if implied is not None:
            add(implied)
    return roots


def project_archive(rootdir: Path) -> bytes:
    """A zip of every ``.py`` under ``rootdir`` that could be project code (stored: built once, sent per test)."""
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for here, dirs, files in os.walk(rootdir):
            base = Path(here)
            dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in _PRUNE or d.endswith(".egg-info")
                                                     or (base == rootdir and d in _PRUNE_TOP)
                                                     or _is_env_dir(base / d)))
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = base / name
                total += path.stat().st_size
                if total > MAX_ARCHIVE_BYTES:
                    raise DockerTaskError(
                        f"the project under {rootdir} has more than {MAX_ARCHIVE_BYTES >> 20} MB of Python "
                        "sources to send with each container test; run pytest from the project's own "
                        "directory (its rootdir decides what is sent)")
                zf.write(path, path.relative_to(rootdir).as_posix())
    return buf.getvalue()


@functools.lru_cache(maxsize=8192)
def _real(path: str) -> str:
    """realpath, remembered: every test asks again about the same few hundred module files."""
    return os.path.realpath(path)


def _importable_from(module: types.ModuleType, rootdir: Path, roots: list[str]) -> bool:
    """True when ``module`` is the file that ``import <its name>`` finds in one of ``roots``."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    real = _real(file)
    tail = module.__name__.replace(".", "/") + ("/__init__.py" if real.endswith("__init__.py") else ".py")
    return any(_real(str(rootdir / root / tail)) == real for root in roots)


def by_reference(rootdir: Path, roots: list[str], exclude: set[str]) -> set[str]:
    """Project modules the container imports from the archive instead of receiving them by value."""
    prefix = str(rootdir) + os.sep
    out = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) if isinstance(module, types.ModuleType) else None
        if (not file or name in exclude or name.split(".")[0] in ("dockertask", "cloudpickle")
                or not _real(file).startswith(prefix)):
            continue
        if _importable_from(module, rootdir, roots):
            out.add(name)
    return out


def _named(obj: Any) -> bool:
    """True when pickle can find ``obj`` again as ``module.qualname`` (the by-reference test)."""
    target: Any = sys.modules.get(obj.__module__)
    for part in obj.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is obj


class _TestPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, but modules in ``by_ref`` (and their functions and classes) go by name."""

    def __init__(self, file: IO[bytes], by_ref: set[str]) -> None:
        super().__init__(file, protocol=5)
        self._by_ref = by_ref

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType) and obj.__name__ == _PYTEST_ASSERT_HELPERS:
            # What rewritten asserts call as @pytest_ar: our stdlib copy, whatever the image has.
            return importlib.import_module, ("dockertask.runtime.assertrepr",)
        if isinstance(obj, types.ModuleType) and obj.__name__ in self._by_ref:
            return importlib.import_module, (obj.__name__,)
        if (isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) in self._by_ref
                and _named(obj)):
            return NotImplemented  # pickle's own save_global: by reference
        return super().reducer_override(obj)


def _dumps(obj: Any, by_ref: set[str]) -> bytes:
    buf = io.BytesIO()
    _TestPickler(buf, by_ref).dump(obj)
    return buf.getvalue()


def _bare_function(function: Any) -> Any:
    """The test function without its attributes: pytest keeps its marks there (``pytestmark``),
    objects of pytest's own that an image without pytest could not unpickle."""
    if isinstance(function, types.MethodType):
        return types.MethodType(_bare_function(function.__func__), function.__self__)
    if not isinstance(function, types.FunctionType):
        return function
    bare = types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__,
                              function.__closure__)
    bare.__kwdefaults__ = function.__kwdefaults__
    bare.__qualname__ = function.__qualname__
    bare.__module__ = function.__module__
    bare.__doc__ = function.__doc__
    return bare


def pack_test(function: Any, fixtures: Mapping[str, Any], rootdir: Path, roots: list[str], nodeid: str,
              out: IO[bytes]) -> None:
    """The test function and its fixture values, pickled into ``out`` (a file: a 300 MB fixture value is not
    held a second and a third time as bytes, then as the call's pickle); an unpicklable fixture is named."""
    pickling.register_user_modules()  # the test module (and anything not in the archive) by value
    module = getattr(function, "__module__", "") or ""
    function = _bare_function(function)
    by_ref = by_reference(rootdir, roots, exclude={module})
    try:
        _TestPickler(out, by_ref).dump((function, dict(fixtures)))
        return
    except Exception as exc:
        for name, value in fixtures.items():
            try:
                _dumps(value, by_ref)
            except Exception as fixture_exc:
                raise TaskInputError(
                    f"{nodeid}: the value of fixture {name!r} ({type(value).__qualname__}) cannot be sent to the "
                    f"container: {type(fixture_exc).__name__}: {fixture_exc}. Fixtures run on the host and their "
                    "values travel by pickle: return plain data from it, or build the object inside the test body"
                ) from None
        raise TaskInputError(f"{nodeid}: the test function cannot be sent to the container: "
                             f"{type(exc).__name__}: {exc}") from None
