"""What a finished attempt means: its value, the user's exception, or the error that says what went wrong.

    timeout → TaskTimeoutError    OOM → TaskOOMError    user exception → itself
    killed from outside → preempted (the runner re-runs it, for interruptible tasks, without using retries)
    no result + other exit → TaskFailedError with the output tail

Each failure is an ``AttemptFailed`` that tells the runner's policy whether another attempt may help.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from dockertask.backends import ContainerOutcome
from dockertask.calls import pickling
from dockertask.calls.tracebacks import localize
from dockertask.errors import (
    NonRecoverableError,
    PythonVersionError,
    RemoteTraceback,
    TaskFailedError,
    TaskInterruptedError,
    TaskOOMError,
    TaskOutputError,
    TaskTimeoutError,
)
from dockertask.runtime import protocol
from dockertask.spec.resources import describe_bytes

if TYPE_CHECKING:
    from dockertask.tasks import Task


class AttemptFailed(Exception):
    """One attempt's failure, with what the policy needs to decide about the next one."""

    def __init__(self, error: BaseException, retryable: bool = True, preempted: bool = False) -> None:
        super().__init__(error)
        self.error, self.retryable, self.preempted = error, retryable, preempted


def interpret(task: Task[Any, Any], outcome: ContainerOutcome, run_id: str = "",
              evidence: dict[str, Any] | None = None) -> Any:
    """The value of a finished attempt, or AttemptFailed saying what went wrong; ``evidence`` receives
    what the container reported of itself for the record (its peak memory and CPU seconds)."""
    try:
        return _interpret(task, outcome, run_id, evidence)
    finally:
        if outcome.result is not None and not isinstance(outcome.result, (bytes, bytearray)):
            outcome.result.close()  # a spooled result's file (already unlinked)
        if outcome.archive is not None:
            outcome.archive.close()  # the returned files' unpacking: ended, and what was not moved into place removed


