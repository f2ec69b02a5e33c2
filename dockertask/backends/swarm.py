"""The Docker Swarm backend: each attempt is a one-task service, placed by its requests.

    refuse what a service cannot enforce → publish the image (push to the registry, run by digest)
    → a one-time token as a Swarm secret → create the service (restart: never) → wait for the task
    to be scheduled (bounded) and to connect back → send the call → relay output → wait (timeout
    from the connection) → result → remove service and secret (finally)

The call, its secrets and its result travel over the callback connection (``callback.py``,
``connector.py``): no bind mount, no payload in a spec, env var or log. Everything else — the
bootstrap and its frames — is exactly what runs on one engine. Images are built and kept on the
manager's engine (``DOCKER_HOST``), which pushes them for the nodes.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import ContainerSpec, Mount, Resources, RestartPolicy, SecretReference, TaskTemplate

from dockertask.backends import callback, engine_config
from dockertask.backends.base import ContainerJob, ContainerOutcome, ImageInfo, OutputSink, Removed
from dockertask.backends.docker import DockerBackend
from dockertask.backends.streams import Pump
from dockertask.backends.swarm_replica import SwarmWorker
from dockertask.config import Settings
from dockertask.errors import (
    DockerTaskError,
    DockerUnavailableError,
    ImageNotFoundError,
    ImageResolutionError,
    TaskSchedulingError,
    UnsupportedResourceError,
)
from dockertask.host import lifecycle
from dockertask.images.refs import split_ref
from dockertask.runtime import protocol
from dockertask.spec.resources import limit_of
from dockertask.spec.secrets import SECRETS_MOUNT

log = logging.getLogger("dockertask")

LABEL_RUN_ID = "dockertask.run-id"
TOKEN_PATH = "/run/secrets/dockertask-token"
# Exit codes of the connector (see connector.py) before the call ran.
_UNREACHABLE, _NOT_THE_HOST, _NO_TOKEN = 97, 98, 99
_PENDING = ("new", "allocated", "pending")
_ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")
CONNECT_GRACE = 40.0  # a running task that has not connected by then never will (its relay gives up at 20 s)
# What a call whose connection ended without an exit record says (it is treated as a preemption).
LOST = ("dockertask: the connection to the task's container ended without its exit status: the container "
        "was killed, or its node went down or became unreachable from this host")
SPARE_WAIT = 30.0  # a spare not connected by then is given up (and no more are made for its configuration)
RETRY_EVERY = 5.0  # seconds between tries at removing what a manager outage left (see _release)
PREPARE_LIMIT = 900.0  # pulling an image: slow registries happen, a hang must still end


def refusal(job: ContainerJob) -> str | None:
    """Why a service cannot run ``job`` as asked (checked before anything is created), or None."""
    res, opt = job.resources, job.options
    for label, r in (("limits", res.limits), ("requests", res.requests)):
        if r is not None and r.gpu_count:
            return f"{label}.gpu: the Swarm backend cannot give a task a GPU (services have no device requests)"
        if r is not None and r.storage_bytes is not None:
            return f"{label}.ephemeral_storage: a Swarm service cannot limit its container's disk"
    if opt.devices:
        return f"Docker(devices={list(opt.devices)!r}): a Swarm service cannot be given host devices"
    if opt.platform is not None:
        return f"Docker(platform={opt.platform!r}): choose the nodes by image architecture, not per task, on Swarm"
    if opt.network in ("none", "host", "bridge"):
        return (f"Docker(network={opt.network!r}): a Swarm task reaches the host over the network; use an "
                "attachable overlay network, or no network option")
    for bind in opt.binds:
        source = bind.split(":", 1)[0]
        if source.startswith("/"):
            return (f"Docker(volumes=[{bind!r}]): a host path would be whichever node's disk the task lands on; "
                    "pass data as File/Directory arguments, or use a named volume ('volume:NAME:/path')")
    if opt.host_config or opt.create:
        return (f"task_config raw engine settings {sorted({**opt.host_config, **opt.create})}: "
                "only the single-engine backend can apply them")
    return None


class SwarmBackend:
    """Runs jobs as services of the Swarm whose manager DOCKER_HOST names."""

    makes_spares = True  # as services started and connected ahead, waiting for their call (see prepare)

    def __init__(self, settings: Settings, engine: DockerBackend | None = None) -> None:
        for name, value in (("registry", settings.registry), ("callback_address", settings.callback_address)):
            if not value:
                env = "DOCKERTASK_SWARM_REGISTRY" if name == "registry" else "DOCKERTASK_SWARM_CALLBACK"
                raise DockerUnavailableError(
                    f"backend='swarm' needs {name}: set it in [tool.dockertask.swarm], {env}, or "
                    f"dockertask.configure({name}=...)")
        self.settings = settings
        self.engine = engine or DockerBackend()  # the manager's engine: images are built and kept there
        self.api = self.engine.api
        swarm = self.engine_info().get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            raise DockerUnavailableError(
                f"backend='swarm': the engine at {self.engine._engine()} is not a Swarm manager "
                f"(swarm state {swarm.get('LocalNodeState', 'unknown')!r}); point DOCKER_HOST at a manager node")
        self._published: dict[str, tuple[str, str]] = {}  # image ref → (image id, registry ref by digest)
        self._publish_lock = threading.Lock()
        self._unremoved: list[tuple[str, str]] = []  # ("service" | "secret", id) the manager could not remove
        self._unremoved_lock = threading.Lock()  # and the two below
        self._retrier: threading.Thread | None = None
        self._warns_at_exit = False
        self._server: callback.CallbackServer | None = None  # listening from the first call on
        self._server_lock = threading.Lock()

    def server(self) -> callback.CallbackServer:
        with self._server_lock:
            if self._server is None:
                assert self.settings.callback_address is not None
                self._server = callback.CallbackServer(self.settings.callback_address)
            return self._server

    def close(self) -> None:
        """Stop the callback listener (tests make several backends in one process)."""
        with self._server_lock:
            if self._server is not None:
                self._server.close()
                self._server = None

    # -- running -------------------------------------------------------------------------

    def run(self, job: ContainerJob, on_output: OutputSink, prepared: Any = None) -> ContainerOutcome:
        launched = prepared if isinstance(prepared, _Launched) else None
        if launched is not None and not launched.call.idle_and_open():
            self._release(launched)  # the spare died while it waited (its node went away): start afresh
            launched = None
        image = None  # set when this call launches its own service, which it must then wait for
        if launched is None:
            image = self._checked_image(job)
            launched = self._launch(job, image)
        try:
            if image is not None:
                early = self._await_connection(job, launched.call, launched.service_id, image)
                if early is not None:
                    return early
            return self._converse(job, launched.call, launched.service_id, on_output)
        finally:
            self._release(launched)

    def open_worker(self, job: ContainerJob, on_output: OutputSink) -> SwarmWorker:
        """A reusable replica: a long-lived one-task service whose callback connection stays open, carrying
        the serve-mode bootstrap's frames exactly as a replica's attach stream does on one engine."""
        launched = self._connected(job, "replica")
        return SwarmWorker(launched.service_id, launched.call, job, on_output, lambda: self._release(launched))

    def _connected(self, job: ContainerJob, what: str, limit: float | None = None) -> _Launched:
        """A service for ``job`` that is running and connected back, waiting for what is sent to it (a replica,
        a spare); released, and an error raised, if it ends first or does not connect within ``limit`` s."""
        image = self._checked_image(job)
        launched = self._launch(job, image)
        try:
            early = self._await_connection(job, launched.call, launched.service_id, image, limit)
            if early is not None:
                raise DockerTaskError(
                    f"task {job.labels.get('dockertask.task', '?')}: its {what} ended before it connected "
                    f"(exit code {early.exit_code}){': ' + early.logs_tail if early.logs_tail else ''}")
            return launched
        except BaseException:
            self._release(launched)
            raise

    def _checked_image(self, job: ContainerJob) -> str:
        why = refusal(job)
        if why is not None:
            raise UnsupportedResourceError(why)
        return self.publish(job.image)

    def _launch(self, job: ContainerJob, image: str) -> _Launched:
        """The call's token secret and its service, created; released by ``_release`` whatever follows."""
        server = self.server()
        call = server.expect()
        suffix = f"{job.labels.get(LABEL_RUN_ID, 'x')}-{job.labels.get('dockertask.attempt', '1')}"
        launched = _Launched(server, call)
        try:
            launched.secret_id = str(self._api(lambda: self.api.create_secret(
                f"dockertask-token-{suffix}", call.token, labels=job.labels)["ID"], job))
            launched.service_id = str(self._api(lambda: self.api.create_service(
                self._template(job, image, server, str(launched.secret_id), suffix), name=f"dockertask-{suffix}",
                labels=job.labels)["ID"], job))
            lifecycle.add(launched.service_id, self.kill_all)
        except BaseException:
            self._release(launched)
            raise
        return launched

    def _release(self, launched: _Launched) -> None:
        """Hang up, then remove the service and its secret; never raises. What the manager could not be
        asked to remove (it was down or unreachable) is tried again every RETRY_EVERY seconds in the
        background, and at once after the next release that reaches it."""
        launched.server.forget(launched.call)
        launched.call.hang_up()
        gone = True
        if launched.service_id:
            gone = self._remove_service(launched.service_id)
            lifecycle.discard(launched.service_id)
        if launched.secret_id:
            gone = self._remove_secret(launched.secret_id) and gone
        if gone:
            self._retry_unremoved()

    def _keep_unremoved(self, kind: str, object_id: str) -> None:
        with self._unremoved_lock:
            self._unremoved.append((kind, object_id))
            if self._retrier is None:
                if not self._warns_at_exit:
                    atexit.register(self._warn_unremoved)
                    self._warns_at_exit = True
                self._retrier = threading.Thread(target=self._retry_until_done, name="dockertask-swarm-cleanup",
                                                 daemon=True)
                self._retrier.start()

    def _retry_until_done(self) -> None:
        while True:
            time.sleep(RETRY_EVERY)
            self._retry_unremoved()
            with self._unremoved_lock:
                if not self._unremoved:
                    self._retrier = None
                    return

    def _retry_unremoved(self) -> None:
        with self._unremoved_lock:
            if not self._unremoved:
                return
            items, self._unremoved = self._unremoved, []
        for kind, object_id in sorted(items, key=lambda item: item[0] != "service"):  # a secret is in use until
            (self._remove_service if kind == "service" else self._remove_secret)(object_id)  # its service goes

    def _warn_unremoved(self) -> None:
        if self._unremoved:
            log.warning("dockertask: %d Swarm service(s) and secret(s) of this process could not be removed: the "
                        "manager at %s did not answer; `dockertask gc` removes them now that this process has ended",
                        len(self._unremoved), self.engine._engine())

    def _template(self, job: ContainerJob, image: str, server: callback.CallbackServer, secret_id: str,
                  suffix: str) -> TaskTemplate:
        res, opt = job.resources, job.options
        req = res.requests
        cpu_limit = limit_of(req, res.limits, "cpu_cores")
        cpu_reservation, mem_reservation = _reservation(job)
        resources = Resources(
            cpu_limit=int(cpu_limit * 1e9) if cpu_limit is not None else None,
            mem_limit=limit_of(req, res.limits, "mem_bytes"), cpu_reservation=cpu_reservation,
            mem_reservation=mem_reservation)
        if opt.effective_pids_limit:
            resources.setdefault("Limits", {})["Pids"] = opt.effective_pids_limit
        mounts = []
        if res.secrets_mib:
            mounts.append(Mount(SECRETS_MOUNT, None, type="tmpfs", tmpfs_size=res.secrets_mib << 20, tmpfs_mode=0o1777))
        if opt.shm_bytes is not None:
            mounts.append(Mount("/dev/shm", None, type="tmpfs", tmpfs_size=opt.shm_bytes, tmpfs_mode=0o1777))
        for bind in opt.binds:  # named volumes only (refusal() turned host paths away)
            source, target, *mode = bind.split(":")
            mounts.append(Mount(target, source, type="volume", read_only="ro" in (mode[0] if mode else "")))
        env = {**job.environment, **engine_config.WATCH_CALL,
               # Swarm fills the template in on the node that runs the task: the run record's "node"
               "DOCKERTASK_NODE": "{{.Node.Hostname}}",
               "DOCKERTASK_CALLBACK": server.address, "DOCKERTASK_CALLBACK_PIN": server.pin,
               "DOCKERTASK_TOKEN_FILE": TOKEN_PATH,
               "DOCKERTASK_CONNECT_TIMEOUT": os.environ.get("DOCKERTASK_SWARM_CONNECT_TIMEOUT", "20")}
        spec = ContainerSpec(
            image, command=["python3", "-c", _connector_source(), protocol.LOADER],
            env=env, labels=job.labels, mounts=mounts, user=opt.user, init=True,
            cap_add=list(opt.cap_add) or None, stop_grace_period=1_000_000_000,
            secrets=[SecretReference(secret_id, f"dockertask-token-{suffix}", filename="dockertask-token",
                                     uid="0", gid="0", mode=0o444)])
        return TaskTemplate(spec, resources=resources, restart_policy=RestartPolicy(condition="none"),
                            networks=[opt.network] if opt.network else None)

    def _await_connection(self, job: ContainerJob, call: callback.Call, service_id: str,
                          image: str, limit: float | None = None) -> ContainerOutcome | None:
        """Wait for the task to be scheduled, pull its image, start and connect back; None once it has.
        Errors a user can act on for a task no node takes, an image the nodes cannot pull, or a callback
        address they cannot reach; an outcome for a container that ended before it connected. ``limit``:
        seconds after which to stop waiting at all (a spare)."""
        task = job.labels.get("dockertask.task", "?")
        begun = time.monotonic()
        state_since = begun
        last_state = ""
        while not call.arrived.wait(0.25):
            if lifecycle.interrupted(job.since):
                return ContainerOutcome(container_id=service_id, exit_code=None, image=job.image, cancelled=True)
            if limit is not None and time.monotonic() - begun > limit:
                raise DockerTaskError(f"task {task}: its service did not connect within {limit:g} s")
            tasks = self._api(lambda: self.api.tasks(filters={"service": service_id}), job)
            if not tasks:
                continue
            status = tasks[0].get("Status") or {}
            state, err = str(status.get("State", "")), str(status.get("Err", ""))
            now = time.monotonic()
            if state != last_state:
                last_state, state_since = state, now
            if state in _PENDING and now - begun > self.settings.schedule_timeout:
                raise TaskSchedulingError(
                    f"task {task}: no node of the Swarm took it within {self.settings.schedule_timeout:g} s "
                    f"({err or state}); its requests {_describe(job)} fit no ready node. Lower them, add nodes, "
                    "or wait longer with DOCKERTASK_SWARM_SCHEDULE_TIMEOUT")
            if state in ("assigned", "accepted", "preparing") and now - state_since > PREPARE_LIMIT:
                raise ImageResolutionError(f"task {task}: its node has been pulling {image} for "
                                           f"{PREPARE_LIMIT:g} s; check that the nodes reach {self.settings.registry}")
            if state in ("running", "starting") and now - state_since > CONNECT_GRACE:
                raise self._unreachable(task, "it started but never connected back")
            if state in ("rejected", "failed") and not (status.get("ContainerStatus") or {}).get("ContainerID"):
                if any(w in err.lower() for w in ("no such image", "pull", "manifest", "not found")):
                    raise ImageResolutionError(
                        f"task {task}: the Swarm nodes could not pull {image} ({err}); check that every node "
                        f"reaches the registry {self.settings.registry} (a plain-HTTP registry must be in each "
                        "engine's insecure-registries)")
                raise DockerTaskError(f"task {task}: Swarm could not start its container: {err}")
            if state in _ENDED and not call.arrived.is_set():
                code = (status.get("ContainerStatus") or {}).get("ExitCode")
                if code == _UNREACHABLE:
                    raise self._unreachable(task, "it could not connect")
                if code == _NOT_THE_HOST:
                    raise self._unreachable(task, "something else answered at that address")
                if code == _NO_TOKEN:
                    raise DockerTaskError(f"task {task}: its container could not read its call token "
                                          f"({TOKEN_PATH}); Docker(user=...) must be able to read Swarm secrets")
                return ContainerOutcome(container_id=service_id, exit_code=code if isinstance(code, int) else None,
                                        image=job.image, logs_tail=err)
        return None

    def _unreachable(self, task: str, what: str) -> DockerUnavailableError:
        return DockerUnavailableError(
            f"task {task}: its container could not reach this host at {self.server().address} "
            f"({what}); set callback_address ([tool.dockertask.swarm], DOCKERTASK_SWARM_CALLBACK) to an address "
            "of this machine that the Swarm nodes' containers can connect to, and open that port")

    def _converse(self, job: ContainerJob, call: callback.Call, service_id: str,
                  on_output: OutputSink) -> ContainerOutcome:
        """The connected call: send stdin, relay output, wait (its timeout counts from here)."""
        pump = Pump(call.frames(), on_output)
        pump.start()
        sender = threading.Thread(target=self._send, args=(call, job), name="dockertask-stdin", daemon=True)
        sender.start()
        pump.join(job.timeout if job.timeout is not None else 1e9)
        timed_out = pump.alive()
        if timed_out:
            call.hang_up()  # the relay in the container kills the call
            self._remove_service(service_id)
            pump.join(30)
        record = call.exit_record
        cancelled = lifecycle.interrupted(job.since)
        tail = list(pump.tail)
        if record is None and not timed_out:  # the connection ended without an exit: stopped from outside
            code: int | None = 137
            tail.append(LOST)
        else:
            code = record
        return ContainerOutcome(
            container_id=service_id, exit_code=code, image=job.image, oom_killed=pump.control.oom_killed,
            timed_out=timed_out and not cancelled, cancelled=cancelled,
            result=None if timed_out else pump.control.result, logs_tail="\n".join(tail),
            archive=pump.control.take_archive())

    @staticmethod
    def _send(call: callback.Call, job: ContainerJob) -> None:
        try:
            call.send_stdin(job.stdin.take())
        except OSError:
            pass  # the container is gone: its exit (or the lack of one) says why

    def _api(self, fn: Callable[[], Any], job: ContainerJob) -> Any:
        try:
            return fn()
        except APIError as exc:
            raise DockerTaskError(f"task {job.labels.get('dockertask.task', '?')}: the Swarm manager refused: "
                                  f"{exc.explanation or exc}") from None
        except (requests.exceptions.RequestException, DockerException) as exc:
            raise self.engine._lost(exc, job, None) from None

    def _remove_service(self, service_id: str) -> bool:
        """True once it is gone; False, and kept for a later try, when the manager could not remove it."""
        try:
            self.api.remove_service(service_id)
        except NotFound:
            pass
        except (APIError, requests.exceptions.RequestException, DockerException):
            self._keep_unremoved("service", service_id)
            return False
        return True

    def _remove_secret(self, secret_id: str) -> bool:
        for _ in range(20):  # a secret is in use until its service's task is gone
            try:
                self.api.remove_secret(secret_id)
                return True
            except NotFound:
                return True
            except APIError:
                time.sleep(0.25)
            except (requests.exceptions.RequestException, DockerException):
                break
        self._keep_unremoved("secret", secret_id)
        return False

    def kill_all(self, container_ids: list[str]) -> None:
        for service_id in container_ids:
            self._remove_service(service_id)

    def prepare(self, job: ContainerJob) -> _Launched:
        """A spare (calls/spares.py): the job's service created, started and connected back, its bootstrap waiting
        for the call. A service cannot be created now and started later, so unlike one engine's spare
        this one runs: it holds no argument and no secret (those come with the call), but it would hold
        a node's reservation, so a job with ``requests`` gets none. Bounded by SPARE_WAIT: a spare that
        cannot connect soon is not worth waiting for (the call itself reports why)."""
        if _reservation(job) != (None, None):
            raise UnsupportedResourceError("a Swarm spare would hold its requests' reservation on a node")
        return self._connected(job, "spare", limit=SPARE_WAIT)

    def discard(self, prepared: Any) -> None:
        if isinstance(prepared, _Launched):
            self._release(prepared)

    # -- checks (dockertask doctor) -------------------------------------------------------

    def nodes(self) -> list[tuple[str, str, str]]:
        """(hostname, state, availability) of every node."""
        return [(str(n["Description"]["Hostname"]), str(n["Status"]["State"]), str(n["Spec"]["Availability"]))
                for n in self.api.nodes()]

    def probe_pulls(self, image: str, labels: dict[str, str], timeout: float = 120) -> dict[str, str]:
        """Each node's answer to running ``image`` (by digest): "ok", or why it could not (pull errors).
        A global service runs once per node; it is removed before this returns."""
        names = {str(n["ID"]): str(n["Description"]["Hostname"]) for n in self.api.nodes()}
        spec = ContainerSpec(image, command=["python3", "-c", "pass"], labels=labels)
        service = self.api.create_service(TaskTemplate(spec, restart_policy=RestartPolicy(condition="none")),
                                          name=f"dockertask-doctor-{os.getpid()}", labels=labels, mode="global")["ID"]
        answers: dict[str, str] = {}
        try:
            deadline = time.monotonic() + timeout
            while len(answers) < len(names) and time.monotonic() < deadline:
                for t in self.api.tasks(filters={"service": service}):
                    status = t.get("Status") or {}
                    node = names.get(str(t.get("NodeID")), str(t.get("NodeID")))
                    if status.get("State") == "complete":
                        answers[node] = "ok"
                    elif status.get("State") in ("failed", "rejected"):
                        answers[node] = str(status.get("Err") or status.get("State"))
                time.sleep(0.3)
        finally:
            self._remove_service(service)
        return {name: answers.get(name, f"no answer within {timeout:g} s") for name in names.values()}

    # -- images --------------------------------------------------------------------------

    def publish(self, ref: str) -> str:
        """``ref`` (on the manager's engine) pushed to the registry: the reference by digest the nodes run."""
        info = self.engine.image_info(ref)
        if info is None:
            raise ImageNotFoundError(f"image {ref!r} is not on the Swarm manager's engine")
        with self._publish_lock:
            known = self._published.get(ref)
            if known is not None and known[0] == info.id:
                return known[1]
            repo, tag = _registry_name(ref, str(self.settings.registry))
            try:
                self.api.tag(info.id, repo, tag)
                digest = ""
                for line in self.api.push(repo, tag=tag, stream=True, decode=True):
                    if "error" in line:
                        raise ImageResolutionError(f"pushing {ref} to {self.settings.registry} failed: "
                                                   f"{line['error']}; check that the manager reaches the registry")
                    digest = str((line.get("aux") or {}).get("Digest", digest))
            except APIError as exc:
                raise ImageResolutionError(f"pushing {ref} to {self.settings.registry} failed: "
                                           f"{exc.explanation or exc}") from None
            except requests.exceptions.RequestException as exc:
                raise DockerUnavailableError(f"lost the Swarm manager while pushing {ref}: {exc}") from None
            if not digest:
                raise ImageResolutionError(f"pushing {ref} to {self.settings.registry} gave no digest")
            by_digest = f"{repo}@{digest}"
            self._published[ref] = (info.id, by_digest)
            return by_digest

    def image_info(self, ref: str) -> ImageInfo | None:
        return self.engine.image_info(ref)

    def pull(self, ref: str) -> bool:
        return self.engine.pull(ref)

    def build(self, context_tar: bytes, tag: str, buildargs: dict[str, str], labels: dict[str, str],
              on_log: Callable[[str], None]) -> None:
        self.engine.build(context_tar, tag, buildargs, labels, on_log)

    def import_rootfs(self, path: str, tag: str, changes: list[str]) -> None:
        self.engine.import_rootfs(path, tag, changes)

    def images(self, label: str) -> list[ImageInfo]:
        return self.engine.images(label)

    def remove_image(self, ref: str) -> str | None:
        return self.engine.remove_image(ref)  # where they are built and kept (see __init__)

    # -- housekeeping --------------------------------------------------------------------

    def gc(self, is_orphan: Callable[[dict[str, str]], bool], dry_run: bool = False) -> list[Removed]:
        """Services (and their token secrets) of dead processes, then the manager engine's own containers."""
        removed = []
        kinds: tuple[tuple[str, Callable[..., Any], Callable[[str], bool]], ...] = (
            ("service", self.api.services, self._remove_service),
            ("secret", self.api.secrets, self._remove_secret))  # services first
        try:
            for kind, listed, remove in kinds:
                for found in listed(filters={"label": LABEL_RUN_ID}):
                    labels = (found.get("Spec") or {}).get("Labels") or {}
                    if is_orphan(labels):
                        if not dry_run:
                            remove(found["ID"])
                        removed.append(Removed(str(found["ID"]), labels, kind))
        except requests.exceptions.ConnectionError as exc:
            raise DockerUnavailableError(f"the Swarm manager is unreachable: {exc}") from None
        return removed + self.engine.gc(is_orphan, dry_run)

    def remove_network(self, name: str) -> None:
        self.engine.remove_network(name)

    def gc_networks(self, is_orphan: Callable[[dict[str, str]], bool], dry_run: bool = False) -> list[str]:
        return self.engine.gc_networks(is_orphan, dry_run)

    def engine_info(self) -> dict[str, Any]:
        return self.engine.engine_info()


