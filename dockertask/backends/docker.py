"""The Docker Engine backend: the only module that imports the docker SDK.

It uses the SDK's low-level ``APIClient``: the model layer re-inspects objects after each
call, which costs round trips on every task. Lifecycle of one job::

    create → attach (before start: no output line can be missed) → start → send the call on
    stdin → wait(timeout) → [kill on timeout] → read the result off the control channel → remove

The archive API (put_archive/get_archive) is avoided: it costs about 50 ms a call on this
engine, more than the rest of dockertask's overhead together.

``remove(force=True)`` runs in ``finally``, so no outcome (success, error, timeout, OOM,
KeyboardInterrupt) leaves the container behind; the result and exit status are read first.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils.socket import frames_iter

from dockertask.backends import discovery, engine_config
from dockertask.backends.base import ContainerJob, ContainerOutcome, ImageInfo, OutputSink, Removed, StdinPieces
from dockertask.backends.streams import Frames, Pump
from dockertask.errors import (
    DockerTaskError,
    DockerUnavailableError,
    ImageBuildError,
    ImageNotFoundError,
    PythonVersionError,
    TaskInputError,
    UnsupportedResourceError,
)
from dockertask.host import abandoned, lifecycle
from dockertask.spec.resources import limit_of

HOW_TO_START = (
    "start one with `sudo systemctl start docker` (or `sudo dockerd &`), install it with "
    "`sudo apt-get install docker.io`, or point DOCKER_HOST at a reachable engine; "
    "`dockertask doctor` checks the setup"
)
LABEL_RUN_ID = "dockertask.run-id"
NETWORK_LABEL = "dockertask.network"  # networks the pytest plugin makes (dockertask_network)


def _refusal(exc: APIError, stage: str, job: ContainerJob) -> DockerTaskError:
    """The engine's refusal to create or start a container, as the error a user can act on."""
    text = str(exc.explanation or exc)
    if "storage-opt" in text or "storage opt" in text.lower():
        return UnsupportedResourceError(
            f"ephemeral_storage cannot be enforced by this engine's storage driver ({text}); "
            "it needs overlay2 on xfs with pquota, devicemapper, btrfs or zfs"
        )
    if "device driver" in text and "gpu" in text:
        return UnsupportedResourceError(
            f"gpu was requested but the engine has no GPU runtime ({text}); "
            "install the NVIDIA container toolkit or drop gpu from Resources"
        )
    missing = "executable file not found" in text or "no such file or directory" in text.lower()
    if missing and _names_init(text):
        return DockerTaskError(
            f"the engine could not {stage} the container: its init binary is missing ({text}); dockertask runs "
            "every task under an init (PID 1 that forwards signals): install docker-init/tini (Docker) or "
            "catatonit (Podman) on the engine's host")
    if missing:
        return PythonVersionError(
            f"image {job.image!r} has no Python: {job.command[0]!r} is not on its PATH; "
            "dockertask needs the host's Python major.minor in the image"
        )
    return DockerTaskError(f"the engine could not {stage} the container: {text}")


_INITS = ("docker-init", "tini", "catatonit", "init_path", "init binary", "/dev/init")


def _names_init(text: str) -> bool:
    """The engine's refusal is about the init binary it injects (``init: true``), not the task's command.
    Podman's words name catatonit; Docker's name docker-init; neither names python3."""
    lowered = text.lower()
    return any(name in lowered for name in _INITS) and "python3" not in lowered


def _wants_gpu(job: ContainerJob) -> bool:
    return bool(limit_of(job.resources.requests, job.resources.limits, "gpu_count"))


def _shutdown(sock: Any) -> None:
    try:
        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _attached(sock: Any) -> bool:
    """Whether the attach connection of a container that has not started is still open: before its start
    nothing may arrive on it, so anything readable (the end of the stream, an error) means it is gone."""
    import select

    try:
        readable, _, _ = select.select([getattr(sock, "_sock", sock)], [], [], 0)
    except (OSError, ValueError):  # closed
        return False
    return not readable


def _send_pieces(sock: Any, pieces: Iterable[bytes]) -> None:
    raw = getattr(sock, "_sock", sock)
    for piece in pieces:
        raw.sendall(piece)


