"""The framed protocol the host and a container speak: one module, so both ends agree in one place.

The host writes stdin frames (LOADER's ``<length>\n<bytes>``); the container answers on its control
channel (its original stdout) with ``>cQ`` frames: O (stdout; E: a replica call's stderr), T (returned files),
R (the result), X (a call's process died), W (a replica is ready), A (a replica took a call: its id).
A replica's R and X frames name their call. Small structured frames are marshal (``encode_meta``).
Stdlib only: the container imports it from the runtime zip.
"""

from __future__ import annotations

import marshal
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

if TYPE_CHECKING:
    from dockertask.files import Incoming

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
    "    exec(compile(s, 'dockertask/runtime/bootstrap.py', 'exec'), g)\n"
    "sys.exit(g['main'](f))\n"
)


COMMAND = ["python3", "-c", LOADER]


HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


# A result frame this large is received into a temporary file instead of memory (see FrameDecoder).
SPOOL_AT = 8 * 2**20


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



# -- what the host sends -------------------------------------------------------------------------------
# Every call's header (an isolated container's first frame after the bootstrap, a replica's "call"
# message) is made here, so what identifies a call on the wire is decided in one place.

def call_header(task: str, attempt: int, run_id: str, **more: Any) -> dict[str, Any]:
    """The fields every call's header carries: the task, the attempt, and the call's run id."""
    return {"task": task, "attempt": attempt, "run_id": run_id, **more}


def call_id(run_id: str, attempt: int) -> str:
    """What names one attempt of a call on a replica's channel: its A frame, and its R and X frames (the
    replica echoes the id its call message carried as ``call``)."""
    return f"{run_id}/{attempt}"


def serve_header(task: str) -> bytes:
    """A reusable replica's header: serve calls (load/call messages) until stdin closes."""
    return encode_meta({"python": HOST_PYTHON, "mode": "serve", "task": task})


def load_message(fid: str, function: bytes) -> tuple[bytes, ...]:
    """Tell a replica to load a task's pickled function under ``fid`` (once per replica and code)."""
    return (*frame_pieces(b"load"), *frame_pieces(fid.encode()), *frame_pieces(function))


def setup_message(fid: str, function_and_setup: bytes) -> tuple[bytes, ...]:
    """Tell a replica to load a task's function with its ReusePolicy setup, pickled together (so that they
    share their module's globals there), and to run the setup now; it answers with an S frame naming
    ``fid`` once the setup has run (b"ok"), or failed (its traceback follows the fid)."""
    return (*frame_pieces(b"setup"), *frame_pieces(fid.encode()), *frame_pieces(function_and_setup))


def call_message(header: dict[str, Any], call: bytes, secrets_frame: bytes) -> tuple[bytes, ...]:
    """One call for a replica: its header (call_header, with the function's fid), arguments and secrets;
    the inputs' tar stream (input frames) follows when the header lists inputs."""
    return (*frame_pieces(b"call"), *frame_pieces(encode_meta(header)), *frame_pieces(call),
            *frame_pieces(secrets_frame))


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


# The largest frame of each kind the bootstrap sends (its stdout pump reads 64 KiB at a time; a tar piece is
# CHUNK plus its headers), with room to spare. The size is announced by the container, so it is hostile
# input: a larger one, or a kind not listed, marks the stream damaged and is never allocated. A result (R)
# has no bound of its own: past SPOOL_AT it goes to a file as it arrives, so it costs what was really sent.
MAX_FRAME = {b"O": 1 << 20, b"E": 1 << 20, b"T": 4 << 20, b"X": 1 << 16, b"W": 1 << 16, b"A": 1 << 10, b"S": 1 << 17,
             b"R": None}


