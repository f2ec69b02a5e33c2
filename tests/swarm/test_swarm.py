"""Tasks on a real 3-node Swarm: every seed parameter, the errors a user can act on, and cleanup."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dockertask import (
    Directory,
    DockerUnavailableError,
    File,
    ImageSpec,
    Resources,
    ReusePolicy,
    Secret,
    TaskOOMError,
    TaskSchedulingError,
    TaskTimeoutError,
    UnsupportedResourceError,
    current_context,
    map_task,
    task,
)
from dockertask.calls import spares
from dockertask.errors import ImageResolutionError

from . import cluster as cluster_mod
from .conftest import leftovers, make_backend

ROOT = Path(__file__).resolve().parents[2]


@task
def where(x: int) -> dict[str, Any]:
    import socket

    print(f"line {x} from the task", flush=True)
    return {"x": x, "container": socket.gethostname(), "attempt": current_context().attempt}


@task
def big(n: int) -> bytes:
    return os.urandom(16) * (n // 16)


class Refused(ValueError):
    pass


@task
def fails(why: str) -> None:
    raise Refused(why)


def test_result_output_and_user_exception(capfd: pytest.CaptureFixture[str]) -> None:
    """A call returns its value, prints its output live on the host, and raises the task's own exception."""
    got = where(3)
    assert got["x"] == 3 and got["attempt"] == 1
    assert "line 3 from the task" in capfd.readouterr().out
    with pytest.raises(Refused, match="no thanks"):
        fails("no thanks")


def test_the_record_names_the_node_each_attempt_ran_on(swarm_backend: Any) -> None:
    """The run record keeps which Swarm node ran the call (as the node names itself), with its peak memory."""
    import sqlite3

    from dockertask.runs import record, store

    where(11)
    store.WRITER.flush()
    run = record.current()
    assert run is not None
    with sqlite3.connect(os.environ[store.DB_ENV]) as conn:
        node, peak = conn.execute(
            "SELECT a.node, a.peak_memory FROM attempts a JOIN calls c ON c.run_id = a.run_id AND "
            "c.call_id = a.call_id WHERE c.run_id = ? AND c.task LIKE '%where' AND c.inputs = 'x=11'",
            (run.id,)).fetchone()
    hostnames = {n[0] for n in swarm_backend.nodes()}
    assert node in hostnames, (node, hostnames)
    assert peak > 1_000_000


def test_a_50_mb_result_comes_back_whole() -> None:
    """50 MB travels back over the callback connection intact."""
    data = big(50 * 2**20)
    assert len(data) == 50 * 2**20 and data[:16] * 4 == data[:64]


@task(limits=Resources(cpu="500m", mem="96Mi"), requests=Resources(cpu="100m", mem="32Mi"),
      environment={"STAGE": "swarm"})
