"""The one owner of the terminal while many calls run: progress, and the tasks' own lines.

- On a terminal, a live bar on stderr (tqdm: small, well kept, and what data/ML users already
  see in their notebooks and loops): done / total, failed, running, rate and ETA.
- Off a terminal (CI logs, a pipe), a summary line at most every ``SUMMARY_EVERY`` seconds and a
  final one: ``square: 48/48 done, 0 failed, 0 running, 5.1 calls/s, 9.4 s``.
- ``DOCKERTASK_PROGRESS=0`` turns both off. Nothing is ever written to stdout.

Task output goes through ``emit``, which clears a live bar while it writes, so lines never mangle it.
tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

SUMMARY_EVERY = 5.0  # seconds between summary lines off a terminal

_lock = threading.RLock()
_bars = 0  # live terminal bars: while any is shown, output lines are written around them


def enabled() -> bool:
    return os.environ.get("DOCKERTASK_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def emit(target: TextIO, text: str) -> None:
    """Write one piece of task output (a whole line, or a ``\\r`` update) without mangling a live bar."""
    with _lock:
        if _bars:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=sys.stderr):
                target.write(text)
                target.flush()
            return
        target.write(text)
        target.flush()


class Progress:
    """Counts of one fan-out (a map), shown live or as sparse summary lines on stderr."""

    def __init__(self, name: str, total: int, stream: TextIO | None = None) -> None:
        self.name = name
        self.total = total
        self.done = self.failed = self.running = 0
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar: Any = None
        self._shown = enabled() and total > 0
        if self._shown and _isatty(self._stream):
            global _bars
            from tqdm import tqdm

            with _lock:
                self._bar = tqdm(total=total, desc=name, file=self._stream, unit="call", dynamic_ncols=True,
                                 leave=True, smoothing=0.1)
                _bars += 1

    def started(self) -> None:
        with _lock:
            self.running += 1
            self._refresh()

    def finished(self, ok: bool) -> None:
        with _lock:
            self.running -= 1
            if ok:
                self.done += 1
            else:
                self.failed += 1
            if self._bar is not None:
                self._bar.update(1)
            self._refresh()

    def note(self, text: str) -> None:
        """A line about one item (its failure, as it happens), shown whatever DOCKERTASK_PROGRESS says."""
        emit(self._stream, text + "\n")

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        finished = self.done + self.failed
        rate = finished / elapsed
        text = (f"{self.name}: {self.done}/{self.total} done, {self.failed} failed, {self.running} running, "
                f"{rate:.1f} calls/s, {elapsed:.1f} s")
        if 0 < finished < self.total and rate > 0:
            text += f", ETA {(self.total - finished) / rate:.0f} s"
        return text

    def close(self) -> None:
        global _bars
        with _lock:
            if self._bar is not None:
                self._refresh()
                self._bar.close()
                self._bar = None
                _bars -= 1
            elif self._shown:
                self._stream.write(self.summary() + "\n")
                self._stream.flush()
            self._shown = False

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(failed=self.failed, running=self.running, refresh=True)
        elif self._shown and time.monotonic() - self._last_line >= SUMMARY_EVERY:
            self._last_line = time.monotonic()
            self._stream.write(self.summary() + "\n")
            self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# The command line sends a task's stdout to stderr, so that its own stdout is the result alone.
_task_stdout_to_stderr = False


def task_stdout_to_stderr(enabled: bool = True) -> None:
    """Show what tasks print on stdout on the host's stderr instead (``dockertask run`` does)."""
    global _task_stdout_to_stderr
    _task_stdout_to_stderr = enabled


def print_line(stream: str, line: str) -> None:
    """The default output sink: the task's lines on the host's stdout/stderr.

    A line ending in ``\r`` is a progress update: written as it is, so the terminal redraws it."""
    target = sys.stdout if stream == "stdout" and not _task_stdout_to_stderr else sys.stderr
    emit(target, line if line.endswith("\r") else line + "\n")


def prefixed(label: str) -> Callable[[str, str], None]:
    """A sink that marks each line with ``[label]``: whose line it is, when calls run concurrently."""
    def sink(stream: str, line: str) -> None:
        print_line(stream, f"[{label}] {line}")
    return sink
