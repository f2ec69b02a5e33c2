"""A real 3-node Docker Swarm and a registry, built on this machine for the tests and benches.

Each node is a Docker-in-Docker container (never a second dockerd on the host's own network
namespace), started through testcontainers on a private bridge network, with the options that
work under this sandbox (see DESIGN.md, "This machine"). The node image is Debian's docker.io
and docker-registry on dockertask's own Debian base, so nothing is pulled from a registry.

The network carries dockertask's network label and this process's owner labels: if the process
is killed, ``dockertask gc`` removes the network with every node on it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

HERE = Path(__file__).resolve().parent
NODE_FILES = ("node.Dockerfile", "node-entrypoint.sh", "registry.yml")
REGISTRY = "registry:5000"  # the registry's alias on the cluster's network, as nodes and manager see it
NODE_HOST_CONFIG: dict[str, Any] = {
    # What a nested dockerd needs here without --privileged (CAP_SYS_RESOURCE cannot be granted).
    # `--security-opt systempaths=unconfined` is the CLI's word for empty MaskedPaths/ReadonlyPaths: the
    # API takes only the latter, which is why nodes are created here rather than through testcontainers.
    "CapAdd": ["ALL"], "CapDrop": ["SYS_RESOURCE"],
    "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"], "MaskedPaths": [], "ReadonlyPaths": [],
    "DeviceCgroupRules": ["a *:* rwm"], "CgroupnsMode": "private",
    "Tmpfs": {"/run": ""},
    # /var/lib/docker on an anonymous volume: overlay2 cannot stack on the container's own overlay.
    "Mounts": [{"Type": "volume", "Target": "/var/lib/docker"}],
}


@dataclass
class Cluster:
    network: str
    gateway: str  # this host's address on the cluster's network: the callback address
    manager_url: str
    node_urls: dict[str, str]  # node name → its engine's API (manager included)
    registry: str = REGISTRY
    registry_url: str = ""  # the registry's HTTP API as this host reaches it (by IP: the alias is the network's)
    node_containers: dict[str, str] = field(default_factory=dict)  # node name → its container on this host

    def engine(self, name: str) -> docker.APIClient:
        return docker.APIClient(base_url=self.node_urls[name], version="auto", timeout=60)

    def on_node(self, name: str, *command: str) -> str:
        """Run ``command`` in the node's own container (as root: iptables, ...); its output. Fails loudly."""
        host = docker.APIClient(version="auto", timeout=60)
        exec_id = host.exec_create(self.node_containers[name], list(command))["Id"]
        out = host.exec_start(exec_id).decode(errors="replace")
        code = host.exec_inspect(exec_id)["ExitCode"]
        if code != 0:
            raise RuntimeError(f"{command} on {name} exited {code}: {out}")
        return out


def node_image(api: docker.APIClient, base: str) -> str:
    """The node image on ``base`` (the default image), built once per version of its files (about 20 s)."""
    digest = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in NODE_FILES) + base.encode()).hexdigest()[:12]
    tag = f"dockertask-swarm-node:{digest}"
    if api.images(name=tag):
        return tag
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for f in NODE_FILES:
            tar.add(str(HERE / f), arcname=f)
    for chunk in api.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, tag=tag, rm=True,
                           forcerm=True, dockerfile="node.Dockerfile", network_mode="host", decode=True,
                           buildargs={"BASE": base}):
        if "error" in chunk:
            raise RuntimeError(f"building {tag} failed: {chunk['error']}")
    return tag


def _wait_engine(url: str, seconds: float = 90) -> docker.APIClient:
    deadline = time.monotonic() + seconds
    while True:
        try:
            api = docker.APIClient(base_url=url, version="auto", timeout=60)
            api.ping()
            return api
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start(labels: dict[str, str], images: list[str], workers: int = 2) -> tuple[Cluster, Any, list[Any]]:
    """Start the registry and the nodes, form the Swarm, load ``images`` into the manager's engine (the
    first, the default image, is also what the node image is built on).
    Returns the cluster, its testcontainers Network and containers (for ``stop``)."""
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    host = docker.APIClient(version="auto", timeout=300)
    testcontainers_config.ryuk_disabled = True  # its image cannot be pulled here; the network label stands in
    image = node_image(host, images[0])
    network = Network(docker_network_kw={"labels": labels})
    network.create()
    containers: list[Any] = []
    try:
        registry = (DockerContainer(image).with_network(network).with_network_aliases("registry")
                    .with_command("registry").with_kwargs(labels=labels))
        registry.start()
        containers.append(registry)
        names = ["manager"] + [f"worker{i}" for i in range(1, workers + 1)]
        for name in names:
            config = host.create_container_config(
                image, ["--insecure-registry", REGISTRY], hostname=name, labels=labels,
                host_config={**host.create_host_config(network_mode=network.name), **NODE_HOST_CONFIG},
                networking_config=host.create_networking_config(
                    {network.name: host.create_endpoint_config(aliases=[name])}))
            cid = host.create_container_from_config(config, f"dockertask-swarm-{name}-{network.name[-8:]}")["Id"]
            containers.append(cid)
            host.start(cid)
        net = host.inspect_network(network.name)
        gateway = net["IPAM"]["Config"][0]["Gateway"]
        ips = {}
        for name, cid in zip(names, containers[1:], strict=False):
            info = host.inspect_container(cid)
            ips[name] = info["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        urls = {name: f"tcp://{ip}:2375" for name, ip in ips.items()}
        engines = {name: _wait_engine(url) for name, url in urls.items()}
        manager = engines["manager"]
        manager.init_swarm(advertise_addr=ips["manager"], listen_addr=f"{ips['manager']}:2377")
        token = manager.inspect_swarm()["JoinTokens"]["Worker"]
        for name in names[1:]:
            engines[name].join_swarm([f"{ips['manager']}:2377"], token, listen_addr=f"{ips[name]}:2377")
        deadline = time.monotonic() + 60
        while sum(n["Status"]["State"] == "ready" for n in manager.nodes()) < len(names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Swarm did not form: {manager.nodes()}")
            time.sleep(0.3)
        for ref in images:  # as `docker save | docker load`: the manager builds nothing we already have
            manager.load_image(host.get_image(ref))
        reg = host.inspect_container(registry.get_wrapped_container().id)
        reg_ip = reg["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        cluster = Cluster(network.name, gateway, urls["manager"], urls, registry_url=f"http://{reg_ip}:5000",
                          node_containers=dict(zip(names, containers[1:], strict=True)))
        return cluster, network, containers
    except BaseException:
        stop(network, containers)
        raise


def stop(network: Any, containers: list[Any]) -> None:
    """Remove the nodes (with their /var/lib/docker volumes) and the network."""
    host = docker.APIClient(version="auto", timeout=120)
    for c in containers:
        try:
            host.remove_container(c if isinstance(c, str) else c.get_wrapped_container().id, force=True, v=True)
        except Exception:
            pass
    try:
        network.remove()
    except Exception:
        pass
