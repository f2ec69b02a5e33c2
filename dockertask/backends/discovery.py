"""Where the Docker engine is, and how we know: the way the ``docker`` CLI finds it.

1. ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` / ``DOCKER_CERT_PATH``), as docker-py reads it;
2. the active ``docker context`` (``DOCKER_CONTEXT``, else ``currentContext`` in the docker config),
   when it is not ``default``;
3. the system socket ``/var/run/docker.sock``;
4. the rootless engine's socket, ``$XDG_RUNTIME_DIR/docker.sock`` (``/run/user/<uid>/docker.sock``).

``ssh://`` hosts need paramiko (``pip install 'dockertask[ssh]'``). ``doctor`` prints ``how``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.context import ContextAPI
from docker.context.config import get_current_context_name
from docker.errors import DockerException

from dockertask.errors import DockerUnavailableError, TaskDefinitionError

SYSTEM_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class EngineLocation:
    base_url: str
    how: str  # e.g. "DOCKER_HOST", "docker context 'remote'", "the rootless engine's socket"
    client_kwargs: dict[str, Any] = field(default_factory=dict)  # APIClient base_url / tls


def _rootless_socket(environ: Mapping[str, str]) -> str:
    runtime = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return os.path.join(runtime, "docker.sock")


def locate(environ: Mapping[str, str] | None = None, system_socket: str = SYSTEM_SOCKET) -> EngineLocation:
    env = os.environ if environ is None else environ
    try:
        if env.get("DOCKER_HOST"):
            kwargs = docker.utils.kwargs_from_env(environment=env)
            found = EngineLocation(str(kwargs["base_url"]), "DOCKER_HOST", kwargs)
        else:
            name = env.get("DOCKER_CONTEXT") or get_current_context_name()
            if name and name != "default":
                kwargs = ContextAPI.kwargs_from_context(name=name, environment=env)
                if not kwargs:
                    source = "DOCKER_CONTEXT" if env.get("DOCKER_CONTEXT") else "the docker config"
                    raise DockerUnavailableError(
                        f"docker context {name!r} (from {source}) does not exist or has no Docker endpoint; "
                        "`docker context ls` lists them")
                found = EngineLocation(str(kwargs["base_url"]), f"docker context {name!r}", kwargs)
            elif not os.path.exists(system_socket) and os.path.exists(rootless := _rootless_socket(env)):
                found = EngineLocation(f"unix://{rootless}", "the rootless engine's socket",
                                       {"base_url": f"unix://{rootless}"})
            else:
                found = EngineLocation(f"unix://{system_socket}", "the default socket",
                                       {"base_url": f"unix://{system_socket}"})
    except DockerException as exc:
        raise DockerUnavailableError(f"the Docker engine's address cannot be worked out: {exc}") from None
    try:
        docker.utils.parse_host(found.base_url)  # what the client does first, with a bare ValueError
    except (DockerException, ValueError) as exc:
        raise TaskDefinitionError(f"{'DOCKER_HOST' if found.how == 'DOCKER_HOST' else found.how}="
                                  f"{found.base_url!r} is not an engine address ({exc}); expected unix:///PATH, "
                                  "tcp://HOST:PORT or ssh://USER@HOST") from None
    if found.base_url.startswith("ssh://"):
        try:
            import paramiko  # type: ignore[import-untyped]  # noqa: F401  # docker-py's ssh transport
        except ModuleNotFoundError:
            raise DockerUnavailableError(
                f"{found.how} is {found.base_url}, an ssh:// engine, which needs paramiko: "
                "pip install 'dockertask[ssh]'") from None
    return found


def api_client(**kwargs: Any) -> docker.APIClient:
    """A docker SDK low-level client for the engine dockertask itself finds (``DOCKER_HOST``, context,
    socket), for tests and benchmarks that look at the engine beside it: ``docker.APIClient()`` alone
    always opens /var/run/docker.sock, whatever DOCKER_HOST says."""
    return docker.APIClient(version="auto", **{**locate().client_kwargs, **kwargs})