class _LazyChain:
    """``first``, then what ``rest`` (a StdinPieces) hands out when this is iterated: taken only if used."""

    def __init__(self, first: tuple[bytes, ...], rest: StdinPieces) -> None:
        self.first, self.rest = first, rest

    def __iter__(self) -> Iterator[bytes]:
        yield from self.first
        yield from self.rest.take()


def _unavailable(exc: Exception, where: discovery.EngineLocation | None = None) -> DockerUnavailableError:
    at = f" at {where.base_url} (found through {where.how})" if where is not None else ""
    return DockerUnavailableError(f"no Docker engine is reachable{at} ({exc}); {HOW_TO_START}")


# Create, start, inspect, kill, remove: a busy engine on 2 cores takes seconds, never a minute.
# (wait is bounded by the task's own timeout; builds and imports by theirs.)
CALL_TIMEOUT = 60


def _first_contact_timeout() -> float:
    raw = os.environ.get("DOCKERTASK_ENGINE_TIMEOUT", "10")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise DockerUnavailableError(f"DOCKERTASK_ENGINE_TIMEOUT={raw!r}: expected seconds between 0 and 3600")
    return value


class _Client(docker.APIClient):  # type: ignore[misc]
    """The SDK's client, keeping the whole answer of the version request it makes on connecting (which
    engine it is), so that knowing it costs no second round trip."""

    server: dict[str, Any] = {}

    def _retrieve_server_version(self) -> str:
        try:
            self.server = dict(self.version(api_version=False))
            return str(self.server["ApiVersion"])
        except KeyError:
            raise DockerException('Invalid response from docker daemon: key "ApiVersion" is missing.') from None
        except Exception as e:
            raise DockerException(f"Error while fetching server API version: {e}") from e