def _interpret(task: Task[Any, Any], outcome: ContainerOutcome, run_id: str = "",
               evidence: dict[str, Any] | None = None) -> Any:
    spec = task.spec
    if outcome.cancelled:
        raise AttemptFailed(TaskFailedError(f"task {spec.name}: the host was interrupted; its container was "
                                            "killed and removed", exit_code=outcome.exit_code), retryable=False)
    if outcome.timed_out:
        raise AttemptFailed(TaskTimeoutError(
            f"task {spec.name} exceeded its timeout of {spec.timeout_seconds:g}s; "
            "its container was killed and removed"))
    if outcome.oom_killed:
        limit = spec.effective_mem_limit
        named = f"its memory limit of {describe_bytes(limit)}" if limit else "the memory available to it"
        raise AttemptFailed(TaskOOMError(f"task {spec.name} was killed for using more than {named}"))
    raw = protocol.parse_result(outcome.result) if outcome.result is not None else None
    if raw is None:
        tail = f"; its last output:\n{outcome.logs_tail}" if outcome.logs_tail else ""
        # The init could not exec python3: tini/docker-init exit 127 ("command not found"); Podman's
        # catatonit exits 1 saying "failed to exec pid1" (its pid1 is our python3), words that can be lost,
        # so the backend also looks for python3 in the container's filesystem.
        if outcome.no_python or outcome.exit_code == 127 or "failed to exec pid1" in outcome.logs_tail:
            raise AttemptFailed(PythonVersionError(
                f"task {spec.name}: image {outcome.image!r} has no Python: python3 is not on its PATH; "
                "dockertask needs the host's Python major.minor in the image"), retryable=False)
        if outcome.exit_code is not None and outcome.exit_code > 128 and outcome.signalled_inside:
            raise AttemptFailed(TaskFailedError(
                f"task {spec.name}: its process was killed by signal {outcome.exit_code - 128} sent inside its "
                f"container (by the task itself, or a process it started){tail}",
                exit_code=outcome.exit_code, logs_tail=outcome.logs_tail))
        if outcome.exit_code in (137, 143):
            raise AttemptFailed(TaskInterruptedError(
                f"task {spec.name}: its container was stopped from outside (exit {outcome.exit_code}){tail}",
                exit_code=outcome.exit_code, logs_tail=outcome.logs_tail), preempted=True)
        why = (" (the task's process ended before sending its result: os._exit(), sys.exit() from a thread, "
               "or closing file descriptors it did not open end a task this way)"
               if outcome.exit_code is None or outcome.exit_code < 128 else "")  # >= 128: killed by a signal
        raise AttemptFailed(TaskFailedError(
            f"task {spec.name}: the container exited with code {outcome.exit_code} without a result{why}{tail}",
            exit_code=outcome.exit_code, logs_tail=outcome.logs_tail))
    meta = raw.meta
    if evidence is not None:
        if isinstance(meta.get("usage"), dict):
            evidence["usage"] = meta["usage"]
        payload = raw.payload  # its size says, before any pickling, whether the record can keep the result
        evidence["size"] = len(payload) if isinstance(payload, (bytes, memoryview)) else \
            os.fstat(payload.fileno()).st_size
    if raw.status == "ok":
        if meta.get("outputs"):
            return _load_with_files(spec.name, raw, outcome, run_id)
        return _load_result(spec.name, outcome.image, raw)
    if raw.status == "output_error":
        raise AttemptFailed(TaskOutputError(f"task {spec.name}: {meta.get('message')}"), retryable=False)
    if raw.status == "python_version":
        raise AttemptFailed(PythonVersionError(
            f"task {spec.name}: the image has Python {meta.get('image_python')} but the host has Python "
            f"{meta.get('host_python')}; dockertask needs the same major.minor on both (pickles are not "
            "portable across versions)"), retryable=False)
    if raw.status == "damaged":  # our own protocol broke (a truncated or foreign R frame): not the task's error
        raise AttemptFailed(TaskFailedError(
            f"task {spec.name}: its container sent a damaged result ({meta.get('message')}); "
            f"exit code {outcome.exit_code}", exit_code=outcome.exit_code, logs_tail=outcome.logs_tail))
    if raw.status == "load_error":
        if meta.get("setup"):  # the replica's ReusePolicy setup raised: not a load problem of the task's
            raise AttemptFailed(TaskFailedError(
                f"task {spec.name}: ReusePolicy(setup={meta['setup']}) failed: {meta.get('type')}: "
                f"{meta.get('message')}", type_name=str(meta.get("type", "")),
                remote_traceback=str(meta.get("traceback", ""))), retryable=False)
        missing = _missing_module(str(meta.get("message", ""))) if "ModuleNotFoundError" in str(meta.get("type")) \
            else None
        hint = (_image_hint(outcome.image, missing) if missing
                else "a package the task imports may be missing from the image")
        raise AttemptFailed(TaskFailedError(
            f"task {spec.name}: could not load the task in the container: {meta.get('type')}: "
            f"{meta.get('message')} ({hint})",
            type_name=str(meta.get("type", "")), remote_traceback=str(meta.get("traceback", ""))), retryable=False)
    return _user_exception(spec.name, raw, outcome.image, task.function)


def _missing_module(message: str) -> str | None:
    """'pandas' from "No module named 'pandas.core'" (the package to install is the top level)."""
    m = re.search(r"No module named '([^']+)'", message)
    return m.group(1).split(".")[0] if m else None


def _image_hint(image: str, module: str) -> str:
    from dockertask.calls import installed

    if installed.is_local(module):  # the user's own: it went by value, so something else went wrong
        return (f"image {image} has no module {module!r}, your own package: it is sent with each call; "
                f"run `dockertask doctor`, or name it in [tool.dockertask] by_value")
    dists = installed.distributions_of(module)
    if not dists:
        return (f"image {image} has no module {module!r}: run the task on an image that has it, e.g. "
                f"container_image=ImageSpec(name=..., packages=[{module!r}]) if that is its distribution's name "
                "(no distribution on this host provides it, to tell)")
    named = ", ".join(repr(d) for d in dists)
    return (f"image {image} has no module {module!r} (distribution {named} on this host): run the task on an "
            f"image that has it, e.g. container_image=ImageSpec(name=..., packages=[{named}]); if it is your own "
            "package, name it in [tool.dockertask] by_value to send it with each call")


