"""Where an attempt runs: one interface, so the runner's policy never asks which.

The runner prepares a ``Call`` once (image resolved, secrets read) and hands each attempt to the
task's executor, which gives back the attempt's ``ContainerOutcome``:

    Isolated   a fresh container per attempt; the first attempt takes a container made ahead for
               the same configuration when one waits (spares.py), else the backend makes one
    Reused     a warm replica of the task's pool (replicas.py): the call is forked there

Both sit on a ``Backend``: on one engine a container, on Swarm a service (made ahead, or a
long-lived replica service); the backend owns that difference, the executor does not see it.
Each executor pickles what it sends in ``prepare`` (bad input fails there, before any container)
and again for a retry, holding no argument longer than its attempt needs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

from dockertask.backends import Backend, ContainerJob, ContainerOutcome
from dockertask.backends.base import JobResources, OutputSink, StdinPieces
from dockertask.calls import envelope, pickling, replicas, spares
from dockertask.errors import ImageNotFoundError
from dockertask.host import owner
from dockertask.images import refs
from dockertask.runs import store
from dockertask.runtime import protocol
from dockertask.spec import secrets

if TYPE_CHECKING:
    from dockertask.tasks import Task

_ensured: set[str] = set()  # images known to be on the engine, in this process


def ensure_image(backend: Backend, ref: str) -> None:
    """Make sure ``ref`` is on the engine (build the default image, pull), once per process."""
    if ref not in _ensured:
        refs.ensure_image(backend, ref)
        _ensured.add(ref)


def is_ensured(ref: str) -> bool:
    return ref in _ensured


class Call:
    """One call of a task, ready for its attempts: what every executor needs, nothing engine-specific."""

    __slots__ = ("task", "image", "args", "kwargs", "secret_values", "since", "output", "run_id", "pickled")

    def __init__(self, task: Task[Any, Any], image: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 secret_values: dict[secrets.Secret, secrets.SecretValue], since: int, output: OutputSink) -> None:
        self.task, self.image, self.args, self.kwargs = task, image, args, kwargs
        self.secret_values, self.since, self.output = secret_values, since, output
        self.run_id = os.urandom(8).hex()  # as uuid4().hex[:16], without importing uuid
        self.pickled: Any = None  # what the executor's prepare() pickled, until its first attempt takes it


class Executor(Protocol):
    def prepare(self, call: Call) -> None:
        """Pickle what the first attempt sends: an input that cannot go is a TaskInputError here."""
        ...

    def run(self, call: Call, attempt: int, interruptible: bool) -> ContainerOutcome:
        """One attempt, on every outcome with nothing of it left behind; may set ``call.run_id``."""
        ...


# A function of the runtime may name what a container started ahead for its next call should load while
# it waits (pytestworker.run: pytest); a user's task has none.
PRELOAD_ATTRIBUTE = "dockertask_preload"


def for_task(task: Task[Any, Any], backend: Backend) -> Executor:
    return Reused(backend) if task.spec.reusable is not None else Isolated(backend)


def build_job(task: Task[Any, Any], image: str, envelope: envelope.Envelope,
              secret_values: dict[secrets.Secret, secrets.SecretValue],
              run_id: str, attempt: int, interruptible: bool, since: int = 0, ahead: bool = False) -> ContainerJob:
    """The container of one attempt: image, the call on stdin, labels, resources, options, timeout;
    ``ahead``: for a spare started ahead, which has its bootstrap and runtime already."""
    spec = task.spec
    header = protocol.call_header(spec.name, attempt, run_id)
    secrets_frame = secrets.to_frame(secret_values)
    resources = JobResources(spec.requests, spec.limits, interruptible,
                             secrets.tmpfs_mib(secret_values) if secret_values else 0)
    labels = {
        "dockertask.run-id": run_id,
        "dockertask.task": spec.name,
        "dockertask.attempt": str(attempt),
        **owner.owner_labels(),
    }
    if interruptible:
        labels["dockertask.interruptible"] = "true"
    environment = {**task.container_options.environment, **spec.environment}
    if (spec.effective_mem_limit or spec.interruptible) and store.enabled():
        # The call runs in a child of the bootstrap, which outlives an OOM kill or a stop from outside to
        # report the peak memory it reached, for the record (~4 ms; only for a task that has a memory limit
        # to reach, or that may be preempted).
        from dockertask.backends import engine_config  # host-only: not in the runtime zip

        environment.update(engine_config.WATCH_CALL)
    return ContainerJob(
        image=image, command=list(protocol.COMMAND),
        stdin=StdinPieces(envelope.stdin_pieces(header, secrets_frame, ahead)),
        environment=environment, labels=labels,
        resources=resources, options=task.container_options,
        timeout=spec.timeout_seconds or None, since=since,
        preload=tuple(getattr(task.function, PRELOAD_ATTRIBUTE, ())),
    )


class Isolated:
    """A fresh container for each attempt (or, for a first attempt, one made ahead and never started)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def prepare(self, call: Call) -> None:
        call.pickled = self._envelope(call)

    @staticmethod
    def _envelope(call: Call) -> envelope.Envelope:
        task = call.task
        return envelope.make_envelope(task.function, call.args, call.kwargs, task.spec.name,
                                      task.interface.may_carry_files)

    def run(self, call: Call, attempt: int, interruptible: bool) -> ContainerOutcome:
        # A retry pickles the call again rather than hold it through every attempt.
        made, call.pickled = call.pickled or self._envelope(call), None
        job = build_job(call.task, call.image, made, call.secret_values, call.run_id, attempt, interruptible,
                        call.since)
        # A container made ahead for this configuration: the call takes it, and its run id. From here to
        # backend.run nothing can fail, and run() removes the spare on every outcome.
        claim = spares.SPARES.claim(self.backend, job) if attempt == 1 else None
        spare = claim.spare if claim is not None else None
        if spare is not None:
            call.run_id = spare.run_id
            job = build_job(call.task, call.image, made, call.secret_values, call.run_id, attempt, interruptible,
                            call.since, ahead=spares.is_started(spare))
        del made  # the job's stdin pieces are the only reference now, dropped once sent
        try:
            return self._run_job(job, call.image, call.output, spare)
        finally:
            if claim is not None:
                spares.SPARES.finished(claim)

    def _run_job(self, job: ContainerJob, image: str, sink: OutputSink, spare: spares.Spare | None) -> ContainerOutcome:
        try:
            if spare is not None:
                return self.backend.run(job, sink, prepared=spare.prepared)
            return self.backend.run(job, sink)
        except ImageNotFoundError:
            # An isolated call asks the engine nothing first: a missing image fails the create. Then make
            # it (build, pull), once, and run again; that saves a round trip on every process's first call.
            _ensured.discard(image)
            ensure_image(self.backend, image)
            return self.backend.run(job, sink)


class Reused:
    """An attempt forked in a warm replica of the task's pool; its arguments go on the replica's channel."""

    _NO_CALL = envelope.Envelope(header={}, pickled_call=b"")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def prepare(self, call: Call) -> None:
        ensure_image(self.backend, call.image)
        call.pickled = self._arguments(call)

    @staticmethod
    def _arguments(call: Call) -> tuple[bytes, tuple[Any, ...]]:
        task = call.task
        return pickling.pickle_call_args(call.args, call.kwargs, task.spec.name, task.interface.may_carry_files)

    def run(self, call: Call, attempt: int, interruptible: bool) -> ContainerOutcome:
        # The job this call would have run isolated: the replica's container is made from it, and its
        # configuration decides which pool serves the call.
        sample = build_job(call.task, call.image, self._NO_CALL, call.secret_values, call.run_id, attempt,
                           interruptible, call.since)

        def arguments() -> tuple[bytes, tuple[Any, ...]]:
            # Taken once: run_call drops them once sent; a retry pickles them again.
            pickled, call.pickled = call.pickled or self._arguments(call), None
            return pickled

        return replicas.run_call(call.task, sample, arguments, call.secret_values, call.output, self.backend)