def _names_podman(version: dict[str, Any]) -> bool:
    return any("podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or [])


class _Gone(DockerTaskError):
    """The container to start no longer exists (removed from outside before it started)."""

    def __init__(self, cid: str) -> None:
        super().__init__(f"container {cid[:12]} was removed from outside before it could start")


class Prepared(NamedTuple):
    """A container created and attached ahead of its call (see calls/spares.py); ``started``: also started
    and sent envelope.ahead_pieces, its Python waiting for the call."""

    container_id: str
    sock: Any
    started: bool = False
    preamble: tuple[bytes, ...] = ()  # what a started one was sent: a fresh container instead needs it first


class DockerBackend:
    """Runs jobs on the engine named by the environment (DOCKER_HOST, or the local socket)."""

    def __init__(self, client: docker.APIClient | None = None) -> None:
        self.location = discovery.EngineLocation(getattr(client, "base_url", ""), "given") if client else None
        if client is None:
            self.location = discovery.locate()
            try:
                # The first contact (API version) is bounded tightly: an engine that accepts connections
                # but never answers is reported in seconds, not after requests' 120 s.
                client = _Client(version="auto", timeout=_first_contact_timeout(), **self.location.client_kwargs)
            except DockerException as exc:
                raise _unavailable(exc, self.location) from None
            client.timeout = CALL_TIMEOUT
        self.api = client
        # Which engine this is comes with the first contact's answer; a client given ready-made is asked.
        server = getattr(client, "server", None)
        self._podman: bool | None = _names_podman(server) if server else None

    # -- running -------------------------------------------------------------------------

    def _create(self, job: ContainerJob, stdin_once: bool = True) -> str:
        if _wants_gpu(job) and self.is_podman():
            raise UnsupportedResourceError(
                "gpu was requested, but Podman's Docker API ignores GPU device requests (the task would run "
                "without one); run GPU tasks on Docker with the NVIDIA container toolkit, or drop gpu from Resources")
        host_config = self.api.create_host_config(**engine_config.host_config(job))
        try:
            create = engine_config.create_kwargs(job)
            platform = create.pop("platform", None)
            environment = {**job.environment, **engine_config.WATCH_CALL} if self.is_podman() else job.environment
            config = self.api.create_container_config(
                job.image, job.command, environment=environment, labels=job.labels,
                host_config=host_config, stdin_open=True, detach=True, **create,
            )
            # The container's stdin closes when the host has sent the call (not an SDK kwarg); a reusable
            # replica's stays open for the calls to come.
            config["StdinOnce"] = stdin_once
            created = self.api.create_container_from_config(config, None, platform)
        except ImageNotFound:
            raise ImageNotFoundError(
                f"image {job.image!r} is not on the Docker engine and could not be pulled; "
                "build it, or fix container_image / [tool.dockertask.images]"
            ) from None
        except APIError as exc:
            raise _refusal(exc, "create", job) from None
        return str(created["Id"])

    def _attach(self, cid: str) -> Any:
        sock = self.api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self.api._disable_socket_timeout(sock)  # a quiet task must not time the stream out
        return sock

    @staticmethod
    def _send_stdin(sock: Any, pieces: Iterable[bytes], failed: list[BaseException]) -> None:
        raw = getattr(sock, "_sock", sock)
        try:
            for piece in pieces:
                try:
                    raw.sendall(piece)
                except OSError:
                    return  # the container is already gone (no python3, killed): its exit status says why
        except Exception as exc:  # reading an input file failed (it shrank, or became unreadable)
            failed.append(exc)
        finally:
            try:
                raw.shutdown(socket.SHUT_WR)  # with StdinOnce, the container's stdin closes
            except OSError:
                pass

    def _start(self, cid: str, job: ContainerJob) -> None:
        try:
            self.api.start(cid)
        except NotFound:
            raise _Gone(cid) from None  # run() makes a new one; anywhere else it is the error
        except APIError as exc:
            raise _refusal(exc, "start", job) from None

    def _wait(self, cid: str, timeout: float | None) -> int | None:
        """The exit code, or None when ``timeout`` passed first."""
        try:
            status = self.api.wait(cid, timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if timeout is not None and "timed out" in str(exc).lower():
                return None
            raise  # the engine is gone: run() says so, naming the task
        return int(status.get("StatusCode", -1))

    def _engine(self) -> str:
        return self.location.base_url if self.location is not None else str(self.api.base_url)

    def _lost(self, exc: Exception, job: ContainerJob, cid: str | None) -> DockerUnavailableError:
        task = job.labels.get("dockertask.task", "?")
        left = (f"; its container {cid[:12]} is removed once the engine is back (by the next task run, "
                "or `dockertask gc`)" if cid else "")
        return DockerUnavailableError(f"task {task}: lost the Docker engine at {self._engine()} while running it "
                                      f"({type(exc).__name__}: {exc}){left}")

    def sweep_abandoned(self) -> list[str]:
        """Remove containers whose removal failed when the engine was lost (see ``abandoned``)."""
        removed = []
        for cid in abandoned.pending(self._engine()):
            try:
                self._remove(cid)
            except (requests.exceptions.RequestException, DockerException):
                break  # still unreachable: try again next time
            abandoned.done(cid)
            removed.append(cid)
        return removed

    def prepare(self, job: ContainerJob, stdin_once: bool = True,
                preamble: tuple[bytes, ...] | None = None) -> Prepared:
        """Create the container and attach to it, before it starts, so not one line of its output can be
        missed: for run(), for a spare (calls/spares.py) and for a replica (open_worker). With ``preamble``
        (a spare started ahead) it is also started and sent that (no call, argument or secret), so that a
        call which claims it pays neither the start nor Python's: it sends only itself."""
        try:
            cid = self._create(job, stdin_once)
        except requests.exceptions.RequestException as exc:
            raise self._lost(exc, job, None) from None
        sock = None
        try:
            sock = self._attach(cid)
            if preamble is None:
                return Prepared(cid, sock)
            self._start(cid, job)
            _send_pieces(sock, preamble)
            return Prepared(cid, sock, started=True, preamble=preamble)
        except requests.exceptions.RequestException as exc:
            self._release(cid, sock)
            raise self._lost(exc, job, cid) from None
        except BaseException:
            self._release(cid, sock)
            raise

    def prepare_ahead(self, job: ContainerJob, preamble: tuple[bytes, ...]) -> Prepared:
        """A spare started ahead (see prepare); Swarm's spares are started by its prepare itself."""
        return self.prepare(job, preamble=preamble)

    def discard(self, prepared: Any) -> None:
        self._release(prepared.container_id, prepared.sock)

    def run(self, job: ContainerJob, on_output: OutputSink, prepared: Any = None) -> ContainerOutcome:
        try:
            self.sweep_abandoned()
            if prepared is None:
                prepared = self.prepare(job)
        except BaseException:
            if prepared is not None:  # given a spare, it is ours to remove from that moment
                self.discard(prepared)
            raise
        cid, sock, started, preamble = prepared
        # A spare started ahead was sent its preamble: a fresh container that replaces it needs that first.
        fresh = dataclasses.replace(job, stdin=StdinPieces(_LazyChain(preamble, job.stdin))) if started else job
        if not _attached(sock):  # a spare whose attach connection broke (the engine blipped): make one anew
            self._release(cid, sock)
            return self.run(fresh, on_output)
        lifecycle.add(cid, self.kill_all)
        try:
            pump = Pump(frames_iter(sock, tty=False), on_output)
            pump.start()
            if lifecycle.interrupted(job.since):  # Ctrl-C came after the runner's check: never start it
                return ContainerOutcome(container_id=cid, exit_code=None, image=job.image, cancelled=True)
            try:
                if not started:
                    self._start(cid, job)
            except _Gone:  # a prepared container removed from outside (`docker container prune`): make one
                self._release(cid, sock)
                return self.run(fresh, on_output)
            if lifecycle.interrupted(job.since):  # ...or while it started, after the handler's kill round
                self._kill(cid)
            # Send from a thread: a container that dies before reading its input (no python3)
            # stops draining the socket, and a blocking sendall would hang here for minutes.
            send_failed: list[BaseException] = []
            sender = threading.Thread(target=self._send_stdin, args=(sock, job.stdin.take(), send_failed),
                                      name="dockertask-stdin", daemon=True)
            sender.start()
            exit_code = self._wait(cid, job.timeout)
            timed_out = exit_code is None
            usage = None
            if timed_out:
                usage = self.usage(cid)  # before the kill: the record's evidence of what it had used
                self._kill(cid)
                exit_code = self._wait(cid, 30)
            sender.join(1.0)
            if sender.is_alive():  # the container ended without reading its input: unblock both ends
                _shutdown(sock)
                sender.join(5)
            # The stream ends with the container; the result frame and the last lines are in it.
            pump.join(60)
            if send_failed and pump.control.result is None:
                raise TaskInputError(f"task {job.labels.get('dockertask.task', '?')}: an input could not be sent "
                                     f"to its container: {send_failed[0]}")
            state: dict[str, Any] = {}
            no_python = False
            if exit_code != 0:
                found = self.api.inspect_container(cid)
                state = found.get("State", {})
                if exit_code in (1, 127) and not timed_out and pump.control.result is None:
                    no_python = self._lacks(cid, job.command[0], (found.get("Config") or {}).get("Env") or [])
            inside = (exit_code in (137, 143) and not timed_out and pump.control.result is None
                      and not self.stopped_by_engine(cid, state))
            return ContainerOutcome(
                container_id=cid, exit_code=exit_code, image=job.image,
                oom_killed=bool(state.get("OOMKilled")) or pump.control.oom_killed,  # Podman: only the latter
                timed_out=timed_out, cancelled=lifecycle.interrupted(job.since),
                result=None if timed_out else pump.control.result, logs_tail="\n".join(pump.tail),
                archive=pump.control.take_archive(), signalled_inside=inside, usage=usage or pump.control.usage,
                no_python=no_python,
            )
        except requests.exceptions.RequestException as exc:  # ConnectionError, ChunkedEncodingError, timeouts
            raise self._lost(exc, job, cid) from None
        finally:
            self._release(cid, sock)

    def _lacks(self, cid: str, command: str, env: list[str]) -> bool:
        """Whether the (exited) container's filesystem has no ``command`` on its PATH. The init's own words
        (tini's exit 127, catatonit's "failed to exec pid1") can be lost: under load Podman's attach stream has
        ended with its own "write: broken pipe" instead (the container died before reading its input). A
        stat of each PATH directory through the engine is the answer that does not depend on a race; only a
        call that exited 1 or 127 without a result pays for it (~50 ms a directory)."""
        path = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                                                   "/usr/bin:/sbin:/bin")
        places = [command] if "/" in command else [f"{d.rstrip('/')}/{command}" for d in path.split(":")[:16] if d]
        try:
            for place in places:
                answer = self.api.head(self.api._url("/containers/{0}/archive", cid), params={"path": place},
                                       timeout=10)
                if answer.status_code != 404:  # found (200), or a question the engine could not answer
                    return False
        except requests.exceptions.RequestException:
            return False
        return True

    def usage(self, cid: str) -> dict[str, Any] | None:
        """A running container's peak memory and CPU seconds, read inside it from its cgroup as the bootstrap
        reads them at the end of a call (a timed-out call never reaches that end): one exec of python3. Where
        that cannot run, the engine's stats (Docker's carry a peak on cgroup v1; Podman's and cgroup v2's
        carry none, and what is not measured is not recorded)."""
        try:
            exec_id = self.api.exec_create(cid, ["python3", "-c", _usage_probe()], stdout=True, stderr=False)["Id"]
            read = json.loads(self.api.exec_start(exec_id).decode("utf-8", "replace").strip().splitlines()[-1])
            if isinstance(read, dict) and ("peak" in read or "cpu" in read):
                return read
        except (requests.exceptions.RequestException, DockerException, ValueError, IndexError, KeyError):
            pass
        try:
            stats = self.api.stats(cid, stream=False, one_shot=True)
            memory, cpu = stats.get("memory_stats") or {}, stats.get("cpu_stats") or {}
            found: dict[str, Any] = {"source": "engine"}
            if isinstance(memory.get("max_usage"), int):
                found["peak"] = memory["max_usage"]
            total = (cpu.get("cpu_usage") or {}).get("total_usage")
            if isinstance(total, int):
                found["cpu"] = total / 1e9
            return found if len(found) > 1 else None
        except (requests.exceptions.RequestException, DockerException, ValueError, AttributeError):
            return None

    def stopped_by_engine(self, cid: str, state: dict[str, Any]) -> bool:
        """Whether a container that died of SIGKILL/SIGTERM (exit 137/143) was killed through the engine
        (`docker stop`/`kill`, the engine shutting down, our own kill) rather than by a process inside it:
        the exit code is the same, but only the former records a `kill` event. A call that kills its own
        serve process or itself is the task's failure, not a preemption to run again. When the events
        cannot be read, it counts as a stop from outside (what it was taken for before), and always on Podman,
        whose API records no `kill` or `stop` event for `docker stop` (seen: create, init, start, die, cleanup)."""
        since, until = _epoch(state.get("StartedAt")), _epoch(state.get("FinishedAt"))
        if since is None or until is None or self.is_podman():
            return True
        try:
            events = self.api.events(since=since - 1, until=until + 2, decode=True, filters={"container": cid})
            try:
                actions = {str(e.get("Action") or e.get("status") or "") for e in events if isinstance(e, dict)}
            finally:
                events.close()
        except (requests.exceptions.RequestException, DockerException, ValueError):
            return True
        return "kill" in actions or "start" not in actions

    def _release(self, cid: str, sock: Any) -> None:
        """Remove the container and close its socket, whatever happened; never raises: a removal the
        engine cannot take is recorded and done once it is back (it must not replace an error on its way up)."""
        try:
            self._remove(cid)
        except (requests.exceptions.RequestException, DockerException):
            abandoned.record(cid, self._engine())
        lifecycle.discard(cid)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def open_worker(self, job: ContainerJob, on_output: OutputSink) -> WorkerConnection:
        """Start a long-lived container (a reusable replica) whose stdin stays open: ``job.stdin`` is
        sent first, then whatever the caller sends; every control frame but O arrives in order."""
        self.sweep_abandoned()
        cid, sock, _, _ = self.prepare(job, stdin_once=False)
        lifecycle.add(cid, self.kill_all)
        conn = WorkerConnection(self, cid, job, on_output)
        conn.sock = sock
        try:
            conn.pump = Pump(frames_iter(conn.sock, tty=False), on_output, conn.frames.put_frame)
            conn.pump.start()
            self._start(cid, job)
            conn.send(job.stdin.take())
        except BaseException:
            conn.close()
            raise
        return conn

    def _kill(self, cid: str) -> None:
        try:
            self.api.kill(cid)
        except (NotFound, APIError):  # already exited: nothing to kill
            pass
        except requests.exceptions.RequestException:  # the engine is gone: removal will say so, or be recorded
            pass

    def _remove(self, cid: str) -> None:
        for attempt in range(3):
            try:
                self.api.remove_container(cid, force=True, v=True)
                return
            except NotFound:
                return
            except APIError as exc:
                text = str(exc)
                if "already in progress" in text:
                    return
                # Podman: a container that exits while a forced removal kills it ("could not be stopped:
                # ... container state improper: stopped") is removable a moment later.
                if "state improper" not in text or attempt == 2:
                    raise
                time.sleep(0.1)

    def kill_all(self, container_ids: list[str]) -> None:
        for cid in container_ids:
            self._kill(cid)

    # -- images --------------------------------------------------------------------------

    def image_info(self, ref: str) -> ImageInfo | None:
        try:
            data = self.api.inspect_image(ref)
        except ImageNotFound:
            return None
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None
        return _image_info(ref, data)

    def pull(self, ref: str) -> bool:
        repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        try:
            self.api.pull(repo, tag=tag or "latest")
        except (APIError, requests.exceptions.RequestException):
            return False
        return self.image_info(ref) is not None

    def build(self, context_tar: bytes, tag: str, buildargs: dict[str, str], labels: dict[str, str],
              on_log: Callable[[str], None]) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=40)
        try:
            for chunk in self.api.build(fileobj=io.BytesIO(context_tar), custom_context=True, tag=tag,
                                        buildargs=buildargs, labels=labels, rm=True, forcerm=True,
                                        decode=True, network_mode="host", timeout=3600):
                if "stream" in chunk:
                    for line in str(chunk["stream"]).splitlines():
                        if line.strip():
                            tail.append(line)
                            on_log(line)
                if "error" in chunk:
                    tail.append(str(chunk["error"]))
                    raise ImageBuildError(f"building {tag} failed: {chunk['error']}".strip(), "\n".join(tail))
        except APIError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc.explanation or exc}", "\n".join(tail)) from None
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None

    def import_rootfs(self, path: str, tag: str, changes: list[str]) -> None:
        repo, _, t = tag.rpartition(":")
        try:
            answer = self.api.import_image_from_file(path, repository=repo, tag=t, changes=changes)
            # Podman's Docker API ignores the tag of an import (it names it `<repo>:latest`): tag it by id.
            self.api.tag(imported_id(answer), repo, t)
        except APIError as exc:
            raise ImageBuildError(f"importing {tag} failed: {exc.explanation or exc}") from None

    def is_podman(self) -> bool:
        """Podman's Docker API (it names itself in the version's components)."""
        if self._podman is None:
            try:
                self._podman = _names_podman(self.api.version())
            except (DockerException, requests.exceptions.RequestException):
                self._podman = False
        return self._podman

    def images(self, label: str) -> list[ImageInfo]:
        out = []
        # Podman lists an image tagged `name:tag` as `localhost/name:tag`: shown as the name it was given.
        local = "localhost/" if self.is_podman() else None
        for data in self.api.images(filters={"label": label}):
            tags = tuple(t[len(local):] if local and t.startswith(local) else t
                         for t in data.get("RepoTags") or () if t != "<none>:<none>")
            out.append(ImageInfo(ref=tags[0] if tags else data["Id"], id=data["Id"],
                                 labels=data.get("Labels") or {}, created=str(data.get("Created", "")),
                                 size=int(data.get("Size", 0)), tags=tags))
        return out

    def remove_image(self, ref: str) -> str | None:
        try:
            self.api.remove_image(ref)
        except ImageNotFound:
            return None
        except APIError as exc:  # in use by a container (409), or tagged in several repositories
            return str(exc.explanation or exc)
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None
        return None

    # -- housekeeping --------------------------------------------------------------------

    def gc(self, is_orphan: Callable[[dict[str, str]], bool], dry_run: bool = False) -> list[Removed]:
        removed = []
        if not dry_run:  # lost-engine leftovers go whoever started them: their own removal already failed
            removed += [Removed(cid, {}) for cid in self.sweep_abandoned()]
        try:
            for c in self.api.containers(all=True, filters={"label": LABEL_RUN_ID}):
                labels = c.get("Labels") or {}
                if is_orphan(labels):
                    if not dry_run:
                        self._remove(c["Id"])
                    removed.append(Removed(c["Id"], labels))
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None
        return removed

    def remove_network(self, name: str) -> None:
        """Remove a network and every container attached to it, running or not (test services)."""
        try:
            for c in self.api.containers(all=True, filters={"network": name}):
                self._remove(c["Id"])
            self.api.remove_network(name)
        except NotFound:
            pass
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None
        except APIError as exc:
            raise DockerTaskError(f"could not remove network {name}: {exc.explanation or exc}") from None

    def gc_networks(self, is_orphan: Callable[[dict[str, str]], bool], dry_run: bool = False) -> list[str]:
        """Remove networks dockertask made for tests (with their containers) whose labels ``is_orphan``."""
        removed = []
        try:
            networks = self.api.networks(filters={"label": NETWORK_LABEL})
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None
        for n in networks:
            if is_orphan(n.get("Labels") or {}):
                if not dry_run:
                    self.remove_network(n["Name"])
                removed.append(str(n["Name"]))
        return removed

    def engine_info(self) -> dict[str, Any]:
        try:
            return dict(self.api.info())
        except requests.exceptions.ConnectionError as exc:
            raise _unavailable(exc) from None


