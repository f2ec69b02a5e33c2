"""Integration fixtures: a real engine, and a check that no test leaves a container behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def _leftovers() -> list[str]:
    """This session's task containers still on the engine (other users of the engine are not ours)."""
    from dockertask.backends.discovery import api_client

    from ..conftest import SESSION, SESSION_LABEL

    api = api_client()
    return [c["Id"] for c in api.containers(all=True, filters={"label": ["dockertask.run-id",
                                                                        f"{SESSION_LABEL}={SESSION}"]})]


def with_env(api: Any, containers: list[dict[str, Any]], entry: str) -> list[dict[str, Any]]:
    """The containers whose environment holds ``entry`` ("MARK=..."). One removed between the listing and
    its inspection (the engine is shared: another test's, another session's) is not one of them."""
    from docker.errors import NotFound

    found = []
    for c in containers:
        try:
            env = api.inspect_container(c["Id"])["Config"]["Env"] or []
        except NotFound:
            continue
        if entry in env:
            found.append(c)
    return found


def remove_container(api: Any, cid: str) -> None:
    """Remove a container a test made or found, the way dockertask does: Podman refuses a forced removal of a
    container that stops meanwhile ("container state improper: stopped") and takes it a moment later."""
    from dockertask.backends.docker import DockerBackend

    DockerBackend(api)._remove(cid)


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
    if left:
        # The test that left them fails; they go now, so that the tests after it are judged on their own.
        from dockertask.backends.discovery import api_client

        for cid in left:
            remove_container(api_client(), cid)
    assert not left, f"containers left behind: {[cid[:12] for cid in left]}"


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

    session = dict(item.split("=", 1) for item in os.environ.get("DOCKERTASK_LABELS", "").split(",")
                   if "=" in item).get("dockertask.user.test-session")

    def ours(image: dict[str, Any]) -> bool:
        tags = image.get("RepoTags") or []
        # Anything labelled with this session (Podman leaves the suite build's untagged image: 141 MB a run).
        if session and (image.get("Labels") or {}).get("dockertask.user.test-session") == session:
            return True
        # Podman keeps each build step's image (labelled like the result); Docker's are not listed.
        spec = (image.get("Labels") or {}).get("dockertask.imagespec", "")
        # Suite images (pytest --dockertask-image) of the projects the tests generated: one per project.
        return spec.startswith("dockertask-test") or any("dockertask-test" in t or "dockertask-suite" in t
                                                         for t in tags)

    for _ in range(3):  # a step's image goes once the image made on it has gone
        left = [i["Id"] for i in api.images(all=True) if i["Id"] not in before and ours(i)]
        for image_id in left:
            try:
                api.remove_image(image_id, force=True)
            except Exception:
                pass
        if not left:
            break