class FrameDecoder:
    """Splits the container's control channel (its original stdout) into frames.

    Feed it chunks as they arrive; ``O`` frames (the task's stdout) go to ``on_stdout``, the
    ``R`` frame (the result) is kept. Chunks may split frames anywhere. Each frame is received
    into one buffer of its announced size: a 50 MB result is held once, not re-copied per chunk.
    A frame of an unknown kind or over its kind's bound (MAX_FRAME) damages the stream: the rest is
    ignored, and the call's result is a ``damaged`` report (reuse mode: a ``D`` frame).
    """

    _HEAD = struct.Struct(">cQ")

    def __init__(self, on_stdout: Callable[[bytes], None],
                 on_frame: Callable[[bytes, bytearray | BinaryIO], None] | None = None,
                 on_stderr: Callable[[bytes], None] | None = None) -> None:
        self._on_stderr = on_stderr or on_stdout  # E frames: a replica call's stderr, in order with the rest
        self._on_frame = on_frame  # reuse mode: every frame but O, in order (R, X, W), instead of .result
        self._head = bytearray()
        self._kind = b""
        self._frame: bytearray | None = None
        self._filled = 0
        self._spool: BinaryIO | None = None
        self._spool_left = 0
        self._on_stdout = on_stdout
        self.result: bytearray | BinaryIO | None = None
        self._archive: Incoming | None = None  # T frames: the returned files, unpacked as they arrive
        self.oom_killed = False  # an X frame said the call's process was killed by the cgroup's OOM killer
        self.usage: dict[str, Any] | None = None  # and what it had used (peak memory, CPU seconds)
        self.damaged = ""  # why the stream cannot be read on, once it cannot
        self._writing_to = ""  # the directory a large result or returned files are being written to

    def _damage(self, why: str, status: str = "damaged") -> None:
        self.damaged = why
        for partial in (self._spool, self._archive):  # whatever was half received goes now
            if partial is not None:
                try:
                    partial.close()
                except OSError:  # its buffer cannot be flushed to the full disk: gone all the same
                    pass
        self._spool = self._archive = None
        report = bytearray(result_frame_head({"status": status, "message": why}))
        if self._on_frame is not None:
            self._on_frame(b"D", report)
        elif self.result is None:
            self.result = report

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the stream. Never raises for this host's own disk: a result or archive that
        cannot be written (a full or unwritable directory) fails the call as an output error, and the rest of
        the stream is read and dropped, so the container is never left blocked on its stdout."""
        if self.damaged:
            return
        try:
            self._feed(chunk)
        except OSError as exc:
            where = self._writing_to or "a temporary file"
            self._damage(f"what it returned could not be written to {where} on this host: "
                         f"{type(exc).__name__}: {exc}", status="output_error")

    def _feed(self, chunk: bytes) -> None:
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
                if kind not in MAX_FRAME or (bound := MAX_FRAME[kind]) is not None and size > bound:
                    self._damage(f"a {kind!r} frame of {size} bytes on the control channel (the most for that "
                                 f"kind is {MAX_FRAME.get(kind)})" if kind in MAX_FRAME
                                 else f"a frame of unknown kind {kind!r} on the control channel")
                    return
                if kind == b"R" and size >= SPOOL_AT:
                    # Unlinked at creation: nothing to clean up, whatever happens to this process.
                    self._writing_to = tempfile.gettempdir()
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
                elif self._kind == b"E":
                    self._on_stderr(bytes(frame))
                elif self._kind == b"T":
                    self._archive_piece(frame)
                else:
                    self._deliver(self._kind, frame)

    def _archive_piece(self, piece: bytearray) -> None:
        if self._archive is None:
            from dockertask import files

            # Beside the outputs, not in /tmp (which may be memory): a returned file is bounded by disk.
            self._writing_to = files.outputs_root()
            self._archive = files.Incoming()
        self._archive.write(piece)

    def take_archive(self) -> Incoming | None:
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
                report = decode_meta(frame)
                self.oom_killed = bool(report.get("oom"))
                self.usage = report.get("usage") if isinstance(report.get("usage"), dict) else None
            except (ValueError, AttributeError):
                pass
