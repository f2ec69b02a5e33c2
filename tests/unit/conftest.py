from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockertask.backends import set_default_backend
from dockertask.calls import executors

from ..fakes import FakeBackend, InProcessBackend, SpareBackend


def _installed(backend: FakeBackend) -> Iterator[FakeBackend]:
    """Make ``backend`` the default for one test, with no image remembered from another."""
    set_default_backend(backend)  # type: ignore[arg-type]
    executors._ensured.clear()
    yield backend
    set_default_backend(None)
    executors._ensured.clear()


@pytest.fixture
def fake() -> Iterator[FakeBackend]:
    """Install a fresh FakeBackend as the default backend for the test."""
    yield from _installed(FakeBackend())


@pytest.fixture
def inproc() -> Iterator[InProcessBackend]:
    """A backend that runs each call in this process: map/submit policy without an engine."""
    backend = InProcessBackend()
    yield from _installed(backend)  # type: ignore[misc]


@pytest.fixture
def spare_backend() -> Iterator[SpareBackend]:
    """A backend that prepares containers ahead; the process's spares start (and end) empty."""
    from dockertask.calls import spares

    spares.SPARES.reset()
    backend = SpareBackend()
    yield from _installed(backend)  # type: ignore[misc]
    spares.SPARES.reset()