def _epoch(stamp: Any) -> int | None:
    """An engine's RFC 3339 time (nanoseconds, 'Z' or an offset) as whole seconds since the epoch, in the
    engine's clock; None for the zero time or anything else."""
    import datetime

    if not isinstance(stamp, str) or stamp.startswith("0001-"):
        return None
    stamp = stamp.replace("Z", "+00:00")
    head, _, rest = stamp.partition(".")  # Python 3.11 reads at most microseconds: drop the fraction
    zone = rest.lstrip("0123456789")
    try:
        when = datetime.datetime.fromisoformat(head + zone)
    except ValueError:
        return None
    return int(when.timestamp())


def imported_id(answer: str) -> str:
    """The image id in the engine's answer to an import (JSON lines; the id is the last ``status``)."""
    import json

    for line in reversed(str(answer).strip().splitlines()):
        try:
            status = json.loads(line).get("status", "")
        except (ValueError, AttributeError):
            continue
        if str(status).startswith("sha256:"):
            return str(status)
    raise ImageBuildError(f"the engine's answer to an image import names no image: {str(answer)[:200]!r}")


def _image_info(ref: str, data: dict[str, Any]) -> ImageInfo:
    config = data.get("Config") or {}
    return ImageInfo(ref=ref, id=data["Id"], labels=config.get("Labels") or {}, created=data.get("Created", ""),
                     size=int(data.get("Size", 0)), tags=tuple(data.get("RepoTags") or ()),
                     digests=tuple(data.get("RepoDigests") or ()))


