"""A container's traceback, re-made as host frames so pytest reports it as its own.

An exception that comes back from a container carries only the text of its traceback (its
``__cause__`` is a ``RemoteTraceback``). For the frames that belong to the user's project, we
compile a ``raise`` placed at the same line of the same host file, inside a code object whose
first line is the enclosing function's, and chain the resulting traceback entries (the technique
Jinja uses for template tracebacks). pytest then shows the test's source with ``>`` at the
failing line, exactly as for a local test; dockertask's own frames are simply not among them.
"""

from __future__ import annotations

import ast
import functools
import linecache
import os
import re
import sys
from pathlib import Path
from types import TracebackType

from dockertask.errors import RemoteTraceback

_FRAME = re.compile(r'^  File "(?P<path>.+)", line (?P<line>\d+), in (?P<name>.+)$')
_ARCHIVE = re.compile(r"/project\.zip/(?P<rel>.+)$")
_OWN = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep  # dockertask's own frames are never shown


def remote_frames(tb_text: str, rootdir: Path, candidates: list[str]) -> list[tuple[str, int, str]]:
    """The (host path, line, function) of each project frame in a container's traceback text.

    cloudpickle names the file of every by-value code object ``<dynamic-code>`` (its payloads are
    deterministic that way); such a frame is found again by its function's name and line in
    ``candidates``, the host files its code could have come from (the test's own file first).
    """
    frames = []
    for line in tb_text.splitlines():
        m = _FRAME.match(line)
        if m is None:
            continue
        path, lineno, name = m["path"], int(m["line"]), m["name"]
        archived = _ARCHIVE.search(path)
        if archived is not None:  # imported from the project archive: the same file on the host
            path = str(rootdir / archived["rel"])
        elif path == "<dynamic-code>":
            path = next((c for c in candidates if _encloses(c, lineno, name)), path)
        real = os.path.realpath(path)
        if real.startswith(str(rootdir) + os.sep) and os.path.isfile(real) and not real.startswith(_OWN):
            frames.append((real, lineno, name))
    return frames


@functools.lru_cache(maxsize=64)
def _functions(path: str) -> tuple[tuple[int, int, str], ...]:
    """(first line incl. decorators, last line, name) of every function in ``path``."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            out.append((first, node.end_lineno or node.lineno, node.name))
    return tuple(out)


def _encloses(path: str, line: int, name: str) -> bool:
    return any(first <= line <= last and fname == name for first, last, fname in _functions(path))


def _first_line(path: str, line: int) -> int:
    """The line a code object for ``line`` would start at: its innermost enclosing function's."""
    enclosing = [first for first, last, _ in _functions(path) if first <= line <= last]
    return max(enclosing) if enclosing else line


def _raise_at(source_line: str) -> str:
    """A ``raise`` covering the same columns as ``source_line``: tracebacks print carets under the
    columns a statement spans, and only when it spans less than its line."""
    indent = source_line[:len(source_line) - len(source_line.lstrip())]
    width = len(source_line.strip())
    stmt = "raise (E" + " " * (width - 9) + ")" if width >= 9 else "raise E"
    return f"if 1:\n{indent}{stmt}\n" if indent else f"\n{stmt}\n"


def _entry(exc: BaseException, path: str, line: int, name: str) -> TracebackType | None:
    first = min(_first_line(path, line), line - 1)
    if first < 1:
        return None
    # Lines first..line-2 blank, line-1 opens a block, line raises: the frame reads `line` of `path`.
    code = compile("\n" * (line - 1 - first) + _raise_at(linecache.getline(path, line)), path, "exec")
    code = code.replace(co_firstlineno=first, co_name=name)
    exc.__traceback__ = None  # else each raise would chain onto the entries made before it
    try:
        exec(code, {"__name__": "dockertask_remote", "__file__": path, "E": exc})
    except BaseException:
        tb = sys.exc_info()[2]
        return tb.tb_next if tb is not None else None
    return None


def relocate(exc: BaseException, rootdir: Path, candidates: list[str]) -> bool:
    """Give ``exc`` host frames for the project part of its container traceback; False if it has none."""
    cause = exc.__cause__
    if not isinstance(cause, RemoteTraceback):
        return False
    frames = remote_frames(cause.tb, rootdir, candidates)
    entries = [e for e in (_entry(exc, *frame) for frame in frames) if e is not None]
    if not entries:
        return False
    for current, nxt in zip(entries, entries[1:], strict=False):
        current.tb_next = nxt
    entries[-1].tb_next = None
    exc.__traceback__ = entries[0]
    exc.__cause__ = None
    exc.__suppress_context__ = True
    exc.__context__ = None
    return True
