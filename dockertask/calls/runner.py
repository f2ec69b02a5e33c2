"""Policy for one call: deprecation, cache, image and secrets, attempts, and what each outcome leads to.

Mechanism is elsewhere: the executor (executors.py) runs an attempt in a fresh container, one made
ahead, or a warm replica, on one engine or a Swarm, and hands back its outcome; outcomes.py says
what that outcome means. Here: every failure inside the container is retried up to ``retries``
times, each attempt in a fresh container; a preempted interruptible task runs again without using
a retry; host-side validation (inputs, images, secrets, outputs) is never retried.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import TYPE_CHECKING, Any

from dockertask.backends import Backend, default_backend
from dockertask.backends.base import OutputSink
from dockertask.calls import executors, kept, pickling, progress, upstream
from dockertask.calls.outcomes import AttemptFailed, interpret
from dockertask.errors import TaskFailedError
from dockertask.host import lifecycle
from dockertask.images import refs
from dockertask.runs import record
from dockertask.spec import secrets

if TYPE_CHECKING:
    from dockertask.tasks import Task

log = logging.getLogger("dockertask")
# How many times an interruptible task may be preempted before it runs as a normal one.
MAX_PREEMPTIONS = 3


def call(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], backend: Backend | None = None,
         *, warn: bool = True, output: OutputSink | None = None, since: int | None = None,
         parent: str | None = None, index: int | None = None, handle: upstream.Handle | None = None) -> Any:
    """One call: ``warn=False`` when the caller already warned (submit, map); ``output`` receives the
    task's lines (default: print_line, unprefixed); ``since`` is the interrupt generation when the call
    was made (a submit or map item waits in a queue: a Ctrl-C meanwhile means it never starts);
    ``parent`` and ``index``: the map call this one is item ``index`` of, for the record; ``handle``: the
    submitted call's, told its call id (a later call given its Future names it)."""
    since = lifecycle.generation() if since is None else since
    edges: list[str] = []
    if upstream.present(args, kwargs):  # futures as inputs: their results, waited for here
        try:
            args, kwargs, edges = upstream.resolve(task.interface, args, kwargs)
        except Exception as exc:  # an upstream call failed: recorded as failed, with its edges; it never ran
            if (found := upstream.upstream_of(exc)) is not None:
                where, ups = found
                failed = record.begin(task, {where: "<failed upstream>"}, lambda _: "upstream:" + " ".join(ups),
                                      parent, index, ups)
                if failed is not None:
                    failed.failed(exc)
            raise
    bound = task.interface.bind(args, kwargs)
    if warn:
        task.warn_if_deprecated(stacklevel=4)
    rec = record.begin(task, bound.arguments, input_digest, parent, index, edges)
    if handle is not None and rec is not None:
        handle.call_id = rec.call_id
    if rec is None:
        return _call(task, bound, backend, output, since, None, index)
    replayed = rec.run.replayable(rec.call_id)
    if replayed is not None:
        try:
            value = kept.loads(replayed, task.spec.name)
        except Exception:  # noqa: BLE001 - a kept result that no longer loads here: the call runs again
            pass
        else:
            rec.succeeded(value, replayed=True, pickled=replayed)
            return value
    try:
        value = _call(task, bound, backend, output, since, rec, index)
    except BaseException as exc:
        rec.failed(exc)
        if parent is None and rec.attempt and isinstance(exc, Exception):  # not for an error before any container
            exc.add_note(record.hint(rec))
        raise
    blob = None
    limit = record.max_result()
    if (rec.result_size or 0) <= limit:  # a result that came too large is not pickled again to find that out
        try:
            blob = kept.dumps(value, limit, task.interface.may_carry_files)
        except Exception:  # noqa: BLE001 - a result that cannot be kept is run again on resume
            blob = None
    rec.succeeded(value, cache_hit=rec.cache_hit, pickled=blob)
    return value


def _call(task: Task[Any, Any], bound: Any, backend: Backend | None, output: OutputSink | None, since: int,
          rec: record.CallRecord | None, index: int | None = None) -> Any:
    spec = task.spec
    if rec is not None:
        output = rec.sink(output or progress.print_line)
    key = None
    if spec.cache:  # the cache module (hashing, temp files) is imported only by tasks that use it
        from dockertask.calls.cache import Cache, NotHashable

        try:
            key = key_for(task, bound.arguments)
        except NotHashable as exc:
            warnings.warn(f"task {spec.name}: {exc}; running without the cache", RuntimeWarning, stacklevel=3)
    if key is None:
        return _attempts(task, bound.args, bound.kwargs, backend or default_backend(), output, since, rec, index)
    store = Cache()
    hit, value = store.get(key, spec.name)
    if hit:
        if rec is not None:
            rec.cache_hit = True
        return value
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(store.locked(key))
        except OSError as exc:  # a read-only or full cache directory: the call runs, without the cache
            warnings.warn(f"task {spec.name}: the cache at {store.directory} cannot be used ({type(exc).__name__}: "
                          f"{exc}); running without it", RuntimeWarning, stacklevel=3)
            return _attempts(task, bound.args, bound.kwargs, backend or default_backend(), output, since, rec, index)
        hit, value = store.get(key, spec.name)  # an identical call may have finished while we waited
        if hit:
            if rec is not None:
                rec.cache_hit = True
            return value
        # The engine is reached only on a miss: a hit needs neither Docker nor its SDK.
        value = _attempts(task, bound.args, bound.kwargs, backend or default_backend(), output, since, rec, index)
        try:
            store.put(key, value, spec.name, spec.cache_version, task.code_fingerprint, spec.source_file,
                      task.function.__qualname__)
        except OSError as exc:  # the cache is an optimisation: a full or read-only disk loses no result
            warnings.warn(f"task {spec.name}: its result could not be stored in the cache at {store.directory} "
                          f"({type(exc).__name__}: {exc}); it is returned, and the next call runs again",
                          RuntimeWarning, stacklevel=3)
        return value