class _Launched:
    """What one service needs removed: the call's rendezvous, its token secret, the service."""

    def __init__(self, server: callback.CallbackServer, call: callback.Call) -> None:
        self.server, self.call = server, call
        self.secret_id = ""
        self.service_id = ""


def _reservation(job: ContainerJob) -> tuple[int | None, int | None]:
    """(nano-CPUs, bytes) that the job's requests reserve on its node: what Swarm places it by."""
    req = job.resources.requests
    if req is None:
        return None, None
    return (int(req.cpu_cores * 1e9) if req.cpu_cores is not None else None), req.mem_bytes


def _describe(job: ContainerJob) -> str:
    r = job.resources.requests
    return str(r.to_dict()) if r is not None else "{}"


def _registry_name(ref: str, registry: str) -> tuple[str, str]:
    """Where ``ref`` goes in the registry: ``registry/path`` and a tag (the original registry host dropped)."""
    name, _, digest = ref.partition("@")
    repo, tag = split_ref(name)
    if digest:
        tag = "sha256-" + digest.split(":", 1)[-1][:32]
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        repo = rest
    return f"{registry}/{repo}", tag


@functools.lru_cache(maxsize=1)
def _connector_source() -> str:
    """The relay's source, the service's command (read once a process)."""
    from dockertask.runtime import connector

    return Path(connector.__file__).read_text(encoding="utf-8")


def client_for(settings: Settings) -> SwarmBackend:
    """The Swarm backend for ``settings`` (its manager is DOCKER_HOST)."""
    try:
        return SwarmBackend(settings)
    except docker.errors.DockerException as exc:
        raise DockerUnavailableError(f"the Swarm manager is unreachable: {exc}") from None
