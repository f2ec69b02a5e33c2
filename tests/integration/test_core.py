"""The core executor on a real engine: values, errors, output, images, cleanup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dockertask import (
    DockerTaskError,
    PythonVersionError,
    Resources,
    TaskFailedError,
    TaskOOMError,
    TaskTimeoutError,
    current_context,
    task,
)
from dockertask.errors import RemoteTraceback
from dockertask.runtime import protocol

from .userproj.mathutil import DomainError, Point, scaled

ROOT = Path(__file__).resolve().parents[2]


@task
def add(x: int, y: int = 1) -> int:
    return x + y


def test_call_returns_value_with_positional_keyword_and_default_args() -> None:
    """t(...) runs in a container and returns the function's value for every calling style."""
    assert add(2, 3) == 5
    assert add(x=2) == 3
    assert add(4, y=-4) == 0


@task
def where() -> dict[str, object]:
    import platform

    return {"in_container": current_context().in_container, "node": platform.node(), "pid": os.getpid()}


def test_runs_in_a_fresh_container_each_call() -> None:
    """Each call gets a new container (a different hostname), not the host process."""
    a, b = where(), where()
    assert a["in_container"] is True
    assert a["node"] != b["node"]
    assert a["node"] != os.uname().nodename


@task
def uses_project_code(x: int) -> Point:
    return Point(scaled(x), x)


def test_user_modules_travel_by_value() -> None:
    """Code from the user's own package works although the image has none of it installed."""
    assert uses_project_code(3) == Point(30, 3)


@task
def fails(msg: str) -> None:
    raise DomainError(msg)


def test_user_exception_is_reraised_as_its_type_with_container_traceback() -> None:
    """A user exception comes back as its own type, chained to the container's traceback."""
    with pytest.raises(DomainError, match="bad input") as info:
        fails("bad input")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "Traceback (most recent call last)" in str(cause)
    assert "DomainError: bad input" in str(cause)


@task
def raises_unpicklable() -> None:
    import threading

    class Weird(Exception):
        def __init__(self) -> None:
            super().__init__("cannot travel")
            self.lock = threading.Lock()

    raise Weird()


def test_unpicklable_exception_becomes_task_failed_error() -> None:
    """An exception that cannot be pickled arrives as TaskFailedError with type, message and traceback."""
    with pytest.raises(TaskFailedError) as info:
        raises_unpicklable()
    err = info.value
    assert "Weird" in err.type_name
    assert "cannot travel" in str(err)
    assert "raise Weird()" in err.remote_traceback or "Weird" in err.remote_traceback