def input_digest(arguments: dict[str, Any]) -> str:
    """The inputs' digest for a call id: the cache's canonical hash (equal in every process), or for inputs
    it cannot hash, of their pickle (which may differ between processes: such a call's id may change)."""
    from dockertask.calls.cache import NotHashable, hash_inputs

    try:
        return hash_inputs(arguments)[:16]
    except (NotHashable, RecursionError, TypeError, ValueError):
        import hashlib

        try:
            return "p-" + hashlib.sha256(pickling.dumps(arguments)).hexdigest()[:14]
        except Exception:  # noqa: BLE001 - unpicklable: the call fails at prepare, with the error saying why
            return "unhashable"


def key_for(task: Task[Any, Any], arguments: dict[str, Any]) -> str:
    """The cache key of a call: name, cache_version, interface, code (see cache.code_fingerprint), inputs."""
    spec = task.spec
    from dockertask.calls.cache import cache_key

    return cache_key(spec.name, spec.cache_version, task.interface.fingerprint(), arguments, task.code_fingerprint)


def _not_started(name: str) -> TaskFailedError:
    return TaskFailedError(f"task {name} was not started: the host is shutting down (Ctrl-C or SIGTERM)")


def _attempts(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], backend: Backend,
              output: OutputSink | None = None, since: int = 0, rec: record.CallRecord | None = None,
              index: int | None = None) -> Any:
    spec = task.spec
    who = spec.name if index is None else f"{spec.name}[{index}]"  # a map's item says which it is
    if lifecycle.interrupted(since):  # queued work (submits, map items) must not start after Ctrl-C
        raise _not_started(spec.name)
    image = refs.resolve(spec.container_image)
    secret_values = secrets.resolve(spec.secret_requests, spec.name)  # before any container
    if rec is not None:
        rec.mask(secret_values)
    if task.image_spec is not None and not executors.is_ensured(image):
        from dockertask.images.imagespec import build

        build(task.image_spec, backend)
    executor = executors.for_task(task, backend)
    call = executors.Call(task, image, args, kwargs, secret_values, since, output or progress.print_line)
    executor.prepare(call)  # what cannot be sent fails here, before any container
    lifecycle.install_signal_handlers()
    failures = preemptions = 0
    attempt = 0
    while True:
        attempt += 1
        interruptible = spec.interruptible and preemptions < MAX_PREEMPTIONS
        if lifecycle.interrupted(since):
            raise _not_started(spec.name)
        outcome = None
        evidence: dict[str, Any] = {}
        if rec is not None:
            rec.attempt_started(attempt)
        try:
            try:
                outcome = executor.run(call, attempt, interruptible)
                value = interpret(task, outcome, call.run_id, evidence)
                value = task.interface.check_output(value)
            except BaseException as exc:
                if rec is not None:
                    failed_as = exc.error if isinstance(exc, AttemptFailed) else exc
                    rec.attempt_ended(outcome, evidence, backend, failed_as,
                                      isinstance(exc, AttemptFailed) and exc.preempted)
                raise
            if rec is not None:
                rec.attempt_ended(outcome, evidence, backend, None, False)
                rec.result_size = evidence.get("size")
            return value
        except AttemptFailed as failed:
            if lifecycle.interrupted(since):
                raise _bare(failed.error)  # noqa: B904 - `from` would replace its RemoteTraceback cause
            if failed.preempted and interruptible:
                preemptions += 1
                log.warning("task %s attempt %d was preempted (%s); re-running it (%d/%d preemptions)",
                            who, attempt, failed.error, preemptions, MAX_PREEMPTIONS)
                continue
            if not failed.retryable or failures >= spec.retries:
                raise _bare(failed.error)  # noqa: B904 - `from` would replace its RemoteTraceback cause
            failures += 1
            log.warning("task %s attempt %d failed: %s: %s; retrying in a fresh container (retry %d/%d)",
                        who, attempt, type(failed.error).__name__, _first_line(failed.error),
                        failures, spec.retries)


def _bare(error: BaseException) -> BaseException:
    """The error without the AttemptFailed wrapper as its shown context (its __cause__ stays)."""
    error.__suppress_context__ = True
    return error


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