@functools.cache
def _usage_probe() -> str:
    """The bootstrap's own usage() and what it calls, as a program that prints its answer as JSON."""
    import inspect

    from dockertask.runtime import bootstrap

    return "\n".join(["import json, os", inspect.getsource(bootstrap.usage), inspect.getsource(bootstrap.process_usage),
                      "print(json.dumps(usage()))"])


class WorkerConnection:
    """A reusable replica's container: send frames to its stdin, read its frames, route its output."""

    def __init__(self, backend: DockerBackend, cid: str, job: ContainerJob, on_output: OutputSink) -> None:
        self.backend = backend
        self.container_id = cid
        self.job = job
        self.frames = Frames()
        self.sock: Any = None
        self.pump: Pump | None = None
        self._closed = False

    def route_output(self, sink: OutputSink) -> None:
        """Send the replica's output lines to ``sink`` (the call running now), from its A frame on."""
        if self.pump is not None:
            self.pump.route_output(sink)

    def send(self, pieces: Iterable[bytes]) -> None:
        _send_pieces(self.sock, pieces)

    def take_archive(self) -> Any:
        """The last call's returned-files archive (T frames come before its R frame), if any."""
        return self.pump.control.take_archive() if self.pump is not None else None

    def exit_state(self) -> dict[str, Any]:
        """The container's State (after it died): ExitCode, OOMKilled, Running; a DockerUnavailableError when
        the engine cannot be asked (then it is the connection, not the container, that ended)."""
        try:
            return dict(self.backend.api.inspect_container(self.container_id).get("State", {}))
        except requests.exceptions.RequestException as exc:
            raise self.backend._lost(exc, self.job, self.container_id) from None
        except DockerException:
            return {}

    def stopped_by_engine(self, state: dict[str, Any]) -> bool:
        return self.backend.stopped_by_engine(self.container_id, state)

    def close(self) -> None:
        """Kill and remove the container (a failed removal is recorded, as for any task container)."""
        if self._closed:
            return
        self._closed = True
        if self.sock is not None:
            _shutdown(self.sock)
        self.backend._release(self.container_id, self.sock)
