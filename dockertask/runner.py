"""Policy for one call: deprecation, cache, image and secrets, attempts, and error translation.

Mechanism (containers) is the backend's; this module decides what an outcome means:

    timeout → TaskTimeoutError    OOM → TaskOOMError    user exception → itself
    killed from outside → preempted (re-run, for interruptible tasks, without using retries)
    no result + other exit → TaskFailedError with the output tail

Every failure inside the container is retried up to ``retries`` times, each attempt in a
fresh container; host-side validation (inputs, images, secrets, outputs) is never retried.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import TYPE_CHECKING, Any

from . import hostproc, images, lifecycle, payload, progress, secrets, spares
from .backends import Backend, ContainerJob, ContainerOutcome, default_backend
from .backends.base import JobResources, OutputSink, StdinPieces
from .errors import (
    ImageNotFoundError,
    PythonVersionError,
    RemoteTraceback,
    TaskFailedError,
    TaskInterruptedError,
    TaskOOMError,
    TaskOutputError,
    TaskTimeoutError,
)
from .resources import describe_bytes

if TYPE_CHECKING:
    from .tasks import Task

log = logging.getLogger("dockertask")
# How many times an interruptible task may be preempted before it runs as a normal one.
MAX_PREEMPTIONS = 3
_ensured: set[str] = set()


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
    progress.emit(target, line if line.endswith("\r") else line + "\n")


def prefixed(label: str) -> OutputSink:
    """A sink that marks each line with ``[label]``: whose line it is, when calls run concurrently."""
    def sink(stream: str, line: str) -> None:
        print_line(stream, f"[{label}] {line}")
    return sink


class AttemptFailed(Exception):
    """One attempt's failure, with what the policy needs to decide about the next one."""

    def __init__(self, error: BaseException, retryable: bool = True, preempted: bool = False) -> None:
        super().__init__(error)
        self.error, self.retryable, self.preempted = error, retryable, preempted


def call(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], backend: Backend | None = None,
         *, warn: bool = True, output: OutputSink | None = None, since: int | None = None) -> Any:
    """One call: ``warn=False`` when the caller already warned (submit, map); ``output`` receives the
    task's lines (default: print_line, unprefixed); ``since`` is the interrupt generation when the call
    was made (a submit or map item waits in a queue: a Ctrl-C meanwhile means it never starts)."""
    spec = task.spec
    since = lifecycle.generation() if since is None else since
    bound = task.interface.bind(args, kwargs)
    if warn:
        task.warn_if_deprecated(stacklevel=4)
    key = None
    if spec.cache:  # the cache module (hashing, temp files) is imported only by tasks that use it
        from .cache import Cache, NotHashable

        try:
            key = key_for(task, bound.arguments)
        except NotHashable as exc:
            warnings.warn(f"task {spec.name}: {exc}; running without the cache", RuntimeWarning, stacklevel=3)
    if key is None:
        return _attempts(task, bound.args, bound.kwargs, backend or default_backend(), output, since)
    store = Cache()
    hit, value = store.get(key, spec.name)
    if hit:
        return value
    with store.locked(key):
        hit, value = store.get(key, spec.name)  # an identical call may have finished while we waited
        if hit:
            return value
        # The engine is reached only on a miss: a hit needs neither Docker nor its SDK.
        value = _attempts(task, bound.args, bound.kwargs, backend or default_backend(), output, since)
        store.put(key, value, spec.name, spec.cache_version)
        return value


def key_for(task: Task[Any, Any], arguments: dict[str, Any]) -> str:
    """The cache key of a call: name, cache_version, interface, code (see cache.code_fingerprint), inputs."""
    spec = task.spec
    from .cache import cache_key

    return cache_key(spec.name, spec.cache_version, task.interface.fingerprint(), arguments, task.code_fingerprint)


def _ensure_image(backend: Backend, ref: str) -> None:
    if ref not in _ensured:
        images.ensure_image(backend, ref)
        _ensured.add(ref)


def _not_started(name: str) -> TaskFailedError:
    return TaskFailedError(f"task {name} was not started: the host is shutting down (Ctrl-C or SIGTERM)")