def _load_with_files(name: str, raw: protocol.RawResult, outcome: ContainerOutcome, run_id: str) -> Any:
    """A result holding File/Directory objects: their archive unpacked (safely) into the call's output
    directory, and the value made with host paths. A refused archive leaves nothing behind."""
    from dockertask import files

    archive = outcome.archive
    outputs = [(str(kind), str(item)) for kind, item in raw.meta["outputs"]]

    def unpack(staged: str) -> None:
        if archive is None:
            raise files.UnsafeArchive("the files it returned did not arrive")
        archive.unpack_into(staged)

    try:
        placed = files.deliver(files.output_dir(name, run_id or os.urandom(8).hex()), outputs, unpack)
    except OSError as exc:  # this host's disk (full, unwritable), not the archive
        raise AttemptFailed(TaskOutputError(
            f"task {name}: the files it returned could not be written to {files.outputs_root()} on this host: "
            f"{type(exc).__name__}: {exc}"), retryable=False) from None
    except (files.UnsafeArchive, EOFError, ValueError) as exc:
        raise AttemptFailed(TaskOutputError(
            f"task {name}: the files it returned were refused: {exc}; nothing was written outside "
            f"{files.output_dir(name, '')}"), retryable=False) from None
    return _load_result(name, outcome.image, raw, placed)


def _load_result(name: str, image: str, raw: protocol.RawResult, paths: list[Any] | None = None) -> Any:
    """The returned value (its persistent ids standing for ``paths``, the returned files); one this host
    cannot load is a TaskOutputError that keeps the bytes."""
    try:
        return pickling.load_value(raw, paths)
    except Exception as exc:
        missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        what = (f"its class comes from module {missing!r}, which is in image {image} but not installed here: "
                f"install it on the host (pip install ...)" if missing else f"{type(exc).__name__}: {exc}")
        raise AttemptFailed(TaskOutputError(
            f"task {name} succeeded, but its result cannot be loaded on this host: {what}. The pickled result is "
            "kept in this error's raw_result: pickle.loads(err.raw_result) once that is fixed, without running "
            "the task again", raw_result=raw.data()), retryable=False) from None


def _user_exception(name: str, raw: protocol.RawResult, image: str = "", function: Any = None) -> Any:
    meta = raw.meta
    tb = localize(str(meta.get("traceback", "")), function)
    exc: BaseException | None = None
    data = raw.data()
    if data:
        try:
            exc = pickling.loads(data)
        except Exception:
            exc = None
    if isinstance(exc, BaseException) and not isinstance(exc, Exception):
        # SystemExit / KeyboardInterrupt re-raised here would end (or seem to interrupt) the caller's
        # own program: the task ended, so say that.
        code = getattr(exc, "code", None)
        how = f"called sys.exit({code!r})" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}"
        exc = TaskFailedError(f"task {name} {how} ({type(exc).__name__}) in its container",
                              type_name=type(exc).__name__, remote_traceback=tb,
                              exit_code=code if isinstance(code, int) else None)
    if not isinstance(exc, BaseException):
        exc = TaskFailedError(f"task {name} raised {meta.get('type')}: {meta.get('message')}\n{tb}",
                              type_name=str(meta.get("type", "")), remote_traceback=tb)
    if isinstance(exc, ModuleNotFoundError) and (missing := exc.name or _missing_module(str(exc))):
        exc.add_note(f"dockertask: {_image_hint(image, missing.split('.')[0])}")
    exc.__cause__ = RemoteTraceback(tb)
    raise AttemptFailed(exc, retryable=not isinstance(exc, NonRecoverableError))

