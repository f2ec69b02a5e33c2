"""The contract between the runner (policy) and a container engine (mechanism).

A job is declarative and carries no host paths: the call travels on the container's stdin and
the result comes back on its control channel, so a remote engine runs it as well as the local one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Protocol

from dockertask.plugins import ContainerOptions
from dockertask.spec.resources import Resources

if TYPE_CHECKING:
    from dockertask.files import Incoming

# Called from a pump thread with ("stdout" | "stderr", one line without its newline).
OutputSink = Callable[[str, str], None]


class StdinPieces:
    """What a container reads on stdin, in pieces, handed out once: after they are sent nothing holds
    them, so a 50 MB argument is not kept for the length of the call (a retry pickles it again)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = pieces  # a tuple, or an iterator reading input files from disk as it is sent

    def take(self) -> Iterable[bytes]:
        pieces, self._pieces = self._pieces, ()
        return pieces

    def peek(self) -> tuple[bytes, ...]:
        if not isinstance(self._pieces, tuple):  # tests only: an input file's stream, read whole
            self._pieces = tuple(self._pieces)
        return self._pieces


class JobResources(NamedTuple):
    """What the container may use and is promised, in dockertask's terms (each backend translates)."""

    requests: Resources | None = None
    limits: Resources | None = None
    interruptible: bool = False  # the lowest CPU weight, the first to go under memory pressure
    secrets_mib: int = 0  # a private tmpfs of this size at secrets.SECRETS_MOUNT for secret files; 0: none


@dataclass(frozen=True)
class ContainerJob:
    image: str
    command: list[str]
    stdin: StdinPieces  # what the container reads, in pieces sent in turn (never joined into one copy)
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    resources: JobResources = JobResources()
    options: ContainerOptions = ContainerOptions()  # the task_config's (environment already merged above)
    timeout: float | None = None  # seconds from start; None means no limit
    since: int = 0  # lifecycle.generation() when the call was made: a later Ctrl-C cancels it
    # "module:function"s of the runtime a container started ahead calls while it waits (what a call of
    # this task would load first: pytest, for the pytest plugin's worker); see envelope.ahead_pieces.
    preload: tuple[str, ...] = ()

    @property
    def stdin_data(self) -> bytes:
        """All of stdin as one bytes object (for tests and debugging; the backends send the pieces)."""
        return b"".join(self.stdin.peek())


class ContainerOutcome(NamedTuple):  # a NamedTuple (not a dataclass): ~0.7 ms less to import
    container_id: str
    exit_code: int | None
    image: str = ""
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False  # the host is shutting down (Ctrl-C / SIGTERM) and killed it
    result: bytes | bytearray | BinaryIO | None = None  # the result frame (a file when large), if one came
    logs_tail: str = ""
    archive: Incoming | None = None  # the returned File/Directory objects, unpacked as they came
    signalled_inside: bool = False  # killed by a signal sent inside the container (not a stop from outside)
    usage: dict[str, Any] | None = None  # peak memory and CPU seconds when the call died without its R frame
    no_python: bool = False  # the image has no python3 on its PATH (the engine's filesystem said so)


class Removed(NamedTuple):
    """What gc removed (or, with dry_run, would): its id, kind (container, service, secret) and labels,
    so that the command can say whose it was."""

    id: str
    labels: dict[str, str]
    kind: str = "container"


class ImageInfo(NamedTuple):
    ref: str
    id: str
    labels: dict[str, str]
    created: str = ""
    size: int = 0
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()  # repository digests (repo@sha256:...), when it was pushed or pulled


class Backend(Protocol):
    """What dockertask needs from an engine. Implementations map their errors to DockerTaskError."""

    def run(self, job: ContainerJob, on_output: OutputSink, prepared: Any = None) -> ContainerOutcome:
        """Create, attach, start, send stdin, stream output, wait, and always remove the
        container, whatever happens (including KeyboardInterrupt). With ``prepared`` (from ``prepare``
        of a job with the same configuration) the container made then is the one started. An image
        the engine does not have is an ImageNotFoundError, before anything starts."""
        ...

    def prepare(self, job: ContainerJob) -> Any:
        """Create (and attach to) ``job``'s container without starting it: a spare for a later ``run``."""
        ...

    def discard(self, prepared: Any) -> None:
        """Remove a prepared container that will not run; never raises."""
        ...

    def open_worker(self, job: ContainerJob, on_output: OutputSink) -> Any:
        """Start a long-lived container whose stdin stays open (a reusable replica): ``job.stdin`` goes
        first; the result has ``send(pieces)``, ``frames.next(timeout)`` (kind, frame), ``route_output``,
        ``take_archive()`` (a call's returned files), ``exit_state()`` and ``close()`` (kill and remove)."""
        ...

    def image_info(self, ref: str) -> ImageInfo | None: ...

    def pull(self, ref: str) -> bool:
        """Try to pull ``ref``; False (not an error) when no registry can provide it."""
        ...

    def build(self, context_tar: bytes, tag: str, buildargs: dict[str, str], labels: dict[str, str],
              on_log: Callable[[str], None]) -> None: ...

    def import_rootfs(self, path: str, tag: str, changes: list[str]) -> None:
        """Make an image of a root file system tarball (``docker import``)."""
        ...

    def images(self, label: str) -> list[ImageInfo]: ...

    def remove_image(self, ref: str) -> str | None:
        """Remove an image (by reference or id): None, or why it stays (a container uses it)."""
        ...

    def kill_all(self, container_ids: list[str]) -> None:
        """Kill containers right now (called when the host is interrupted)."""
        ...

    def gc(self, is_orphan: Callable[[dict[str, str]], bool], dry_run: bool = False) -> list[Removed]:
        """Remove dockertask containers (and their anonymous volumes) whose labels ``is_orphan``;
        with ``dry_run`` only list them."""
        ...

    def remove_network(self, name: str) -> None:
        """Remove a network and every container attached to it (a test session's services)."""
        ...

    def gc_networks(self, is_orphan: Callable[[dict[str, str]], bool], dry_run: bool = False) -> list[str]:
        """Remove the networks dockertask made for tests whose labels ``is_orphan``, with their containers."""
        ...

    def engine_info(self) -> dict[str, Any]: ...