def _attempts(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], backend: Backend,
              output: OutputSink | None = None, since: int = 0) -> Any:
    spec = task.spec
    if lifecycle.interrupted(since):  # queued work (submits, map items) must not start after Ctrl-C
        raise _not_started(spec.name)
    image = images.resolve(spec.container_image)
    secret_values = secrets.resolve(spec.secret_requests, spec.name)  # before any container
    if task.image_spec is not None and image not in _ensured:
        from .imagespec import build

        build(task.image_spec, backend)
    reusable = spec.reusable is not None
    if reusable:
        _ensure_image(backend, image)
    # else: an isolated call asks the engine nothing first: a missing image fails the create
    # (Backend.run raises ImageNotFoundError), and then _run_job makes it (build, pull) and runs again.
    # That saves a round trip on every process's first call.
    lifecycle.install_signal_handlers()
    # A reused call sends its arguments on the replica's channel (workers.run_call), so its job carries none.
    envelope: payload.Envelope | None = (payload.Envelope(header={"python": payload.HOST_PYTHON}, pickled_call=b"")
                                         if reusable else payload.make_envelope(task.function, args, kwargs, spec.name,
                                                                               task.interface.may_carry_files))
    run_id = os.urandom(8).hex()  # as uuid4().hex[:16], without importing uuid
    failures = preemptions = 0
    attempt = 0
    while True:
        attempt += 1
        interruptible = spec.interruptible and preemptions < MAX_PREEMPTIONS
        if envelope is None:  # a retry: pickle the call again rather than hold it through every attempt
            envelope = payload.make_envelope(task.function, args, kwargs, spec.name, task.interface.may_carry_files)
        job = build_job(task, image, envelope, secret_values, run_id, attempt, interruptible, since)
        if lifecycle.interrupted(since):
            raise _not_started(spec.name)
        # A container made ahead for this configuration (spares.py): the call takes it, and its run id.
        # From here to backend.run nothing can fail, and run() removes the spare on every outcome.
        claim = spares.SPARES.claim(backend, job) if not reusable and attempt == 1 else None
        spare = claim.spare if claim is not None else None
        if spare is not None:
            run_id = spare.run_id
            job = build_job(task, image, envelope, secret_values, run_id, attempt, interruptible, since)
        if not reusable:
            envelope = None  # the job's stdin pieces are the only reference now, dropped once sent
        try:
            if reusable:
                from . import workers

                outcome = workers.run_call(task, job, args, kwargs, secret_values, output or print_line, backend)
            else:
                try:
                    outcome = _run_job(backend, job, image, output, spare)
                finally:
                    if claim is not None:
                        spares.SPARES.finished(claim)
            value = interpret(task, outcome, run_id)
            task.interface.check_output(value)
            return value
        except AttemptFailed as failed:
            if lifecycle.interrupted(since):
                raise _bare(failed.error)  # noqa: B904 - `from` would replace its RemoteTraceback cause
            if failed.preempted and interruptible:
                preemptions += 1
                log.warning("task %s attempt %d was preempted (%s); re-running it (%d/%d preemptions)",
                            spec.name, attempt, failed.error, preemptions, MAX_PREEMPTIONS)
                continue
            if not failed.retryable or failures >= spec.retries:
                raise _bare(failed.error)  # noqa: B904 - `from` would replace its RemoteTraceback cause
            failures += 1
            log.warning("task %s attempt %d failed: %s: %s; retrying in a fresh container (retry %d/%d)",
                        spec.name, attempt, type(failed.error).__name__, _first_line(failed.error),
                        failures, spec.retries)


def _run_job(backend: Backend, job: ContainerJob, image: str, output: OutputSink | None = None,
             spare: spares.Spare | None = None) -> ContainerOutcome:
    sink = output or print_line
    try:
        if spare is not None:
            return backend.run(job, sink, prepared=spare.prepared)
        return backend.run(job, sink)
    except ImageNotFoundError:
        # Not there yet, or removed since (`docker image prune`): make it (build, pull), once, and run again.
        _ensured.discard(image)
        _ensure_image(backend, image)
        return backend.run(job, sink)


def _bare(error: BaseException) -> BaseException:
    """The error without the AttemptFailed wrapper as its shown context (its __cause__ stays)."""
    error.__suppress_context__ = True
    return error


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def build_job(task: Task[Any, Any], image: str, envelope: payload.Envelope,
              secret_values: dict[secrets.Secret, secrets.SecretValue],
              run_id: str, attempt: int, interruptible: bool, since: int = 0) -> ContainerJob:
    spec = task.spec
    header = {"task": spec.name, "attempt": attempt, "run_id": run_id}
    secrets_frame = secrets.to_frame(secret_values)
    resources = JobResources(spec.requests, spec.limits, interruptible,
                             secrets.tmpfs_mib(secret_values) if secret_values else 0)
    labels = {
        "dockertask.run-id": run_id,
        "dockertask.task": spec.name,
        "dockertask.attempt": str(attempt),
        **hostproc.owner_labels(),
    }
    if interruptible:
        labels["dockertask.interruptible"] = "true"
    return ContainerJob(
        image=image, command=list(payload.COMMAND), stdin=StdinPieces(envelope.stdin_pieces(header, secrets_frame)),
        environment={**task.container_options.environment, **spec.environment}, labels=labels,
        resources=resources, options=task.container_options,
        timeout=spec.timeout_seconds or None, since=since,
    )


