"""Integration fixtures: a real engine, and a check that no test leaves a container behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _leftovers() -> list[str]:
    import docker

    api = docker.APIClient(version="auto")
    return [c["Id"][:12] for c in api.containers(all=True, filters={"label": "dockertask.run-id"})]


@pytest.fixture(autouse=True)
def no_leftover_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every integration test, no container labelled dockertask.run-id may remain."""
    yield
    try:
        left = _leftovers()
    except Exception:
        return
    assert not left, f"containers left behind: {left}"


@pytest.fixture(scope="session")
def api():  # type: ignore[no-untyped-def]
    import docker

    return docker.APIClient(version="auto")
