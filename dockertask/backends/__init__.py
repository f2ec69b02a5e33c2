"""Container backends. ``base`` defines what the runner needs; ``docker`` implements it.

Only ``backends/docker.py`` imports the docker SDK, so importing dockertask never needs an
engine, and another backend (e.g. Docker Swarm services) can be dropped in behind ``Backend``.
"""

from __future__ import annotations

import os
import threading

from dockertask.backends.base import Backend, ContainerJob, ContainerOutcome

__all__ = ["Backend", "ContainerJob", "ContainerOutcome", "default_backend", "set_default_backend"]

_default: Backend | None = None
_default_generation = 0  # config.generation() when _default was chosen
_lock = threading.Lock()


def _forget_in_child() -> None:
    """A forked child must not share the parent's engine connections (their sockets are the same in both:
    answers go to whichever reads first): it connects anew on its first call."""
    global _default, _lock
    _default, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def default_backend() -> Backend:
    """The process-wide backend (``config.settings().backend``), connected on first use (never at import)."""
    global _default, _default_generation
    from dockertask.config import generation, settings

    with _lock:
        if _default is not None and _default_generation != generation():
            _default = None  # configure() ran since: connect to what it says
        if _default is None:
            try:
                from dockertask.backends.docker import DockerBackend
            except ModuleNotFoundError as exc:
                from dockertask.errors import DockerUnavailableError
                from dockertask.spec.context import current_context

                where = ("inside a task's container: call the other task from the host, or use "
                         "t.local(...)" if current_context().in_container else "here: pip install docker")
                raise DockerUnavailableError(f"the docker SDK cannot be imported ({exc}) {where}") from None
            chosen = settings()
            if chosen.backend == "swarm":
                from dockertask.backends.swarm import client_for

                _default = client_for(chosen)
            else:
                _default = DockerBackend()
            _default_generation = generation()
        return _default


def set_default_backend(backend: Backend | None) -> None:
    """Swap the backend (tests use a fake one); ``None`` goes back to Docker on next use."""
    global _default, _default_generation
    from dockertask.config import generation

    with _lock:
        _default = backend
        _default_generation = generation()
