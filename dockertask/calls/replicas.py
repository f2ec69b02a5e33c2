"""Reusable replicas (``@task(reusable=ReusePolicy(...))``): warm containers kept by this process.

Calls of tasks with the same image, resources, environment, secret requests and container options
share a pool of up to ``replicas`` containers. Inside each, a serve loop (``runtime/bootstrap.serve``) loads
a task's function once, then runs every call in a child process forked from that pristine parent: no
module state, global or open file carries from one call to the next. One call at a time per replica.

A call's outcome is the same ``ContainerOutcome`` an isolated run gives, so the runner's policy
(values, user exceptions, timeout, OOM, retries) is shared. A timeout kills the replica; a crash, an
OOM kill or a dead container replaces it; only the call that caused it fails. Secrets travel with
each call on the channel (never in ``docker inspect``) and are wiped from the tmpfs after it.
Replicas go after ``idle_ttl`` without calls, at exit, on Ctrl-C/SIGTERM (the lifecycle handler
kills them), and by ``dockertask gc`` after a ``kill -9`` (they carry the usual owner labels).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dockertask.backends import Backend, ContainerJob, ContainerOutcome
from dockertask.backends.base import OutputSink, StdinPieces
from dockertask.calls import envelope, pickling, runtime_zip
from dockertask.errors import DockerTaskError, DockerUnavailableError, TaskTimeoutError
from dockertask.host import lifecycle
from dockertask.runtime import protocol
from dockertask.spec import secrets
from dockertask.spec.reuse import ReusePolicy

if TYPE_CHECKING:
    from dockertask.tasks import Task

READY_TIMEOUT = 60.0  # a new replica has this long to say it is ready (image start, runtime unpack)
# A replica takes a call at once (it is idle when it gets one): one that has not said so in this long was
# stopped (SIGSTOP from a call) or wedged, and is replaced; the call goes to another replica, once.
ACK_TIMEOUT = 15.0
SETUP_TIMEOUT = 600.0  # a ReusePolicy setup's time in a new replica, for a task with no timeout of its own


@dataclass
class _Replica:
    worker: Any  # the backend's WorkerConnection
    loaded: set[str] = field(default_factory=set)
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


class _Pool:
    def __init__(self, replicas: int, idle_seconds: float) -> None:
        self.size = replicas
        self.idle_seconds = idle_seconds
        self.replicas: list[_Replica] = []
        self.starting = 0
        self.cond = threading.Condition()

    def acquire(self, start: Any) -> _Replica:
        with self.cond:
            while True:
                free = next((r for r in self.replicas if not r.busy), None)
                if free is not None:
                    free.busy = True
                    return free
                if len(self.replicas) + self.starting < self.size:
                    self.starting += 1
                    break
                self.cond.wait()
        try:
            replica = _Replica(start(), busy=True)
        finally:
            with self.cond:
                self.starting -= 1
                self.cond.notify_all()
        with self.cond:
            self.replicas.append(replica)
        return replica

    def release(self, replica: _Replica, broken: bool) -> None:
        with self.cond:
            replica.busy = False
            replica.last_used = time.monotonic()
            if broken and replica in self.replicas:
                self.replicas.remove(replica)
            self.cond.notify_all()
        if broken:
            replica.worker.close()

    def reap(self, now: float, everything: bool = False) -> list[Any]:
        """Remove the replicas idle past their time (``everything``: all idle ones); with ``everything`` they
        are handed back to be closed by the caller (at exit, all pools at once), else closed here."""
        with self.cond:
            idle = [r for r in self.replicas if not r.busy and (everything or now - r.last_used >= self.idle_seconds)]
            for r in idle:
                self.replicas.remove(r)
        if everything:
            return [r.worker for r in idle]
        for r in idle:
            r.worker.close()
        return []


_pools: dict[str, _Pool] = {}
_lock = threading.Lock()
_reaper: threading.Thread | None = None


def _reap_forever() -> None:
    while True:
        time.sleep(0.5)
        with _lock:
            pools = list(_pools.values())
        for pool in pools:
            pool.reap(time.monotonic())


def shutdown() -> None:
    """Remove every replica of this process (at exit; also usable from tests)."""
    with _lock:
        pools = list(_pools.values())
    workers = [worker for pool in pools for worker in pool.reap(0, everything=True)]
    lifecycle.in_parallel([worker.close for worker in workers], "reusable replica(s)")


atexit.register(shutdown)


def _forget_in_child() -> None:
    """A forked child starts with no replica: the parent's stay the parent's (a child's call on one would
    read the parent's frames; its exit would remove them). Dropped without closing: closing would kill them."""
    global _lock, _reaper
    _pools.clear()
    _lock, _reaper = threading.Lock(), None
    lifecycle.at_multiprocessing_exit(shutdown)  # the child's own replicas go when it ends


os.register_at_fork(after_in_child=_forget_in_child)


def _pool_for(key: str, policy: ReusePolicy) -> _Pool:
    global _reaper
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = _Pool(policy.replicas, policy.idle_seconds)
        if _reaper is None:
            _reaper = threading.Thread(target=_reap_forever, name="dockertask-reaper", daemon=True)
            _reaper.start()
        return pool


def _replica_job(task: Task[Any, Any], image: str, sample: ContainerJob) -> ContainerJob:
    """The replica's container: the task's image, limits, environment and options, serving calls."""
    stdin = (*runtime_zip.bootstrap_pieces(), *protocol.frame_pieces(protocol.serve_header(task.spec.name)),
             *protocol.frame_pieces(runtime_zip.runtime_zip()))
    # Every call's secrets land in the replica's tmpfs, however large (up to the limit).
    resources = sample.resources._replace(
        secrets_mib=secrets.MAX_SECRETS_BYTES >> 20 if task.spec.secret_requests else 0)
    labels = {**sample.labels, "dockertask.run-id": "replica-" + uuid.uuid4().hex[:12], "dockertask.replica": "true"}
    labels.pop("dockertask.attempt", None)
    environment = dict(sample.environment)
    if task.spec.reusable.setup is not None:
        # A setup's memory (a model) in huge pages: each call's fork copies ~1,000x fewer page-table entries
        # (a 500 MB heap: ~2 ms a fork, ~50 ms in 4 KiB pages). glibc's malloc asks for them (>= 2.35); a
        # libc that does not know the tunable ignores it.
        tunables = [t for t in environment.get("GLIBC_TUNABLES", "").split(":") if t]
        environment["GLIBC_TUNABLES"] = ":".join([*tunables, "glibc.malloc.hugetlb=1"])
    return ContainerJob(image=image, command=list(protocol.COMMAND), stdin=StdinPieces(stdin),
                        environment=environment, labels=labels,  # owner labels included
                        resources=resources, options=sample.options)


def _key(task: Task[Any, Any], job: ContainerJob) -> str:
    """What makes two tasks share replicas: image, resources, environment, secret requests, options, and
    the same ReusePolicy (so neither gets the other's replica count, idle_ttl or setup)."""
    policy = task.spec.reusable
    return json.dumps([job.image, sorted(job.environment.items()), repr(job.resources._replace(secrets_mib=0)),
                       repr(job.options), sorted(s.env_name for s in task.spec.secret_requests),
                       policy.replicas, policy.idle_seconds, _setup_key(policy)])


def _setup_key(policy: ReusePolicy) -> str | None:
    """Tasks with different setups never share a replica (one's warm state is not the other's to see); the
    same setup function, code and all, may. Found once per setup: the key is made for every call (~0.4 ms
    of source and module walking, on a ~8 ms warm call), and the code a process runs does not change."""
    if policy.setup is None:
        return None
    try:
        return _setup_identity(policy.setup, policy.setup_name or "")
    except TypeError:  # an unhashable callable object: found again each time
        return _setup_identity.__wrapped__(policy.setup, policy.setup_name or "")


@functools.cache
def _setup_identity(setup: Callable[[], Any], name: str) -> str:
    import inspect

    from dockertask.calls.cache import code_fingerprint

    try:
        source = inspect.getsource(setup)
    except (OSError, TypeError):  # no source to be had (a builtin, a callable object): its name stands in
        source = name
    return f"{name}:{code_fingerprint(setup, source)}"


def run_call(task: Task[Any, Any], sample: ContainerJob, arguments: Callable[[], tuple[bytes, tuple[Any, ...]]],
             secret_values: dict[secrets.Secret, secrets.SecretValue], output: OutputSink,
             backend: Backend) -> ContainerOutcome:
    """One call on a replica of ``task``'s pool; ``sample`` is the isolated job this call would have run;
    ``arguments()`` gives the pickled arguments and their File/Directory inputs (and holds them no more)."""
    policy: ReusePolicy = task.spec.reusable
    call, inputs = arguments()
    pool = _pool_for(_key(task, sample), policy)

    def start() -> Any:
        worker = backend.open_worker(_replica_job(task, sample.image, sample), output)
        frame = worker.frames.next(READY_TIMEOUT)
        if frame is not None and frame[0] == b"W":
            return worker
        worker.close()
        if frame is not None and frame[0] == b"R":  # it refused (e.g. another Python): say what it said
            return _Refused(frame[1])
        raise DockerTaskError(f"task {task.spec.name}: a reusable replica did not start within {READY_TIMEOUT:g} s")

    attempt, run_id = int(sample.labels["dockertask.attempt"]), sample.labels["dockertask.run-id"]
    call_id = protocol.call_id(run_id, attempt)
    for last_try in (False, True):
        replica = pool.acquire(start)
        if isinstance(replica.worker, _Refused):
            pool.release(replica, broken=True)
            return ContainerOutcome(container_id="", exit_code=0, image=sample.image, result=replica.worker.frame)
        worker = replica.worker
        broken = True
        try:
            fid = f"{task.spec.name}:{task.code_fingerprint}"
            if fid not in replica.loaded:  # the function and its by-value modules: once per replica
                if policy.setup is None:
                    worker.send(protocol.load_message(fid, pickling.pickle_function(task.function, task.spec.name)))
                else:  # with its setup, run there now
                    worker.route_output(output)  # what the setup prints is shown with the call that waits for it
                    worker.send(protocol.setup_message(fid, pickling.pickle_function(
                        (task.function, policy.setup), task.spec.name)))
                    _set_up(worker, fid, task)
                replica.loaded.add(fid)
            header = protocol.call_header(task.spec.name, attempt, run_id, fid=fid, call=call_id,
                                          inputs=[[obj.kind, obj.name] for obj in inputs])
            worker.route_output(output)
            worker.send(protocol.call_message(header, call, secrets.to_frame(secret_values)))
            if inputs:
                worker.send(envelope.input_frames(inputs))
            if not _taken(worker, call_id):  # dead or stopped before the call began: not the call's failure
                if last_try:
                    raise DockerTaskError(f"task {task.spec.name}: two reusable replicas in a row did not take "
                                          f"the call within {ACK_TIMEOUT:g} s each (stopped, or wedged)")
                continue
            call = b""  # sent and taken: hold it no longer
            outcome, broken = _await(worker, sample, call_id)
            return outcome
        except OSError:  # the replica's socket broke while sending: it was gone before the call began
            if not last_try:
                continue
            state = worker.exit_state()
            return ContainerOutcome(container_id=worker.container_id, exit_code=state.get("ExitCode"),
                                    image=sample.image, oom_killed=bool(state.get("OOMKilled")))
        finally:
            pool.release(replica, broken)
    raise AssertionError("unreachable")  # the last try returns or raises


def _set_up(worker: Any, fid: str, task: Task[Any, Any]) -> None:
    """Wait for the replica's S frame: its ReusePolicy setup has run (a failure is reported by each call, as
    the setup's own exception). No frame within the task's timeout (or SETUP_TIMEOUT): the replica goes."""
    limit = task.spec.timeout_seconds or SETUP_TIMEOUT
    deadline = time.monotonic() + limit
    setup = task.spec.reusable.setup_name
    while True:
        frame = worker.frames.next(max(0.0, deadline - time.monotonic()))
        if frame is None:
            raise TaskTimeoutError(f"task {task.spec.name}: ReusePolicy(setup={setup}) did not finish within "
                                   f"{limit:g} s in a new replica (the task's timeout, or {SETUP_TIMEOUT:g} s "
                                   "without one); the replica was removed")
        kind, data = frame
        if kind == b"S" and bytes(data).startswith(fid.encode() + b"\n"):
            return
        if kind in (b"EOF", b"D"):
            state = worker.exit_state()
            oom = " (out of memory: raise the task's memory limit)" if state.get("OOMKilled") else ""
            raise DockerTaskError(f"task {task.spec.name}: a new replica ended while ReusePolicy(setup={setup}) "
                                  f"ran{oom}")
        _drop(data)


def _taken(worker: Any, call_id: str) -> bool:
    """Whether the replica said it took the call (an A frame naming it) in time; False for one that died,
    was stopped, or whose stream is damaged. Frames of an earlier call still on the way are dropped."""
    deadline = time.monotonic() + ACK_TIMEOUT
    while True:
        frame = worker.frames.next(max(0.0, deadline - time.monotonic()))
        if frame is None:
            return False
        kind, data = frame
        if kind == b"A" and bytes(data) == call_id.encode():
            return True
        if kind in (b"EOF", b"D"):
            return False
        _drop(data)


def _drop(data: Any) -> None:
    if hasattr(data, "close"):
        data.close()  # a spooled result's file


def _names(data: Any, kind: bytes, call_id: str) -> bool:
    """Whether an R or X frame belongs to ``call_id``: one a process of another call wrote (it names another,
    or none where the replica names every call's) is not this call's result."""
    try:
        meta = protocol.parse_result(data).meta if kind == b"R" else protocol.decode_meta(bytes(data))
    except ValueError:
        return False
    return isinstance(meta, dict) and meta.get("call") == call_id


def _await(worker: Any, job: ContainerJob, call_id: str) -> tuple[ContainerOutcome, bool]:
    """The call's outcome and whether its replica must go."""

    cid = worker.container_id
    deadline = None if job.timeout is None else time.monotonic() + job.timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        frame = worker.frames.next(left)
        if frame is None:  # the call's timeout: kill the replica (its call with it)
            worker.close()
            return ContainerOutcome(container_id=cid, exit_code=None, image=job.image, timed_out=True), True
        kind, data = frame
        if kind in (b"R", b"X") and not _names(data, kind, call_id):
            _drop(data)  # forged, or late from another call: never this call's outcome
            continue
        if kind == b"D":  # the control stream is damaged: the call fails as such, the replica is replaced
            if (partial := worker.take_archive()) is not None:
                partial.close()
            return ContainerOutcome(container_id=cid, exit_code=None, image=job.image, result=data), True
        if kind == b"R":  # the returned files' archive, if any, came just before it (T frames)
            return ContainerOutcome(container_id=cid, exit_code=0, image=job.image, result=data,
                                    archive=worker.take_archive()), False
        if kind in (b"X", b"EOF") and (partial := worker.take_archive()) is not None:
            partial.close()  # files a dead call had begun to return
        if kind == b"X":  # the call's process died without a result; the replica lives, but is replaced
            try:
                report = protocol.decode_meta(bytes(data))
            except ValueError:
                report = {}
            code = report.get("exit")
            if code is None and report.get("signal") is not None:
                code = 128 + int(report["signal"])
            # In a replica a stop from outside ends the whole container (EOF below): a call's process killed by
            # a signal was killed from inside (by itself, or another process of the call), never preempted.
            return ContainerOutcome(container_id=cid, exit_code=code, image=job.image,
                                    oom_killed=bool(report.get("oom")), cancelled=lifecycle.interrupted(job.since),
                                    logs_tail="", signalled_inside=report.get("signal") is not None,
                                    usage=report.get("usage") if isinstance(report.get("usage"), dict) else None), True
        if kind == b"EOF":  # the replica's container itself died (OOM of the parent, killed from outside)
            state = worker.exit_state()  # DockerUnavailableError when it is the engine that is gone
            if state.get("Running"):  # our connection to it ended, not the container: the engine blipped
                raise DockerUnavailableError(f"task {job.labels.get('dockertask.task', '?')}: the connection to its "
                                             "reusable replica was lost mid call (the engine restarted or dropped "
                                             "it); the replica is replaced")
            code = state.get("ExitCode")
            # A call that SIGKILLs or SIGTERMs its serve process ends the replica as `docker kill` would:
            # only the engine's events tell the two apart.
            inside = code in (137, 143) and not state.get("OOMKilled") and not worker.stopped_by_engine(state)
            return ContainerOutcome(container_id=cid, exit_code=code, image=job.image,
                                    oom_killed=bool(state.get("OOMKilled")), signalled_inside=inside,
                                    cancelled=lifecycle.interrupted(job.since)), True


class _Refused:
    """A replica that answered its start with a result frame (a refusal): passed to the runner as is."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame

    def close(self) -> None:
        pass
