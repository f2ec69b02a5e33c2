"""Every seed parameter on a real engine: secrets, retries, interruptible, cache, plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from docker.errors import NotFound

from dockertask import Docker, Secret, current_context, task

ROOT = Path(__file__).resolve().parents[2]
VALUE = "hunter2-" + "x" * 8


@task(secret_requests=[Secret("db", "password"), Secret("api", "token", Secret.MountType.ENV_VAR)])
def read_secrets() -> dict[str, object]:
    import stat

    path = "/etc/secrets/db/password"
    st, dst = os.stat(path), os.stat("/etc/secrets/db")
    with open("/proc/mounts") as f:
        mounts = f.read()
    with open(path) as f:
        content = f.read()
    return {
        "file": content,
        "ctx_file": current_context().secrets.get("db", "password"),
        "ctx_env": current_context().secrets.get("api", "token"),
        "env": os.environ.get("_FSEC_API_TOKEN"),
        "mode": stat.S_IMODE(st.st_mode), "dir_mode": stat.S_IMODE(dst.st_mode),
        "owner_is_task": st.st_uid == os.getuid(),
        "tmpfs": any(line.split()[1] == "/etc/secrets" and line.split()[2] == "tmpfs" for line in mounts.splitlines()),
        "env_has_file_secret": any(VALUE in v for v in os.environ.values()),
    }


def test_secrets_reach_the_task_as_files_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FILE secrets are 0400 files on a tmpfs owned by the task; ENV_VAR ones are _FSEC_ variables."""
    secrets_dir = tmp_path / "s"
    (secrets_dir / "db").mkdir(parents=True)
    (secrets_dir / "db" / "password").write_text(VALUE)
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(secrets_dir))
    monkeypatch.setenv("DOCKERTASK_SECRET_API_TOKEN", "tok-123")
    got = read_secrets()
    assert got["file"] == got["ctx_file"] == VALUE
    assert got["env"] == got["ctx_env"] == "tok-123"
    assert got["mode"] == 0o400 and got["dir_mode"] == 0o700 and got["owner_is_task"]
    assert got["tmpfs"] is True
    assert got["env_has_file_secret"] is False


