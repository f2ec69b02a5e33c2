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
    from dockertask.calls import spares

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


@pytest.fixture(scope="session", autouse=True)
def remove_test_images() -> Iterator[None]:
    """Images this session's tests built (named dockertask-test...) go at its end: an ImageSpec that copies a
    temporary file has a new tag every run, and 200 MB a run would fill CI's disk."""
    from dockertask.backends.discovery import api_client

    try:
        api = api_client()
        before = {i["Id"] for i in api.images(all=True)}
    except Exception:  # no engine: the tests say so themselves
        yield
        return
    yield
    for image in api.images():
        tags = image.get("RepoTags") or []
        # Suite images (pytest --dockertask-image) of the projects the tests generated: one per project.
        if image["Id"] not in before and any("dockertask-test" in t or "dockertask-suite" in t for t in tags):
            try:
                api.remove_image(image["Id"], force=True)
            except Exception:
                pass
