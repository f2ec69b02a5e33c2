"""Integration fixtures: a real engine, and a check that no test leaves a container behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _leftovers() -> list[str]:
    """This session's task containers still on the engine (other users of the engine are not ours)."""
    from dockertask.backends.discovery import api_client

    from ..conftest import SESSION, SESSION_LABEL

    api = api_client()
    return [c["Id"][:12] for c in api.containers(all=True, filters={"label": ["dockertask.run-id",
                                                                             f"{SESSION_LABEL}={SESSION}"]})]


@pytest.fixture(autouse=True)
def no_leftover_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every integration test, no task container of this session may remain. Unclaimed spares
    (containers made ahead for a next call) go first, as they would at the process's exit; that exit
    itself is tested in test_spares."""
    yield
    from dockertask import spares

    spares.SPARES.reset()
    try:
        left = _leftovers()
    except Exception:
        return
    assert not left, f"containers left behind: {left}"


@pytest.fixture(scope="session")
def api():  # type: ignore[no-untyped-def]
    from dockertask.backends.discovery import api_client

    return api_client()