@task
def big(n: int) -> bytes:
    return bytes(range(256)) * (n // 256)


@task
def echo_len(data: bytes) -> int:
    return len(data)


def test_fifty_megabytes_each_way() -> None:
    """A 50 MB bytes return value comes back by value, and a 50 MB argument goes in."""
    n = 50 * 1024 * 1024
    out = big(n)
    assert len(out) == n and out[:3] == b"\x00\x01\x02" and out[-1] == 255
    assert echo_len(out) == n


@task
def prints_frame_lookalikes() -> str:
    import sys

    sys.stdout.write("R\x00\x00\x00\x00\x00\x00\x00\x05fake!\n")
    print("plain line")
    print("to stderr", file=sys.stderr)
    return "real"


def test_printed_bytes_can_never_pass_for_the_result(capfd: pytest.CaptureFixture[str]) -> None:
    """Output that mimics the result protocol is just output; stdout and stderr stay apart."""
    assert prints_frame_lookalikes() == "real"
    out, err = capfd.readouterr()
    assert "plain line" in out and "fake!" in out
    assert "to stderr" in err and "plain line" not in err


def _run_script(code: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def test_output_streams_live_line_by_line() -> None:
    """Each printed line reaches the host while the task is still running."""
    proc = _run_script("""
        import time
        from dockertask import task
        @task
        def ticker(n: int) -> int:
            for i in range(n):
                print("tick", i)
                time.sleep(0.7)
            return n
        print("result", ticker(4))
    """)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append((time.monotonic(), line.strip()))
    proc.wait(60)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    lines = [text for _, text in seen]
    assert lines == ["tick 0", "tick 1", "tick 2", "tick 3", "result 4"]
    assert seen[-1][0] - seen[0][0] > 1.5, "the first line arrived only at the end"


@task(limits=Resources(cpu="0.5", mem="64Mi"), requests=Resources(cpu="250m", mem="32Mi"))
def cgroup_values() -> dict[str, str]:
    def read(*paths: str) -> str:
        for p in paths:
            if os.path.exists(p):
                with open(p) as f:
                    return f.read().strip()
        return ""

    return {
        "quota": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"),
        "period": read("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"),
        "shares": read("/sys/fs/cgroup/cpu/cpu.shares", "/sys/fs/cgroup/cpu,cpuacct/cpu.shares"),
        "mem": read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "memsw": read("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
        "soft": read("/sys/fs/cgroup/memory/memory.soft_limit_in_bytes"),
        "v2_cpu_max": read("/sys/fs/cgroup/cpu.max"),
        "v2_mem_max": read("/sys/fs/cgroup/memory.max"),
        "v2_mem_low": read("/sys/fs/cgroup/memory.low"),
        "v2_weight": read("/sys/fs/cgroup/cpu.weight"),
    }


def test_resources_are_enforced_by_the_kernel() -> None:
    """Requests and limits show up in the container's own cgroup files."""
    v = cgroup_values()
    mi = 1024 * 1024
    if v["v2_cpu_max"]:  # cgroup v2
        quota, period = v["v2_cpu_max"].split()
        assert int(quota) / int(period) == pytest.approx(0.5)
        assert int(v["v2_mem_max"]) == 64 * mi
        assert int(v["v2_mem_low"]) == 32 * mi
    else:  # cgroup v1
        assert int(v["quota"]) / int(v["period"]) == pytest.approx(0.5)
        assert int(v["shares"]) == 256
        assert int(v["mem"]) == 64 * mi
        assert int(v["soft"]) == 32 * mi
        if v["memsw"]:  # only with swap accounting on
            assert int(v["memsw"]) == 64 * mi


@task(requests=Resources(mem="48Mi"))
def request_only_mem() -> str:
    with open("/sys/fs/cgroup/memory/memory.limit_in_bytes") if os.path.exists(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes") else open("/sys/fs/cgroup/memory.max") as f:
        return f.read().strip()


def test_missing_limit_defaults_to_request() -> None:
    """As in Kubernetes, a request without a limit is also the limit."""
    assert int(request_only_mem()) == 48 * 1024 * 1024


@task(environment={"MODE": "fast", "EMPTY": ""})
def read_env() -> tuple[str, str]:
    return os.environ["MODE"], os.environ["EMPTY"]


def test_environment_is_injected() -> None:
    """environment= variables are set in the container."""
    assert read_env() == ("fast", "")


@task(timeout=2)
def sleeps(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def test_timeout_kills_and_removes_the_container() -> None:
    """Past its timeout the container is killed (not waited for) and TaskTimeoutError names task and limit."""
    start = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"sleeps.*timeout of 2s") as info:
        sleeps(60)
    assert time.monotonic() - start < 15
    assert isinstance(info.value, TimeoutError)
    assert sleeps(0.1) == "woke"


@task(limits=Resources(mem="48Mi"))
def hog() -> int:
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(8 * 1024 * 1024))
    return len(blocks)


def test_oom_kill_is_task_oom_error_naming_the_limit() -> None:
    """A task killed for exceeding its memory limit raises TaskOOMError (a MemoryError) naming it."""
    with pytest.raises(TaskOOMError, match="48Mi") as info:
        hog()
    assert isinstance(info.value, MemoryError)


@task(container_image="dockertask-test-nopython:1")
def needs_python() -> int:
    return 1


def _image_without_python(api, tag: str) -> str:  # type: ignore[no-untyped-def]
    """An image of one file, /etc/hostname: no python3 anywhere (removed with the session's test images)."""
    import io
    import tarfile

    from dockertask.backends.docker import imported_id

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    answer = api.import_image_from_data(buf.getvalue(), repository="dockertask-test-nopython", tag=tag)
    api.tag(imported_id(answer), "dockertask-test-nopython", tag)  # Podman ignores an import's tag
    return f"dockertask-test-nopython:{tag}"


def test_image_without_python_is_a_clear_error(api) -> None:  # type: ignore[no-untyped-def]
    """An image with no python3 fails with PythonVersionError saying Python is missing."""
    _image_without_python(api, "1")
    start = time.monotonic()
    with pytest.raises(PythonVersionError, match="has no Python"):
        needs_python()
    assert time.monotonic() - start < 20, "the host hung writing to a container that never read its input"


def test_a_missing_python_is_found_in_the_containers_filesystem(api) -> None:  # type: ignore[no-untyped-def]
    """The backend's own look for python3 on an exited container's PATH (what names a missing Python when
    the init's words are lost): no in an image without it, yes in the default image."""
    from dockertask.backends import default_backend
    from dockertask.images.refs import default_image_ref

    backend = default_backend()
    for image, lacks in ((_image_without_python(api, "2"), True), (default_image_ref(), False)):
        cid = api.create_container(image, ["python3"], labels={"dockertask.test": "lacks"})["Id"]
        try:
            assert backend._lacks(cid, "python3", api.inspect_container(cid)["Config"]["Env"] or []) is lacks, image
        finally:
            api.remove_container(cid, force=True)


def test_other_python_version_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the image's major.minor differs from the host's, the error names both versions."""

    monkeypatch.setattr(protocol, "HOST_PYTHON", "3.99")
    with pytest.raises(PythonVersionError, match=r"image has Python 3\.\d+\.\d+ but the host has Python 3\.99"):
        add(1)


def test_unknown_image_is_a_clear_error() -> None:
    """A reference that is neither local nor pullable says so, and nothing is left behind."""

    @task(container_image="dockertask-test/does-not-exist:never")
    def t() -> int:
        return 1

    with pytest.raises(DockerTaskError, match="does-not-exist:never"):
        t()


@task(timeout=60)
def naps(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def test_submit_runs_concurrently() -> None:
    """Several submits run at the same time and each Future holds its own value."""
    start = time.monotonic()
    futures = [naps.submit(3) for _ in range(4)]
    assert [f.result(timeout=60) for f in futures] == ["woke"] * 4
    assert time.monotonic() - start < 11  # 4 x 3 s in sequence would be over 12 s


def test_submit_future_carries_the_exception() -> None:
    """A failing submitted task puts its own exception in the Future."""
    with pytest.raises(DomainError, match="async"):
        fails.submit("async").result(timeout=60)


def test_local_runs_in_process() -> None:
    """t.local(...) runs in this process with the same checks, no container."""
    assert where.local()["pid"] == os.getpid()
    assert add.local(1, y=2) == 3


@task(limits=Resources(ephemeral_storage="1Gi"))
def with_storage() -> int:
    return 1


def test_ephemeral_storage_is_enforced_or_clearly_refused(api) -> None:  # type: ignore[no-untyped-def]
    """StorageOpt size works where the storage driver supports it; elsewhere a clear error, nothing left."""
    from dockertask import UnsupportedResourceError

    info = api.info()
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
    if info.get("Driver") in ("overlay2", "overlay") and backing != "xfs":  # Podman calls its driver overlay
        with pytest.raises(UnsupportedResourceError, match="ephemeral_storage"):
            with_storage()
    else:
        assert with_storage() == 1


@task(limits=Resources(gpu=1))
def with_gpu() -> int:
    return 1


def test_gpu_request_without_gpu_runtime_is_a_clear_error(api) -> None:  # type: ignore[no-untyped-def]
    """gpu maps to a DeviceRequest; an engine with no GPU runtime refuses it with a clear error."""
    from dockertask import UnsupportedResourceError

    if "nvidia" in json.dumps(api.info().get("Runtimes", {})):
        assert with_gpu() == 1
    else:
        with pytest.raises(UnsupportedResourceError, match="gpu"):
            with_gpu()


@task
def nested() -> int:
    return add(1)


def test_task_called_inside_a_task_says_why_it_cannot_run() -> None:
    """Calling a task from inside a container is a clear DockerUnavailableError, not an ImportError."""
    from dockertask import DockerUnavailableError

    with pytest.raises(DockerUnavailableError, match="inside a task's container"):
        nested()
