from __future__ import annotations

import os
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


@pytest.fixture(autouse=True, scope="package")  # the unit tests only: ended before the integration tests
def _subprocess_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that run the real bootstrap in a local interpreter: it makes its run directory (the runtime
    zip) under $TMPDIR, which in a container goes with the container, but here stayed in the host's /tmp,
    one directory of ~0.8 MB per run. Their subprocesses get a directory of pytest's instead (pytest keeps
    the last three sessions')."""
    import tempfile

    before, cached = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("subprocesses"))
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = cached  # what this process found before, if it looked: not the directory above


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
