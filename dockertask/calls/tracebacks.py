"""A task's traceback as a local exception's would read: the real file and line of each frame of the
user's code, with its source line, and none of dockertask's own frames.

In the container a function sent by value has no file: cloudpickle names every such code object
``<dynamic-code>`` (its line numbers stay true). The host still has the code, so each such frame is
found again by its function's name and line among the code of the task's module and the project's
modules that travel by value, and named by its real file, with the line's source read here.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import types
from collections.abc import Iterator
from typing import Any

_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$')
_OURS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)
_HEAD = "Traceback (most recent call last):"


def _is_ours(path: str) -> bool:
    return path.startswith(_OURS) or "/runtime.zip/" in path or path.endswith("_dockertask_reconstruct.py")


def _codes(obj: Any, seen: set[int]) -> Iterator[types.CodeType]:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, types.CodeType):
        yield obj
        for const in obj.co_consts:
            if isinstance(const, types.CodeType):
                yield from _codes(const, seen)
    elif isinstance(obj, (types.FunctionType, types.MethodType)):
        yield from _codes(getattr(obj, "__func__", obj).__code__, seen)
    elif isinstance(obj, (staticmethod, classmethod, property)):
        for part in (getattr(obj, "__func__", None), getattr(obj, "fget", None)):
            if part is not None:
                yield from _codes(part, seen)
    elif isinstance(obj, type):
        for value in list(vars(obj).values()):
            yield from _codes(value, seen)
    else:
        wrapped = getattr(obj, "function", None) or getattr(obj, "__wrapped__", None)  # a Task, a decorator
        if isinstance(wrapped, types.FunctionType):
            yield from _codes(wrapped, seen)


def _where(function: Any) -> dict[str, list[tuple[str, int, int]]]:
    """Code names → (real file, first line, last line), over the task's module and the user's modules."""
    from dockertask.calls import pickling

    modules = [m for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)
               and (m.__name__ == getattr(function, "__module__", None) or pickling.is_user_module(m))]
    found: dict[str, list[tuple[str, int, int]]] = {}
    seen: set[int] = set()
    roots: list[Any] = [function]
    for module in modules:
        roots += [v for v in list(vars(module).values()) if getattr(v, "__module__", None) == module.__name__]
    for root in roots:
        for code in _codes(root, seen):
            lines = [n for _, _, n in code.co_lines() if n is not None]
            if lines and not code.co_filename.startswith("<"):
                found.setdefault(code.co_name, []).append((code.co_filename, min(lines), max(lines)))
    return found


def localize(text: str, function: Any) -> str:
    """The container's traceback ``text``, its frames named as on the host (see the module docstring)."""
    index: dict[str, list[tuple[str, int, int]]] | None = None
    out: list[str] = []
    skipping = False  # the source line under a frame that was dropped or given its host source
    for line in text.splitlines():
        m = _FRAME.match(line)
        if m is None:
            if skipping and line.startswith("    "):
                continue
            skipping = False
            out.append(line)
            continue
        path, number, name = m["file"], int(m["line"]), m["name"]
        skipping = True
        if _is_ours(path):
            continue
        if path.startswith("<"):
            if index is None:
                index = _where(function)
            spans = [s for s in index.get(name, []) if s[1] <= number <= s[2]]
            if len(spans) == 1:
                path = spans[0][0]
        out.append(f'  File "{path}", line {number}, in {name}')
        source = linecache.getline(path, number).strip() if not path.startswith("<") else ""
        if source:
            out.append("    " + source)
        else:
            skipping = False  # keep the container's own source line (a library of the image)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