@task(secret_requests=[Secret("db", "password")])
def hold_secret(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_secret_value_is_not_in_docker_inspect_or_logs(api, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """While the task runs, `docker inspect` of its container shows no trace of the value."""
    monkeypatch.setenv("DOCKERTASK_SECRET_DB_PASSWORD", VALUE)
    future = hold_secret.submit(4)
    inspected = None
    deadline = time.monotonic() + 30
    while inspected is None and time.monotonic() < deadline:
        for c in api.containers(filters={"label": "dockertask.task=" + hold_secret.name}):
            try:
                inspected = api.inspect_container(c["Id"])
            except NotFound:  # ended between the listing and this
                continue
        time.sleep(0.1)
    assert future.result(timeout=60) == "done"
    assert inspected is not None, "never saw the running container"
    assert VALUE not in json.dumps(inspected)
    assert VALUE not in "".join(capfd.readouterr())


@task(retries=2)
def fails_twice() -> tuple[int, str]:
    import platform

    ctx = current_context()
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} on {platform.node()}")
    return ctx.attempt, platform.node()


def test_retries_run_each_attempt_in_a_fresh_container(caplog: pytest.LogCaptureFixture) -> None:
    """Attempts are numbered from 1, each in a new container, and each retry is logged with its reason."""
    with caplog.at_level("WARNING", logger="dockertask"):
        attempt, node = fails_twice()
    assert attempt == 3
    nodes = [r.getMessage().split(" on ")[1].split(";")[0] for r in caplog.records if "retrying" in r.getMessage()]
    assert len(nodes) == 2 and len({*nodes, node}) == 3


@task(interruptable=True)
def preemptible(seconds: float) -> int:
    if current_context().attempt == 1:
        time.sleep(seconds)
    return current_context().attempt


def test_interruptible_task_is_rerun_after_preemption(api) -> None:  # type: ignore[no-untyped-def]
    """A container stopped from outside is re-run (retries=0); it has the label and lowest priority."""
    seen: dict[str, object] = {}

    def preempt() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = api.containers(filters={"label": ["dockertask.task=" + preemptible.name,
                                                      "dockertask.interruptible=true"]})
            if found:
                info = api.inspect_container(found[0]["Id"])
                seen["shares"] = info["HostConfig"]["CpuShares"]
                seen["oom"] = info["HostConfig"]["OomScoreAdj"]
                time.sleep(0.5)
                api.stop(found[0]["Id"], timeout=2)
                return
            time.sleep(0.1)

    t = threading.Thread(target=preempt)
    t.start()
    start = time.monotonic()
    assert preemptible(60) == 2
    t.join()
    assert time.monotonic() - start < 30
    assert seen == {"shares": 2, "oom": 1000}


def _run_py(code: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


CACHED = """
    import time, uuid
    from dockertask import task
    @task(cache=True, cache_version="1")
    def token(x: int) -> str:
        time.sleep(1)
        return uuid.uuid4().hex
    t = time.monotonic()
    print(token({x}), round(time.monotonic() - t, 3))
"""


def test_cache_is_shared_across_processes_and_runs_once_when_concurrent(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """Two processes calling at once run the task once; a third gets the hit with no engine at all."""
    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(tmp_path / "cache"))
    procs = [_run_py(CACHED.format(x=1)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    values = [o[0].split()[0] for o in outs]
    assert values[0] == values[1]
    # An unreachable engine proves the hit starts no container (it cannot even connect).
    third = _run_py(CACHED.format(x=1), DOCKER_HOST="unix:///nonexistent/docker.sock")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    value, seconds = out.split()
    assert value == values[0] and float(seconds) < 0.5, (out, err)
    other = _run_py(CACHED.format(x=2))
    assert other.communicate(timeout=60)[0].split()[0] != values[0]


@task(task_config=Docker(shm_size="128m", user="1234:1234", cap_add=["NET_ADMIN"], network="none"))
def container_options() -> dict[str, object]:
    import socket

    sv = os.statvfs("/dev/shm")
    with open("/proc/self/status") as f:
        caps = [line for line in f if line.startswith("CapEff")]
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1)
        online = True
    except OSError:
        online = False
    return {"shm": sv.f_blocks * sv.f_frsize, "uid": os.getuid(), "caps": caps[0].split()[1], "online": online,
            "ifaces": sorted(os.listdir("/sys/class/net"))}


def test_docker_plugin_options_apply() -> None:
    """Docker(...) sets shm size, user, capabilities and network of the container."""
    got = container_options()
    assert got["shm"] == 128 * 1024 * 1024
    assert got["uid"] == 1234
    assert got["online"] is False and got["ifaces"] == ["lo"]


def _pids_max() -> str:
    with open("/sys/fs/cgroup/pids/pids.max") as f:
        return f.read().strip()


pids_max = task(_pids_max)


def _spawn_threads(n: int) -> int:
    import threading as th

    started, stop = 0, th.Event()
    try:
        for _ in range(n):
            th.Thread(target=stop.wait, daemon=True).start()
            started += 1
    except RuntimeError:  # "can't start new thread": the limit held
        pass
    stop.set()
    return started


def test_a_default_process_limit_applies_and_docker_pids_limit_changes_it() -> None:
    """Every task container has a pids limit (4096 by default); Docker(pids_limit=N) stops a thread flood at N."""
    from dockertask.plugins import DEFAULT_PIDS_LIMIT

    assert pids_max() == str(DEFAULT_PIDS_LIMIT)
    limited = task(task_config=Docker(pids_limit=64))(_spawn_threads)
    assert limited(500) < 64
    unlimited = task(task_config=Docker(pids_limit=0))(_pids_max)
    assert unlimited() == "max"


@task(secret_requests=[Secret("tls", "p12"), Secret("big", "blob")])
def read_binary_secrets() -> tuple[bytes, bytes, int]:
    with open("/etc/secrets/tls/p12", "rb") as f:
        from_file = f.read()
    secrets = current_context().secrets
    return from_file, secrets.get_bytes("tls", "p12"), len(secrets.get("big", "blob"))


def test_binary_and_large_secrets_reach_the_task_byte_exact(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A non-UTF-8 secret arrives byte for byte (file and get_bytes); a 6 MiB one fits (the tmpfs is sized to it)."""
    binary = bytes(range(256)) * 4
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "p12").write_bytes(binary)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob").write_text("k" * (6 << 20))
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(tmp_path))
    assert read_binary_secrets() == (binary, binary, 6 << 20)
