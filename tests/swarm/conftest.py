"""The Swarm test cluster (session-scoped) and a check that no test leaves anything on any node.

Tests here run real tasks on a real 3-node Swarm with a real registry (cluster.py). They are marked
``docker`` and ``swarm``; CI runs them. DOCKER_HOST is never changed for the session: the Swarm
backend is given the manager's engine directly, so the host engine's own checks stay on the host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from . import cluster as cluster_mod


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[cluster_mod.Cluster]:
    from dockertask.backends.docker import NETWORK_LABEL, DockerBackend
    from dockertask.host import owner
    from dockertask.images import refs

    refs.build_default_image(DockerBackend())  # what a first call would build: loaded into the manager
    made, network, containers = cluster_mod.start({NETWORK_LABEL: "swarm-test", **owner.owner_labels()},
                                                  [refs.default_image_ref()])
    try:
        yield made
    finally:
        cluster_mod.stop(network, containers)


def make_backend(c: cluster_mod.Cluster, **overrides: Any) -> Any:
    import docker

    from dockertask.backends.docker import DockerBackend
    from dockertask.backends.swarm import SwarmBackend
    from dockertask.config import Settings

    settings = Settings(**{"backend": "swarm", "registry": c.registry, "callback_address": c.gateway, **overrides})
    return SwarmBackend(settings, DockerBackend(docker.APIClient(base_url=c.manager_url, version="auto",
                                                                 timeout=60)))


@pytest.fixture(scope="session")
def swarm_backend(swarm_cluster: cluster_mod.Cluster) -> Iterator[Any]:
    backend = make_backend(swarm_cluster)
    yield backend
    backend.close()


def leftovers(c: cluster_mod.Cluster) -> dict[str, list[str]]:
    """This session's services and secrets on the manager, and its containers on every node."""
    from ..conftest import SESSION, SESSION_LABEL

    mine = f"{SESSION_LABEL}={SESSION}"
    manager = c.engine("manager")
    found = {"services": [s["Spec"]["Name"] for s in manager.services(filters={"label": mine})],
             "secrets": [s["Spec"]["Name"] for s in manager.secrets(filters={"label": mine})]}
    for name in c.node_urls:
        found[name] = [x["Id"][:12] for x in c.engine(name).containers(all=True, filters={"label": mine})]
    return {k: v for k, v in found.items() if v}


@pytest.fixture(autouse=True)
def on_swarm(swarm_cluster: cluster_mod.Cluster, swarm_backend: Any) -> Iterator[Any]:
    """Every task called in the test runs on the cluster; afterwards nothing of it is left on any node
    (a container a node is still removing gets a few seconds). Unclaimed spares (services made ahead for a
    next call) go first, as they would at the process's exit."""
    import time

    from dockertask import backends
    from dockertask.calls import spares

    backends.set_default_backend(swarm_backend)
    try:
        yield swarm_backend
    finally:
        spares.SPARES.reset()
        backends.set_default_backend(None)
    deadline = time.monotonic() + 15
    while (left := leftovers(swarm_cluster)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"left behind on the cluster: {json.dumps(left)}"
