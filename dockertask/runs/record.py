"""What a run records, from the runner's side: the run, each call, its attempts and its output.

    with dockertask.Run("nightly") as run:   # optional; else the process's default run, opened at its first call
        ...
    Run(resume=RUN_ID)                        # succeeded calls of that run return their recorded result

Call ids are deterministic within a run: a digest of the task's identity (name and code), of its inputs
(the cache's canonical hash) and of the call's sequence among equal calls, so that the same program making
the same calls gets the same ids, and a resumed run finds what succeeded before. Every write goes through
``store.WRITER`` (queued, batched); nothing here may fail a call.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import reprlib
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dockertask.runs import store

if TYPE_CHECKING:
    from dockertask.backends.base import Backend, ContainerOutcome, OutputSink
    from dockertask.tasks import Task

MAX_OUTPUT_LINES = 10_000  # per call: past it, one marker line says how many were not kept
MAX_LINE = 4096
MAX_TEXT = 2000  # inputs, results, error messages
MAX_TRACEBACK = 20_000
RESULT_ENV = "DOCKERTASK_RUNS_MAX_RESULT"
CUT = "[dockertask: output cut here: {} more lines not recorded]"

_lock = threading.Lock()
_explicit: RunState | None = None
_default: RunState | None = None
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 80, 80, 8, 8


def max_result() -> int:
    return store.env_int(RESULT_ENV, 64 << 20)


class RunState:
    """One open run of this process."""

    def __init__(self, name: str, resume: str | None = None) -> None:
        self.id = time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()
        self.name = name
        self.resume = resume
        self.failed_calls = 0
        self.interrupted = False  # a call was stopped by Ctrl-C or SIGTERM
        self._seq: dict[str, int] = {}
        self._seq_lock = threading.Lock()
        self._replayable: set[str] | None = None
        started = time.time()
        from dockertask import __version__
        from dockertask.host import owner

        store.WRITER.put(
            "INSERT INTO runs (id, name, command, cwd, host, user, pid, pid_started, version, started, status, "
            "resumed_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            (self.id, name, _command_line(), os.getcwd(), socket.gethostname(), _user(), os.getpid(),
             owner.owner_labels().get("dockertask.host-pid-start"), __version__, started, resume))
        # git's answer costs a few ms of subprocess: found off the call's path
        threading.Thread(target=self._git_commit, name="dockertask-record-git", daemon=True).start()

    def _git_commit(self) -> None:
        try:
            head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return
        if head.returncode == 0:
            store.WRITER.put("UPDATE runs SET git_commit = ? WHERE id = ?", (head.stdout.strip(), self.id))

    def next_id(self, identity: str) -> str:
        with self._seq_lock:
            seq = self._seq.get(identity, 0)
            self._seq[identity] = seq + 1
        return hashlib.sha256(f"{identity}\0{seq}".encode()).hexdigest()[:16]

    def replayable(self, call_id: str) -> bytes | None:
        """The result a call of the run being resumed returned, if it succeeded and its result was kept."""
        if self.resume is None:
            return None
        try:
            with store.reading() as conn:
                if self._replayable is None:
                    self._replayable = {r[0] for r in conn.execute(
                        "SELECT c.call_id FROM calls c JOIN results r ON r.run_id = c.run_id AND "
                        "r.call_id = c.call_id WHERE c.run_id = ? AND c.status = 'succeeded'", (self.resume,))}
                if call_id not in self._replayable:
                    return None
                row = conn.execute("SELECT data FROM results WHERE run_id = ? AND call_id = ?",
                                   (self.resume, call_id)).fetchone()
                return bytes(row[0]) if row else None
        except Exception:  # noqa: BLE001 - a record that cannot be read (RecordUnavailable too): run the call
            return None

    def close(self, status: str) -> None:
        store.WRITER.put("UPDATE runs SET ended = ?, status = ? WHERE id = ?", (time.time(), status, self.id))
        store.WRITER.flush()


def _command_line() -> str:
    import json

    return json.dumps([sys.executable, *sys.argv])


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (a container's odd uid): leave it empty
        return ""


def _rerun_of(name: str) -> str | None:
    """The run `dockertask rerun` resumes (DOCKERTASK_RESUME), when it is the one this named Run recorded:
    a program with two named runs resumes each from its own record, not both from one."""
    resume = os.environ.get("DOCKERTASK_RESUME")
    if not resume:
        return None
    try:
        with store.reading() as conn:
            row = conn.execute("SELECT name FROM runs WHERE id = ?", (resume,)).fetchone()
    except Exception:  # noqa: BLE001 - a record that cannot be read (RecordUnavailable too): run every call
        return None
    return resume if row is not None and row[0] == name else None


DEFAULT_NAME: str | None = None  # `dockertask run` names the process's default run after its target


def _default_name() -> str:
    if DEFAULT_NAME:
        return DEFAULT_NAME
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def current() -> RunState | None:
    """The run a call made now belongs to (the default run is opened here, at the process's first call)."""
    global _default
    if not store.enabled():
        return None
    if _explicit is not None:
        return _explicit
    with _lock:
        if _default is None or _default_pid != os.getpid():
            _open_default()
        return _default


_default_pid = 0


def _open_default() -> None:
    global _default, _default_pid
    import atexit

    _default, _default_pid = RunState(_default_name(), os.environ.get("DOCKERTASK_RESUME") or None), os.getpid()
    state = _default

    def end() -> None:
        # An exception the program did not handle has been printed by now, and left in sys.last_value.
        last = getattr(sys, "last_value", None)
        state.close("interrupted" if isinstance(last, KeyboardInterrupt) or state.interrupted
                    else "failed" if state.failed_calls or last is not None else "succeeded")

    atexit.register(end)


_group: contextvars.ContextVar[str | None] = contextvars.ContextVar("dockertask_group", default=None)


class group:  # noqa: N801 - used as a function: `with dockertask.group("features"):`
    """``with dockertask.group("features"):`` labels the calls made inside it in the record (nested groups as
    ``outer/inner``). A map's items and a submit made inside it carry its label from their threads."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            from dockertask.errors import TaskInputError

            raise TaskInputError(f"group(name={name!r}): expected a non-empty string")
        self.name = name.strip()
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> group:
        outer = _group.get()
        self._token = _group.set(f"{outer}/{self.name}" if outer else self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _group.reset(self._token)


class Run:
    """A named run (``with dockertask.Run("nightly") as run``), or a resumed one (``Run(resume=RUN_ID)``):
    its calls are recorded under it; ``run.id`` names it to ``dockertask show`` and ``rerun``. Runs do not
    nest: an inner ``Run`` only labels its calls with its name, as a group does."""

    def __init__(self, name: str | None = None, resume: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            from dockertask.errors import TaskInputError

            raise TaskInputError(f"Run(name={name!r}): expected a string or None")
        if resume is not None and not isinstance(resume, str):
            from dockertask.errors import TaskInputError

            raise TaskInputError(f"Run(resume={resume!r}): expected a run id (a string, from `dockertask runs`)")
        self.name = name or _default_name()
        self.resume = resume
        self._state: RunState | None = None
        self._outer = False
        self._as_group = group(self.name)  # what an inner Run is

    @property
    def id(self) -> str | None:
        return self._state.id if self._state is not None else None

    def __enter__(self) -> Run:
        global _explicit
        with _lock:
            if _explicit is not None:  # runs do not nest: an inner one is a group
                self._state, self._outer = _explicit, True
                self._as_group.__enter__()
                return self
            if store.enabled():
                self._state = RunState(self.name, self.resume or _rerun_of(self.name))
                _explicit = self._state
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        global _explicit
        if self._outer:
            self._as_group.__exit__()
            return
        if self._state is None:
            return
        with _lock:
            _explicit = None
        status = "succeeded"
        if kind is not None and issubclass(kind, KeyboardInterrupt) or self._state.interrupted:
            status = "interrupted"
        elif kind is not None or self._state.failed_calls:
            status = "failed"
        self._state.close(status)


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


class CallRecord:
    """One call's rows: made by ``begin``, filled in by the runner as its attempts end."""

    def __init__(self, run: RunState, call_id: str, secrets: tuple[str, ...], top: bool = True) -> None:
        self.run, self.call_id, self.secrets, self.top = run, call_id, secrets, top
        self.lines = 0
        self.attempt = 0
        self.cache_hit = False
        self.result_size: int | None = None  # the result's size as it came from the container
        self._attempt_started = 0.0

    def mask(self, secret_values: dict[Any, Any]) -> None:
        """Mask these secrets' values (longest first) in everything recorded from here on."""
        found = {_text(v) for v in secret_values.values()}
        self.secrets = tuple(sorted((v for v in found if len(v) >= 4), key=len, reverse=True))

    @property
    def where(self) -> tuple[str, str]:
        return self.run.id, self.call_id

    def sink(self, inner: OutputSink) -> OutputSink:
        """``inner``, with every line also recorded (masked, capped) for the call's current attempt."""
        def record(stream: str, line: str) -> None:
            inner(stream, line)
            self.lines += 1
            if self.lines <= MAX_OUTPUT_LINES:
                store.WRITER.put("INSERT INTO output VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (*self.where, self.attempt, self.lines, stream,
                                  _mask(line[:MAX_LINE], self.secrets), time.time()))
        return record

    def attempt_started(self, attempt: int) -> None:
        self.attempt, self._attempt_started = attempt, time.time()

    def attempt_ended(self, outcome: ContainerOutcome | None, evidence: dict[str, Any], backend: Backend,
                      error: BaseException | None, preempted: bool) -> None:
        usage = evidence.get("usage") or (outcome.usage if outcome is not None else None) or {}
        image_id, image_digest = _image_ids(backend, outcome.image) if outcome is not None else ("", "")
        node = str(usage.get("node") or "")  # on Swarm, as the node itself named it (bootstrap.usage)
        store.WRITER.put(
            "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*self.where, self.attempt, outcome.container_id if outcome else None, outcome.image if outcome else None,
             image_id or None, image_digest or None, node or None, self._attempt_started, time.time(),
             outcome.exit_code if outcome else None, int(bool(outcome and outcome.oom_killed)),
             int(bool(outcome and outcome.timed_out)), int(preempted), _number(usage.get("peak"), int),
             _number(usage.get("cpu"), float), usage.get("source"),
             _mask(_cut(f"{type(error).__name__}: {error}"), self.secrets) if error is not None else None))

    def succeeded(self, value: Any, replayed: bool = False, cache_hit: bool = False,
                  pickled: bytes | None = None) -> None:
        """``pickled``: the value as resume returns it (calls/kept.py), or None when it is not kept."""
        self._finish("succeeded", result=_mask(_cut(_short.repr(value)), self.secrets), replayed=replayed,
                     cache_hit=cache_hit)
        if pickled is not None:
            store.WRITER.put("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (*self.where, pickled))

    def failed(self, error: BaseException) -> None:
        if isinstance(error, KeyboardInterrupt):
            self.run.interrupted = True
        elif self.top:  # a map item's failure is its map's to count (min_success_ratio may allow it)
            self.run.failed_calls += 1
        # The task's own traceback (the container's, with the host's files and lines); for an error of the
        # host side, its type and message: dockertask's frames would say nothing about the user's code.
        remote = getattr(error.__cause__, "tb", None)
        tb = remote if isinstance(remote, str) else "".join(traceback.format_exception_only(error))
        self._finish("interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
                     error_type=type(error).__qualname__,
                     error=_mask(_cut(str(error)), self.secrets),
                     traceback=_mask(_cut(tb, MAX_TRACEBACK), self.secrets))

    def _finish(self, status: str, result: str | None = None, error_type: str | None = None,
                error: str | None = None, traceback: str | None = None, replayed: bool = False,
                cache_hit: bool = False) -> None:
        if self.lines > MAX_OUTPUT_LINES:
            store.WRITER.put("INSERT INTO output VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (*self.where, self.attempt, MAX_OUTPUT_LINES + 1, "stderr",
                              CUT.format(self.lines - MAX_OUTPUT_LINES), time.time()))
        store.WRITER.put("UPDATE calls SET ended = ?, status = ?, result = ?, error_type = ?, error = ?, "
                         "traceback = ?, replayed = ?, cache_hit = ? WHERE run_id = ? AND call_id = ?",
                         (time.time(), status, result, error_type, error, traceback, int(replayed),
                          int(cache_hit), *self.where))


