"""A container's output, as lines for the user and frames for dockertask (no docker SDK here)."""

from __future__ import annotations

import collections
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dockertask.backends.base import OutputSink
from dockertask.runtime.protocol import FrameDecoder

LOG_TAIL_LINES = 50

_BREAK = re.compile(rb"\r\n|\n|\r")
MAX_LINE = 64 * 1024  # a longer line without an end is shown in pieces: memory stays bounded


class _Lines:
    """Bytes in, lines out to the sink, in linear time and bounded memory.

    ``\n`` (or ``\r\n``) ends a line; ``\r`` ends an *update* (a progress bar redrawing its line),
    passed on with its ``\r`` so the terminal redraws it live. Output that never ends a line goes
    out in pieces of at most MAX_LINE bytes, cut on a UTF-8 character boundary.
    """

    def __init__(self, stream: str, sink: OutputSink, tail: collections.deque[str]) -> None:
        self._stream = stream
        self._sink = sink
        self._tail = tail
        self._pending = bytearray()
        self._cr = False  # the last chunk ended in \r: a \n first in the next one makes it \r\n

    def feed(self, chunk: bytes) -> None:
        if self._cr:
            self._cr = False
            if chunk.startswith(b"\n"):
                self._emit("")
                chunk = chunk[1:]
            else:
                self._emit("\r")
        pos = 0
        for m in _BREAK.finditer(chunk):
            self._pending += chunk[pos:m.start()]
            pos = m.end()
            if m.group() == b"\r" and pos == len(chunk):
                self._cr = True
                return
            self._emit("\r" if m.group() == b"\r" else "")
        self._pending += chunk[pos:]
        while len(self._pending) > MAX_LINE:
            cut = MAX_LINE
            while cut > MAX_LINE - 4 and self._pending[cut] & 0xC0 == 0x80:  # inside a UTF-8 character
                cut -= 1
            piece = bytes(self._pending[:cut])
            del self._pending[:cut]
            self._send(piece.decode("utf-8", errors="replace"))

    def close(self) -> None:
        if self._cr:
            self._cr = False
            self._emit("\r")
        if self._pending:
            self._emit("")

    def _emit(self, end: str) -> None:
        line = self._pending.decode("utf-8", errors="replace") + end
        self._pending.clear()
        self._send(line)

    def _send(self, line: str) -> None:
        self._tail.append(line)
        try:
            self._sink(self._stream, line)
        except Exception:  # a broken sink must not stop the pump (or the task)
            pass


class Pump:
    """Reads a container's multiplexed output in a thread: stderr → lines; stdout → the control channel.

    ``frames`` yields (stream id, bytes) as the engine's attach stream does (1 stdout, 2 stderr), from
    the attach socket on one engine or from the callback connection on Swarm."""

    def __init__(self, frames: Iterator[tuple[int, bytes]], sink: OutputSink,
                 on_frame: Callable[[bytes, Any], None] | None = None) -> None:
        self._frames = frames
        self._on_frame = on_frame
        self._sink = sink
        self._next_sink: OutputSink | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._stdout = _Lines("stdout", self._line, self.tail)
        self._stderr = _Lines("stderr", self._line, self.tail)
        self.control = FrameDecoder(self._stdout.feed, self._frame if on_frame is not None else None,
                                    self._stderr.feed)
        self.broken = False
        self._thread = threading.Thread(target=self._run, name="dockertask-output", daemon=True)

    def _line(self, stream: str, line: str) -> None:
        self._sink(stream, line)

    def route_output(self, sink: OutputSink) -> None:
        """A replica's next call: its lines go to ``sink`` from its A frame on. The switch happens here, in
        stream order, so no line of the call before is shown as this one's (switching when the call was sent
        marked ~4% of lines under load with the wrong call)."""
        self._next_sink = sink

    def _frame(self, kind: bytes, frame: Any) -> None:
        if kind == b"A" and self._next_sink is not None:
            self._stdout.close()  # a partial line of the call before is that call's
            self._stderr.close()
            self._sink, self._next_sink = self._next_sink, None
        assert self._on_frame is not None
        self._on_frame(kind, frame)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        """Still reading: the container's stream has not ended."""
        return self._thread.is_alive()

    def _run(self) -> None:
        frames = self._frames
        try:
            for stream_id, chunk in frames:
                if stream_id == 1:
                    self.control.feed(chunk)
                elif stream_id == 2:
                    self._stderr.feed(chunk)
        except (OSError, ValueError):  # the socket is closed when the container is removed
            pass
        except Exception as exc:  # a fault of ours: say so, but keep draining (see below)
            self.tail.append(f"[dockertask: output handling failed: {type(exc).__name__}: {exc}]")
            self.broken = True
            try:
                # An undrained attach stream blocks the container's writes, and then the engine's
                # kill and remove hang behind it: whatever happened, read to the end.
                for _ in frames:
                    pass
            except (OSError, ValueError):
                pass
        try:
            self._stdout.close()
            self._stderr.close()
        except Exception:
            pass
        if self._on_frame is not None:
            self._on_frame(b"EOF", b"")  # reuse mode: the waiting call learns the container is gone


class Frames:
    """Frames from a replica, in order, for the one call waiting on them."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue[tuple[bytes, Any]] = queue.Queue()

    def put_frame(self, kind: bytes, frame: Any) -> None:
        self._queue.put((kind, frame))

    def next(self, timeout: float | None) -> tuple[bytes, Any] | None:
        import queue

        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