def interpret(task: Task[Any, Any], outcome: ContainerOutcome, run_id: str = "") -> Any:
    """The value of a finished attempt, or AttemptFailed saying what went wrong."""
    try:
        return _interpret(task, outcome, run_id)
    finally:
        if outcome.result is not None and not isinstance(outcome.result, (bytes, bytearray)):
            outcome.result.close()  # a spooled result's file (already unlinked)
        if outcome.archive is not None:
            outcome.archive.close()  # the returned files' archive (unlinked; unpacked by now)


def _interpret(task: Task[Any, Any], outcome: ContainerOutcome, run_id: str = "") -> Any:
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
    raw = payload.parse_result(outcome.result) if outcome.result is not None else None
    if raw is None:
        tail = f"; its last output:\n{outcome.logs_tail}" if outcome.logs_tail else ""
        # The init could not exec python3: tini/docker-init exit 127 ("command not found"); Podman's
        # catatonit exits 1 saying "failed to exec pid1" (its pid1 is our python3).
        if outcome.exit_code == 127 or "failed to exec pid1" in outcome.logs_tail:
            raise AttemptFailed(PythonVersionError(
                f"task {spec.name}: image {outcome.image!r} has no Python: python3 is not on its PATH; "
                "dockertask needs the host's Python major.minor in the image"), retryable=False)
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
        missing = _missing_module(str(meta.get("message", ""))) if "ModuleNotFoundError" in str(meta.get("type")) \
            else None
        hint = (_image_hint(outcome.image, missing) if missing
                else "a package the task imports may be missing from the image")
        raise AttemptFailed(TaskFailedError(
            f"task {spec.name}: could not load the task in the container: {meta.get('type')}: "
            f"{meta.get('message')} ({hint})",
            type_name=str(meta.get("type", "")), remote_traceback=str(meta.get("traceback", ""))), retryable=False)
    return _user_exception(spec.name, raw, outcome.image)


def _missing_module(message: str) -> str | None:
    """'pandas' from "No module named 'pandas.core'" (the package to install is the top level)."""
    m = re.search(r"No module named '([^']+)'", message)
    return m.group(1).split(".")[0] if m else None


def _image_hint(image: str, module: str) -> str:
    return (f"image {image} has no module {module!r}: run the task on an image that has it, e.g. "
            f"container_image=ImageSpec(name=..., packages=[{module!r}])")


def _load_with_files(name: str, raw: payload.RawResult, outcome: ContainerOutcome, run_id: str) -> Any:
    """A result holding File/Directory objects: their archive unpacked (safely) into the call's output
    directory, and the value made with host paths. A refused archive leaves nothing behind."""
    from . import files

    archive = outcome.archive
    outputs = [(str(kind), str(item)) for kind, item in raw.meta["outputs"]]

    def unpack(staged: str) -> None:
        if archive is None:
            raise files.UnsafeArchive("the files it returned did not arrive")
        files.unpack(archive, staged)

    try:
        placed = files.deliver(files.output_dir(name, run_id or os.urandom(8).hex()), outputs, unpack)
    except (files.UnsafeArchive, OSError, EOFError, ValueError) as exc:
        raise AttemptFailed(TaskOutputError(
            f"task {name}: the files it returned were refused: {exc}; nothing was written outside "
            f"{files.output_dir(name, '')}"), retryable=False) from None
    return _load_result(name, outcome.image, raw, placed)


def _load_result(name: str, image: str, raw: payload.RawResult, paths: list[Any] | None = None) -> Any:
    """The returned value (its persistent ids standing for ``paths``, the returned files); one this host
    cannot load is a TaskOutputError that keeps the bytes."""
    try:
        return payload.load_value(raw, paths)
    except Exception as exc:
        missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
        what = (f"its class comes from module {missing!r}, which is in image {image} but not installed here: "
                f"install it on the host (pip install ...)" if missing else f"{type(exc).__name__}: {exc}")
        raise AttemptFailed(TaskOutputError(
            f"task {name} succeeded, but its result cannot be loaded on this host: {what}. The pickled result is "
            "kept in this error's raw_result: pickle.loads(err.raw_result) once that is fixed, without running "
            "the task again", raw_result=raw.data()), retryable=False) from None


def _user_exception(name: str, raw: payload.RawResult, image: str = "") -> Any:
    meta = raw.meta
    tb = str(meta.get("traceback", ""))
    exc: BaseException | None = None
    data = raw.data()
    if data:
        try:
            exc = payload.loads(data)
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
    raise AttemptFailed(exc)