_images: dict[tuple[int, str], tuple[str, str]] = {}


def _image_ids(backend: Backend, ref: str) -> tuple[str, str]:
    """The id of the image ``ref`` names on the engine, and its repository digest when it has one: asked
    once per process and reference (an image rebuilt under the same tag meanwhile is not noticed)."""
    key = (id(backend), ref)
    found = _images.get(key)
    if found is None:
        try:
            info = backend.image_info(ref)
        except Exception:  # noqa: BLE001 - evidence that cannot be read is left empty
            info = None
        found = (info.id, info.digests[0] if info.digests else "") if info is not None else ("", "")
        _images[key] = found
    return found


def hint(rec: CallRecord) -> str:
    """The last line of a failed call's error: how to look at it, and how to run the program again."""
    return (f"dockertask: see this call with `dockertask show {rec.call_id}`; run the program again, "
            f"without the calls that succeeded, with `dockertask rerun {rec.run.id}`")


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def begin(task: Task[Any, Any], arguments: dict[str, Any], input_digest: Callable[[dict[str, Any]], str],
          parent: str | None = None, index: int | None = None, upstream: Sequence[str] = ()) -> CallRecord | None:
    """The record of a call about to run, or None when recording is off; ``input_digest``: the inputs'
    canonical digest (the cache's, so that equal inputs get equal call ids in every process); ``upstream``:
    the calls whose results its inputs are."""
    run = current()
    if run is None:
        return None
    digest = input_digest(arguments)
    call_id = run.next_id(f"{task.spec.name}\0{task.code_fingerprint}\0{digest}")
    inputs = _cut(", ".join(f"{k}={_short.repr(v)}" for k, v in arguments.items()), 500)
    spec = task.spec
    cpu = spec.limits.cpu_cores if spec.limits is not None else None
    store.WRITER.put("INSERT OR REPLACE INTO calls (run_id, call_id, parent, task, code_version, input_digest, inputs, "
                     "map_index, started, status, mem_limit, cpu_limit, grp, upstream) VALUES (?, ?, ?, ?, ?, ?, ?, "
                     "?, ?, 'running', ?, ?, ?, ?)",
                     (run.id, call_id, parent, spec.name, task.code_fingerprint[:16], digest, inputs, index,
                      time.time(), spec.effective_mem_limit, cpu, _group.get(), _edges(upstream)))
    return CallRecord(run, call_id, (), top=parent is None)


def _edges(upstream: Sequence[str]) -> str | None:
    import json

    return json.dumps(list(upstream)) if upstream else None


def begin_map(task: Task[Any, Any], count: int, upstream: Sequence[str] = ()) -> CallRecord | None:
    """The record of a map: the parent of its items' calls."""
    run = current()
    if run is None:
        return None
    name = f"map_task({task.spec.name})"
    call_id = run.next_id(f"{name}\0{task.code_fingerprint}\0{count}")
    store.WRITER.put("INSERT OR REPLACE INTO calls (run_id, call_id, task, code_version, inputs, started, status, grp, "
                     "upstream) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                     (run.id, call_id, name, task.code_fingerprint[:16], f"{count} items", time.time(), _group.get(),
                      _edges(upstream)))
    return CallRecord(run, call_id, ())


def _text(value: Any) -> str:
    value = getattr(value, "value", value)
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