def limited() -> dict[str, str]:
    def read(*paths: str) -> str:
        for p in paths:
            try:
                with open(p) as f:
                    return f.read().strip()
            except OSError:
                continue
        return "?"

    return {"mem": read("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
            "quota": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max"),
            "pids": read("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
            "stage": os.environ.get("STAGE", "")}


def test_limits_environment_and_pids_apply_in_the_container() -> None:
    """Limits reach the container's cgroup on its node; the environment is set."""
    got = limited()
    assert got["mem"] == str(96 * 2**20)
    assert got["quota"].split()[0] == "50000"  # 0.5 CPU of a 100 ms period
    assert got["pids"] == "4096"
    assert got["stage"] == "swarm"


@task(requests=Resources(cpu="64"))
def too_big() -> None: ...


def test_a_task_no_node_can_take_fails_after_the_scheduling_wait(swarm_cluster: cluster_mod.Cluster) -> None:
    """Requests that fit no node end in TaskSchedulingError after the configured wait, not a hang."""
    from dockertask import backends

    backend = make_backend(swarm_cluster, schedule_timeout=3.0)
    backends.set_default_backend(backend)
    try:
        began = time.monotonic()
        with pytest.raises(TaskSchedulingError, match=r"no node of the Swarm took it within 3 s.*cpu"):
            too_big()
        assert time.monotonic() - began < 20
    finally:
        backend.close()


@task(limits=Resources(mem="64Mi"))
def hog() -> None:
    chunks = []
    while True:
        chunks.append(bytearray(8 << 20))


def test_oom_is_reported_as_oom() -> None:
    """A task killed at its memory limit is a TaskOOMError, though the manager never reports OOM."""
    with pytest.raises(TaskOOMError, match="64Mi"):
        hog()


@task(timeout=2)
def sleeps() -> None:
    time.sleep(60)


def test_timeout_kills_the_task() -> None:
    """A task past its timeout is killed: TaskTimeoutError in seconds, and its service is gone."""
    began = time.monotonic()
    with pytest.raises(TaskTimeoutError, match="timeout of 2s"):
        sleeps()
    assert time.monotonic() - began < 20


@task(retries=2)
def flaky() -> int:
    attempt = current_context().attempt
    if attempt < 2:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


def test_retries_run_again_in_a_fresh_service() -> None:
    """A failed attempt is retried as a new service."""
    assert flaky() == 2


@task(secret_requests=[Secret("swarmdb", "password"), Secret("swarmdb", "token", Secret.MountType.ENV_VAR)])
def reads_secrets(marker: str) -> list[str]:
    time.sleep(2)  # long enough for the test to inspect the running service
    ctx = current_context()
    return [ctx.secrets.get("swarmdb", "password"), ctx.secrets.get("swarmdb", "token"), marker]


def test_secrets_arrive_but_never_in_a_service_spec(swarm_cluster: cluster_mod.Cluster,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Secret values and the call's arguments reach the task, and appear in no `docker service inspect` or
    secret list."""
    monkeypatch.setenv("DOCKERTASK_SECRET_SWARMDB_PASSWORD", "pw-swarm-123")
    monkeypatch.setenv("DOCKERTASK_SECRET_SWARMDB_TOKEN", "tok-swarm-456")
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        manager = swarm_cluster.engine("manager")
        while not done.is_set():
            for s in manager.services():
                seen.append(json.dumps(manager.inspect_service(s["ID"])))
            seen.append(json.dumps(manager.secrets()))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert reads_secrets("arg-marker-789") == ["pw-swarm-123", "tok-swarm-456", "arg-marker-789"]
    finally:
        done.set()
        watcher.join()
    assert any("dockertask-" in s for s in seen), "the watcher never saw the service"
    assert any(f"{swarm_cluster.registry}/dockertask-runtime@sha256:" in s for s in seen), "not run by digest"
    for value in ("pw-swarm-123", "tok-swarm-456", "arg-marker-789"):
        assert not any(value in s for s in seen)


@task(cache=True, cache_version="1")
def cached(x: int) -> str:
    import socket

    return f"{x}@{socket.gethostname()}"


def test_cache_hits_need_no_service() -> None:
    """A second identical call is answered from the cache."""
    first = cached(5)
    began = time.monotonic()
    assert cached(5) == first
    assert time.monotonic() - began < 0.3


@task
def slow_where(x: int) -> str:
    import socket

    time.sleep(3)
    return socket.gethostname()


def test_concurrent_calls_spread_over_nodes(swarm_cluster: cluster_mod.Cluster) -> None:
    """map_task's concurrent calls land on more than one node, as the nodes' own engines show."""
    from ..conftest import SESSION, SESSION_LABEL

    seen: dict[str, str] = {}  # container (its hostname) → the node whose engine runs it
    done = threading.Event()

    def watch() -> None:
        engines = {name: swarm_cluster.engine(name) for name in swarm_cluster.node_urls}
        while not done.is_set():
            for name, api in engines.items():
                for c in api.containers(filters={"label": f"{SESSION_LABEL}={SESSION}"}):
                    seen[c["Id"][:12]] = name
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = map_task(slow_where, concurrency=6)(x=list(range(6)))
    finally:
        done.set()
        watcher.join()
    assert len(results) == 6
    nodes_used = {seen.get(host) for host in results}  # the calls' own containers, not spares made meanwhile
    assert None not in nodes_used and len(nodes_used) >= 2, (results, seen)


def test_submit_runs_calls_concurrently() -> None:
    """submit() returns futures whose calls run at once on the cluster."""
    began = time.monotonic()
    futures = [slow_where.submit(i) for i in range(3)]
    assert len({f.result(timeout=120) for f in futures}) == 3
    assert time.monotonic() - began < 3 * 3


@task(limits=Resources(gpu=1))
def wants_gpu() -> None: ...


def test_settings_swarm_cannot_enforce_are_refused_before_anything_starts(
        swarm_cluster: cluster_mod.Cluster) -> None:
    """A GPU (or host device, host path...) is an UnsupportedResourceError and no service is made."""
    with pytest.raises(UnsupportedResourceError, match="gpu"):
        wants_gpu()
    assert not swarm_cluster.engine("manager").services()


def test_unreachable_callback_address_is_one_clear_error(swarm_cluster: cluster_mod.Cluster,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A callback address the nodes cannot reach fails with DockerUnavailableError naming it, not a hang."""
    from dockertask import backends

    monkeypatch.setenv("DOCKERTASK_SWARM_CONNECT_TIMEOUT", "3")
    backend = make_backend(swarm_cluster, callback_address="192.0.2.1")  # TEST-NET-1: routes nowhere
    backends.set_default_backend(backend)
    try:
        began = time.monotonic()
        with pytest.raises(DockerUnavailableError, match=r"could not reach this host at 192\.0\.2\.1:\d+"):
            where(1)
        assert time.monotonic() - began < 40
    finally:
        backend.close()


def test_a_registry_the_manager_cannot_reach_is_named(swarm_cluster: cluster_mod.Cluster) -> None:
    """Images go through the registry: one that cannot be reached is an ImageResolutionError naming it."""
    from dockertask import backends

    backend = make_backend(swarm_cluster, registry="no-such-registry:5000")
    backends.set_default_backend(backend)
    try:
        with pytest.raises(ImageResolutionError, match="no-such-registry:5000"):
            where(1)
    finally:
        backend.close()


SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import dockertask
from dockertask import task

@task
def forever() -> None:
    time.sleep(300)

dockertask.configure(backend="swarm", registry={registry!r}, callback_address={callback!r})
print("calling", flush=True)
forever()
"""


def _script_process(c: cluster_mod.Cluster, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "forever.py"
    script.write_text(SCRIPT.format(root=str(ROOT), registry=c.registry, callback=c.gateway))
    env = {**os.environ, "DOCKER_HOST": c.manager_url}
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_service(c: cluster_mod.Cluster, running: bool = True) -> None:
    from ..conftest import SESSION, SESSION_LABEL

    manager = c.engine("manager")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for s in manager.services(filters={"label": f"{SESSION_LABEL}={SESSION}"}):
            tasks = manager.tasks(filters={"service": s["ID"]})
            if tasks and tasks[0]["Status"]["State"] == "running":
                return
        time.sleep(0.2)
    raise AssertionError("the task's service never ran")


def test_ctrl_c_removes_the_service(swarm_cluster: cluster_mod.Cluster, tmp_path: Path) -> None:
    """Ctrl-C on the host removes the running task's service, its secret and its container."""
    proc = _script_process(swarm_cluster, tmp_path)
    try:
        _wait_for_service(swarm_cluster)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err or "KeyboardInterrupt" in err or "interrupted" in err, err
    deadline = time.monotonic() + 20
    while leftovers(swarm_cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(swarm_cluster)


def _cli_env(c: cluster_mod.Cluster) -> dict[str, str]:
    """The command line pointed at the cluster, as a user's environment would (DOCKERTASK_BACKEND=swarm)."""
    return {**os.environ, "DOCKER_HOST": c.manager_url, "DOCKERTASK_BACKEND": "swarm",
            "DOCKERTASK_SWARM_REGISTRY": c.registry, "DOCKERTASK_SWARM_CALLBACK": c.gateway}


def test_gc_removes_services_of_a_killed_host_process(swarm_cluster: cluster_mod.Cluster, tmp_path: Path) -> None:
    """After kill -9 the service stays; `dockertask gc` on the manager removes it and its secret."""
    proc = _script_process(swarm_cluster, tmp_path)
    try:
        _wait_for_service(swarm_cluster)
    finally:
        proc.kill()
        proc.wait()
    assert leftovers(swarm_cluster).get("services")
    env = _cli_env(swarm_cluster)
    out = subprocess.run([sys.executable, "-m", "dockertask", "gc"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while leftovers(swarm_cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(swarm_cluster)


def test_doctor_checks_the_cluster(swarm_cluster: cluster_mod.Cluster) -> None:
    """`dockertask doctor` on Swarm: nodes ready, registry push and pull on every node, and a task's round trip."""
    env = _cli_env(swarm_cluster)
    out = subprocess.run([sys.executable, "-m", "dockertask", "doctor"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 node(s), 3 ready and active" in out.stdout
    assert "every node pulls and runs it from registry:5000 (3 node(s))" in out.stdout
    assert "over the callback connection" in out.stdout
    bad = {**env, "DOCKERTASK_SWARM_CALLBACK": "192.0.2.1", "DOCKERTASK_SWARM_CONNECT_TIMEOUT": "2"}
    out = subprocess.run([sys.executable, "-m", "dockertask", "doctor"], env=bad, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and "could not reach this host at 192.0.2.1" in out.stdout, out.stdout


@task(container_image=ImageSpec(name="dockertask-test/swarm-spec", env={"FROM_SPEC": "built on the manager"},
                                commands=["echo spec > /spec.txt"]))
def in_spec_image() -> str:
    with open("/spec.txt") as f:
        return os.environ["FROM_SPEC"] + " " + f.read().strip()


def test_imagespec_is_built_on_the_manager_and_pulled_by_the_nodes() -> None:
    """An ImageSpec task's image is built on the manager's engine, pushed, and run from the registry."""
    assert in_spec_image() == "built on the manager spec"


@task(interruptible=True)
def preemptible() -> int:
    if current_context().attempt == 1:
        time.sleep(120)
    return current_context().attempt


def test_an_interruptible_task_killed_on_its_node_runs_again(swarm_cluster: cluster_mod.Cluster) -> None:
    """A task container killed on its node (a preemption) is re-run as a new service, not failed."""
    from ..conftest import SESSION, SESSION_LABEL

    result: list[Any] = []
    caller = threading.Thread(target=lambda: result.append(preemptible()))
    caller.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline:
        for name in swarm_cluster.node_urls:
            api = swarm_cluster.engine(name)
            running = api.containers(filters={"label": [f"{SESSION_LABEL}={SESSION}", "dockertask.attempt=1"]})
            if running:
                time.sleep(1)  # connected and running its call
                api.kill(running[0]["Id"])
                killed = name
                break
        time.sleep(0.2)
    caller.join(120)
    assert killed is not None, "never saw the task's container"
    assert result == [2]


@task
def stays_busy(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def test_a_node_cut_off_mid_call_ends_the_call_instead_of_a_hang(swarm_cluster: cluster_mod.Cluster) -> None:
    """A node that can no longer reach this host mid-call (a partition; a node that goes down looks the same
    from here) never closes the call's connection: the call, which has no timeout, must still end, as an
    interruption that says why, in about the keepalive's 15 s, and its service must still go."""
    from dockertask.errors import TaskInterruptedError

    from ..conftest import SESSION, SESSION_LABEL

    outcome: list[BaseException | str] = []

    def call() -> None:
        try:
            outcome.append(stays_busy(600))
        except BaseException as exc:  # noqa: BLE001 - the test asserts what it was
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    node = None
    deadline = time.monotonic() + 60
    while node is None and time.monotonic() < deadline:
        for name in swarm_cluster.node_urls:
            labels = [f"{SESSION_LABEL}={SESSION}", "dockertask.task=tests.swarm.test_swarm.stays_busy"]
            if swarm_cluster.engine(name).containers(filters={"label": labels}):
                node = name
                break
        time.sleep(0.2)
    assert node is not None, "never saw the task's container"
    time.sleep(1)  # connected and running its call
    # Drop what this node forwards to or from this host: its containers' traffic, not the Swarm's own.
    rules = [["FORWARD", way, swarm_cluster.gateway, "-j", "DROP"] for way in ("-d", "-s")]
    for rule in rules:
        swarm_cluster.on_node(node, "iptables", "-I", rule[0], "1", *rule[1:])
    cut = time.monotonic()
    try:
        caller.join(60)
        ended = time.monotonic() - cut
    finally:
        for rule in rules:
            swarm_cluster.on_node(node, "iptables", "-D", *rule)
    assert not caller.is_alive(), "the call still waits a minute after its node was cut off"
    assert len(outcome) == 1 and isinstance(outcome[0], TaskInterruptedError), outcome
    assert "became unreachable from this host" in str(outcome[0])
    assert ended < 45, f"took {ended:.0f} s to notice"


def test_a_manager_unreachable_mid_call_loses_neither_the_result_nor_the_cleanup(
        swarm_cluster: cluster_mod.Cluster) -> None:
    """The manager's API stops answering this host while a call runs (a restart, a partition): the call goes
    on over its own connection and returns its result; its service and secret, which could not be removed
    then, go once the manager answers again, with no further call (a retry in the background)."""
    from ..conftest import SESSION, SESSION_LABEL

    outcome: list[Any] = []
    caller = threading.Thread(target=lambda: outcome.append(stays_busy(4)))
    caller.start()
    manager = swarm_cluster.engine("manager")
    labels = [f"{SESSION_LABEL}={SESSION}", "dockertask.task=tests.swarm.test_swarm.stays_busy"]
    deadline = time.monotonic() + 60
    while not any(t["Status"]["State"] == "running" for t in manager.tasks(filters={"label": labels})):
        assert time.monotonic() < deadline, "the call's task never ran"
        time.sleep(0.2)
    time.sleep(0.5)  # connected and running its call
    # Refused (not dropped) so the removal fails at once, as against a restarting engine.
    rule = ["INPUT", "-p", "tcp", "--dport", "2375", "-s", swarm_cluster.gateway, "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    swarm_cluster.on_node("manager", "iptables", "-I", rule[0], "1", *rule[1:])
    try:
        caller.join(60)
    finally:
        swarm_cluster.on_node("manager", "iptables", "-D", *rule)
    assert outcome == ["finished"]
    assert leftovers(swarm_cluster).get("services"), "the service went although the manager could not be asked"
    # The autouse fixture then waits up to 15 s for nothing to be left: the retry comes every 5 s.


@task
def who_ran_me(x: int) -> tuple[str, str, int]:
    import socket

    return socket.gethostname(), current_context().run_id, x


def _spare_services(swarm_cluster: cluster_mod.Cluster, task_name: str) -> list[dict[str, Any]]:
    from ..conftest import SESSION, SESSION_LABEL

    labels = [f"{SESSION_LABEL}={SESSION}", f"dockertask.task=tests.swarm.test_swarm.{task_name}"]
    return list(swarm_cluster.engine("manager").services(filters={"label": labels}))


def _wait_for_spare_container(swarm_cluster: cluster_mod.Cluster, task_name: str) -> tuple[str, dict[str, Any]]:
    """The node and container of the one service made ahead for ``task_name``, once it is running. Found
    by the service (the calls' own are removed by then; their containers may still be going on a node)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if spares.SPARES.idle_count():  # made: started and connected
            services = _spare_services(swarm_cluster, task_name)
            assert len(services) == 1, services
            run_id = services[0]["Spec"]["Labels"]["dockertask.run-id"]
            for name in swarm_cluster.node_urls:
                found = swarm_cluster.engine(name).containers(filters={"label": f"dockertask.run-id={run_id}"})
                if found:
                    return name, found[0]
        time.sleep(0.1)
    raise AssertionError("no service was made ahead for the next call")


def test_a_later_call_runs_in_the_service_made_ahead_for_it(swarm_cluster: cluster_mod.Cluster) -> None:
    """From the second call of a configuration on, a service for the next call is started and connected
    while nothing waits for it; the next call runs in exactly that container, under its run id."""
    first, second = who_ran_me(1), who_ran_me(2)
    node, container = _wait_for_spare_container(swarm_cluster, "who_ran_me")
    assert container["Labels"]["dockertask.run-id"] not in (first[1], second[1])
    third = who_ran_me(3)
    assert third == (container["Id"][:12], container["Labels"]["dockertask.run-id"], 3)
    assert len({first[0], second[0], third[0]}) == 3


def test_a_spare_whose_container_died_is_not_used(swarm_cluster: cluster_mod.Cluster) -> None:
    """A spare's container killed while it waited (its node went away, an operator): the call that would
    have taken it runs in a fresh service and succeeds; the dead spare's service goes too."""
    who_ran_me(1)
    who_ran_me(2)
    node, container = _wait_for_spare_container(swarm_cluster, "who_ran_me")
    swarm_cluster.engine(node).kill(container["Id"])
    time.sleep(0.5)  # the hang-up reaching this host: a spare that dies during its claim is a lost call
    third = who_ran_me(3)
    assert third[2] == 3 and third[0] != container["Id"][:12]


@task(requests=Resources(cpu="100m"))
def reserves(x: int) -> int:
    return x


def test_a_task_with_requests_gets_no_spare(swarm_cluster: cluster_mod.Cluster) -> None:
    """A spare on Swarm runs, so it would hold its requests' reservation on a node while nothing uses it:
    a task with requests gets none."""
    assert [reserves(i) for i in range(3)] == [0, 1, 2]
    time.sleep(1)
    assert spares.SPARES.idle_count() == 0 and _spare_services(swarm_cluster, "reserves") == []


def test_an_image_the_nodes_cannot_pull_is_named(swarm_cluster: cluster_mod.Cluster) -> None:
    """An image whose manifest the registry no longer has: the nodes' pull fails, and the error names the
    image and the registry (not a hang, not a bare engine message)."""
    import io
    import tarfile
    import urllib.request
    import uuid

    from dockertask import backends
    from dockertask.images import refs

    ref = f"dockertask-test/unpullable:{uuid.uuid4().hex[:8]}"
    manager = swarm_cluster.engine("manager")
    dockerfile = f"FROM {refs.default_image_ref()}\nLABEL dockertask.test={ref}\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    for _ in manager.build(fileobj=io.BytesIO(context.getvalue()), custom_context=True, tag=ref, decode=True):
        pass
    backend = make_backend(swarm_cluster)
    backends.set_default_backend(backend)
    try:
        by_digest = backend.publish(ref)
        name, digest = by_digest.split("/", 1)[1].split("@")
        request = urllib.request.Request(f"{swarm_cluster.registry_url}/v2/{name}/manifests/{digest}", method="DELETE")
        assert urllib.request.urlopen(request, timeout=10).status == 202
        # Untag the registry name on the manager (the image stays as `ref`): no node, the manager included,
        # knows the digest any more, so each must pull it, from a registry that no longer has it.
        from dockertask.backends.swarm import _registry_name

        repo, tag = _registry_name(ref, swarm_cluster.registry)
        manager.remove_image(f"{repo}:{tag}")

        @task(container_image=ref)
        def on_unpullable() -> int:
            return 1

        with pytest.raises(ImageResolutionError, match=r"could not pull .*unpullable.*registry:5000"):
            on_unpullable()
    finally:
        backend.close()



@task(requests=Resources(cpu="2"))
def holds_a_node(seconds: float) -> None:
    time.sleep(seconds)


@task(requests=Resources(cpu="2"), timeout=4)
def quick_but_queued() -> str:
    time.sleep(1)
    return "done"


def test_the_timeout_counts_from_the_tasks_start_not_its_wait_for_a_node(swarm_cluster: cluster_mod.Cluster) -> None:
    """A task that waits ~7 s for a node (all are reserved) and then runs 1 s meets its 4 s timeout."""
    manager = swarm_cluster.engine("manager")
    nodes = len(swarm_cluster.node_urls)
    holders = [holds_a_node.submit(8) for _ in range(nodes)]  # each node's whole CPU is reserved by one
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [t for s in manager.services() for t in manager.tasks(filters={"service": s["ID"]})
                   if t["Status"]["State"] == "running"]
        if len(running) >= nodes:
            break
        time.sleep(0.2)
    began = time.monotonic()
    assert quick_but_queued() == "done"
    assert time.monotonic() - began > 4  # it did wait for a node longer than its timeout
    for h in holders:
        h.result(timeout=60)


@task
def shout(data: File) -> Directory:
    import socket

    os.makedirs("/tmp/out/sub", exist_ok=True)
    with open(data) as src, open("/tmp/out/sub/loud.txt", "w") as dst:
        dst.write(src.read().upper())
    with open("/tmp/out/node.txt", "w") as f:
        f.write(socket.gethostname())
    return Directory("/tmp/out")


def test_files_travel_in_and_out_over_the_callback(tmp_path: Path) -> None:
    """A File goes to whichever node runs the task and a Directory comes back, with no shared disk."""
    data = tmp_path / "words.txt"
    data.write_text("quiet words\n" * 1000)
    out = Path(shout(data))
    assert (out / "sub" / "loud.txt").read_text() == "QUIET WORDS\n" * 1000
    assert (out / "node.txt").read_text()


@task(reusable=ReusePolicy(replicas=1, idle_ttl=60))
def warm(x: int) -> tuple[int, str]:
    import socket

    print(f"warm {x}", flush=True)
    return x * 2, socket.gethostname()


def test_reusable_replicas_serve_calls_over_the_callback(capfd: pytest.CaptureFixture[str]) -> None:
    """ReusePolicy on Swarm: one replica service serves call after call, with output, until shut down."""
    from dockertask.calls import replicas

    try:
        got = [warm(i) for i in range(4)]
        assert [g[0] for g in got] == [0, 2, 4, 6]
        assert len({g[1] for g in got}) == 1, got  # one replica's container served them all
        began = time.monotonic()
        assert warm(9)[0] == 18
        assert time.monotonic() - began < 0.5  # no service round trip for a warm call
        assert "warm 9" in capfd.readouterr().out
    finally:
        replicas.shutdown()


SUITE = {
    "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    "tests/data/answer.txt": "42\n",
    "tests/test_on_nodes.py": '''
import os
import pathlib
import unittest


def test_a_data_file_beside_the_test():
    assert (pathlib.Path(__file__).parent / "data" / "answer.txt").read_text() == "42\\n"


def test_runs_on_a_node(tmp_path):
    (tmp_path / "x").write_text("y")
    assert os.environ.get("DOCKERTASK_NODE") in ("manager", "worker1", "worker2"), dict(os.environ)
    print("ran on", os.environ["DOCKERTASK_NODE"])


class Arithmetic(unittest.TestCase):
    def test_sum(self):
        self.assertEqual(sum([1, 2, 3]), 6)
''',
}


def test_a_whole_suite_runs_in_the_image_on_the_nodes(swarm_cluster: cluster_mod.Cluster, tmp_path: Path) -> None:
    """`pytest --dockertask-image=REF` on Swarm: the suite (a unittest class, a data file beside the tests,
    tmp_path) runs in containers on the cluster's nodes, as on one engine, and nothing is left after it."""
    from dockertask.images.refs import default_image_ref

    for name, text in SUITE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-s", "-p", "no:cacheprovider",
                           f"--dockertask-image={default_image_ref()}"], cwd=tmp_path, env=_cli_env(swarm_cluster),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout and "3 tests run in containers of" in done.stdout
    assert re.search(r"ran on (manager|worker\d)", done.stdout)  # a cluster node, as it names itself
    deadline = time.monotonic() + 20
    while leftovers(swarm_cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(swarm_cluster)
