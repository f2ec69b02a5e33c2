"""Every error dockertask raises, in one tree.

::

    DockerTaskError                      root: ``except DockerTaskError`` catches them all
    ├── TaskDefinitionError (ValueError, TypeError)  a declaration that cannot work (at decoration)
    ├── TaskInputError (TypeError)       an argument does not match the task's annotations
    ├── TaskOutputError (TypeError)      the return value does not match the annotation
    ├── TaskTimeoutError (TimeoutError)  the container ran past ``timeout`` and was killed
    ├── TaskOOMError (MemoryError)       the kernel killed the container at its memory limit
    ├── TaskFailedError                  the task failed and its exception could not come back
    │                                    as itself, or the container crashed without a result
    ├── TaskInterruptedError             the container was stopped from outside (preempted)
    ├── PythonVersionError               the image has no Python, or another major.minor
    ├── ImageResolutionError (ValueError) a ``{{.image.NAME...}}`` names no known image
    ├── ImageNotFoundError               the image is neither local nor pullable
    ├── ImageBuildError                  building an image failed (carries the log tail)
    ├── SecretNotFoundError (KeyError)   a requested secret has no value on the host
    ├── ResourceSpecError (ValueError)   a ``Resources`` field cannot be parsed
    ├── UnsupportedResourceError         the engine cannot enforce a requested resource
    ├── DockerUnavailableError           no Docker engine is reachable (or it was lost mid-task)
    ├── TaskSchedulingError              no Swarm node took the task within the scheduling wait
    ├── MapTaskError                     too few items of a map_task succeeded (.failures, .results)
    └── NonRecoverableError              a base for the task's own errors that no retry can help

This module imports nothing so that every other module (and the in-container runtime) can use it.
"""

from __future__ import annotations


class DockerTaskError(Exception):
    """Root of every dockertask error."""


class TaskDefinitionError(DockerTaskError, ValueError, TypeError):
    """A task, or an object it is declared with (Secret, Docker, ImageSpec...), is declared with a
    value that cannot work: raised at decoration or construction, before anything runs. It is both a
    ValueError and a TypeError, as a wrong value and a wrong type are in plain Python."""


class TaskInputError(DockerTaskError, TypeError):
    """An argument is missing, unknown, or of the wrong type; raised before any container starts."""


class TaskOutputError(DockerTaskError, TypeError):
    """The task returned a value that does not match its return annotation, or one this host
    cannot load (its class exists only in the image): then ``raw_result`` holds the pickled value,
    so it can be loaded once the missing package is installed, without running the task again."""

    def __init__(self, message: str, *, raw_result: bytes | None = None) -> None:
        super().__init__(message)
        self.raw_result = raw_result


class TaskTimeoutError(DockerTaskError, TimeoutError):
    """The task ran longer than its ``timeout``; its container was killed and removed."""


class TaskOOMError(DockerTaskError, MemoryError):
    """The task's container was killed by the kernel for exceeding its memory limit."""


class TaskFailedError(DockerTaskError):
    """The task failed and its own exception could not be re-raised on the host.

    ``type_name``, ``message`` and ``remote_traceback`` carry what the container reported;
    ``exit_code`` and ``logs_tail`` are set when the container died without a result.
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str = "",
        remote_traceback: str = "",
        exit_code: int | None = None,
        logs_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        self.exit_code = exit_code
        self.logs_tail = logs_tail


class TaskInterruptedError(TaskFailedError):
    """The container was stopped or killed from outside dockertask (e.g. preemption)."""


class PythonVersionError(DockerTaskError):
    """The image has no Python, or one whose major.minor differs from the host's."""


class ImageResolutionError(DockerTaskError, ValueError):
    """A ``container_image`` template names an image that is not configured."""


class ImageNotFoundError(DockerTaskError):
    """The image is not on the engine and could not be pulled."""


class ImageBuildError(DockerTaskError):
    """An image build failed; ``log_tail`` holds the last lines of the build log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- build log (tail) ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


class SecretNotFoundError(DockerTaskError, KeyError):
    """A requested secret has no value on the host."""

    def __str__(self) -> str:  # KeyError quotes its argument; a sentence reads better
        return str(self.args[0]) if self.args else ""


class ResourceSpecError(DockerTaskError, ValueError):
    """A ``Resources`` field has a value that cannot be parsed."""


class UnsupportedResourceError(DockerTaskError):
    """The Docker engine cannot enforce a requested resource (e.g. storage size on extfs)."""


class DockerUnavailableError(DockerTaskError):
    """No Docker engine could be reached."""


class TaskSchedulingError(DockerTaskError):
    """No node of the Swarm cluster took the task (its requests fit no node) within the wait."""


class NonRecoverableError(DockerTaskError):
    """Derive a task's own exception from this to say that another attempt cannot help: it is raised at
    once, whatever ``retries`` allows (a bad input file, a refused credential). Under the one root, like
    every exception dockertask exports."""


class MapTaskError(DockerTaskError):
    """Fewer items of a ``map_task`` succeeded than its ``min_success_ratio`` asks.

    ``failures`` maps each failed item's index to its exception; ``results`` is the list in input
    order, with ``None`` where an item failed."""

    def __init__(self, message: str, *, failures: dict[int, BaseException], results: list[object]) -> None:
        super().__init__(message)
        self.failures = failures
        self.results = results


class RemoteTraceback(Exception):
    """The container's traceback, attached as ``__cause__`` of a re-raised task exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n--- traceback in the container ---\n" + self.tb
