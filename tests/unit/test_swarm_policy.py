"""The Swarm backend's policy without a cluster: settings, refusals, registry names, and the callback
carrier end to end between a local CallbackServer and the real connector in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dockertask
from dockertask import Docker, Resources, config
from dockertask.backends import callback
from dockertask.backends.base import ContainerJob, JobResources, StdinPieces
from dockertask.backends.swarm import _connector_source, _registry_name, refusal
from dockertask.errors import TaskDefinitionError
from dockertask.plugins import options_for


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("DOCKERTASK_BACKEND", "DOCKERTASK_SWARM_REGISTRY", "DOCKERTASK_SWARM_CALLBACK",
                "DOCKERTASK_SWARM_SCHEDULE_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    config.reset()
    yield
    config.reset()
    dockertask.backends.set_default_backend(None)


def test_settings_come_from_pyproject_then_environment_then_configure(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer overrides the one before; unset layers leave the default (one engine)."""
    assert config.settings().backend == "docker"
    (tmp_path / "pyproject.toml").write_text('[tool.dockertask]\nbackend = "swarm"\n[tool.dockertask.swarm]\n'
                                             'registry = "reg.local:5000"\ncallback_address = "10.0.0.5"\n')
    got = config.settings()
    assert (got.backend, got.registry, got.callback_address, got.schedule_timeout) == \
        ("swarm", "reg.local:5000", "10.0.0.5", 120.0)
    monkeypatch.setenv("DOCKERTASK_SWARM_REGISTRY", "other:5000")
    monkeypatch.setenv("DOCKERTASK_SWARM_SCHEDULE_TIMEOUT", "7")
    assert config.settings().registry == "other:5000" and config.settings().schedule_timeout == 7.0
    dockertask.configure(backend="docker", callback_address="10.1.1.1:4000")
    got = config.settings()
    assert (got.backend, got.registry, got.callback_address) == ("docker", "other:5000", "10.1.1.1:4000")


@pytest.mark.parametrize("kwargs,match", [
    ({"backend": "kubernetes"}, r"backend='kubernetes'.*expected one of docker, swarm"),
    ({"registry": "http://reg/x"}, r"registry='http://reg/x'.*expected host or host:port"),
    ({"schedule_timeout": -1}, r"schedule_timeout=-1.*expected seconds"),
])
def test_bad_settings_name_the_setting_and_what_was_expected(kwargs: dict[str, object], match: str) -> None:
    """configure() refuses a bad value with a TaskDefinitionError naming it, and changes nothing."""
    with pytest.raises(TaskDefinitionError, match=match):
        dockertask.configure(**kwargs)  # type: ignore[arg-type]
    assert config.settings().backend == "docker"


def test_a_bad_backend_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKERTASK_BACKEND", "swram")
    with pytest.raises(TaskDefinitionError, match=r"backend='swram' in the environment"):
        config.settings()


def _job(resources: JobResources | None = None, **docker: object) -> ContainerJob:
    return ContainerJob("img", ["python3"], StdinPieces(()), resources=resources or JobResources(),
                        options=options_for(Docker(**docker)) if docker else options_for(None))


@pytest.mark.parametrize("job,match", [
    (_job(JobResources(limits=Resources(gpu=1))), "limits.gpu"),
    (_job(JobResources(requests=Resources(ephemeral_storage="1Gi"))), "requests.ephemeral_storage"),
    (_job(devices=["/dev/fuse"]), "devices"),
    (_job(volumes=["/data:/data"]), "host path"),
    (_job(network="none"), "network='none'"),
    (_job(platform="linux/arm64"), "platform"),
])
def test_settings_a_service_cannot_enforce_are_refused(job: ContainerJob, match: str) -> None:
    """Each is refused before anything is created, naming the setting."""
    why = refusal(job)
    assert why is not None and match in why


def test_what_a_service_can_do_is_not_refused() -> None:
    """Limits, requests, named volumes, shm size, a user and capabilities all translate."""
    job = _job(JobResources(Resources(cpu="1", mem="1Gi"), Resources(cpu="2", mem="2Gi")),
               volumes=["volume:cache:/cache"], shm_size="64m", user="1000", cap_add=["NET_ADMIN"])
    assert refusal(job) is None


@pytest.mark.parametrize("ref,expected", [
    ("dockertask-runtime:py3.11-abc", ("reg:5000/dockertask-runtime", "py3.11-abc")),
    ("team/trainer", ("reg:5000/team/trainer", "latest")),
    ("ghcr.io/org/img:1.2", ("reg:5000/org/img", "1.2")),
    ("localhost:5000/x:2", ("reg:5000/x", "2")),
])
def test_registry_names(ref: str, expected: tuple[str, str]) -> None:
    """An image's name in the Swarm registry: its path and tag, without its original registry host."""
    assert _registry_name(ref, "reg:5000") == expected


ECHO = ("import sys; data = sys.stdin.buffer.read(); sys.stderr.write('got %d bytes\\n' % len(data)); "
        "sys.stderr.flush(); sys.stdout.buffer.write(data[::-1]); sys.exit(3)")


def _connector(tmp_path: Path, address: str, pin: str, token: bytes, code: str = ECHO,
               connect_timeout: str = "3") -> subprocess.Popen[bytes]:
    """The relay as a service runs it (the same command text), here as a local process."""
    token_file = tmp_path / "token"
    token_file.write_bytes(token)
    env = {**os.environ, "DOCKERTASK_TOKEN_FILE": str(token_file), "DOCKERTASK_CALLBACK": address,
           "DOCKERTASK_CALLBACK_PIN": pin, "DOCKERTASK_CONNECT_TIMEOUT": connect_timeout}
    return subprocess.Popen([sys.executable, "-c", _connector_source(), code], env=env, stderr=subprocess.PIPE)


@pytest.fixture
def server() -> Iterator[callback.CallbackServer]:
    """A callback listener on loopback, closed after the test."""
    made = callback.CallbackServer("127.0.0.1")
    yield made
    made.close()


def test_the_carrier_relays_stdin_stdout_stderr_and_the_exit(tmp_path: Path, server: callback.CallbackServer) -> None:
    """Over TLS with a one-time token: stdin in (in pieces), stdout and stderr out as frames, then the exit code."""
    call = server.expect()
    proc = _connector(tmp_path, server.address, server.pin, call.token)
    assert call.arrived.wait(20)
    payload = os.urandom(3 << 20)
    sender = threading.Thread(target=call.send_stdin, args=([payload[:1000], payload[1000:]],))
    sender.start()
    out, err = bytearray(), bytearray()
    for stream, data in call.frames():
        (out if stream == 1 else err).extend(data)
    sender.join()
    assert proc.wait(20) == 0
    assert bytes(out) == payload[::-1]
    assert err.decode() == f"got {len(payload)} bytes\n"
    assert call.exit_record == 3


def test_a_wrong_token_is_turned_away_and_a_token_works_once(tmp_path: Path, server: callback.CallbackServer) -> None:
    """A connection presenting an unknown token is closed; the waiting call never sees it."""
    call = server.expect()
    proc = _connector(tmp_path, server.address, server.pin, b"f" * 64, code="import time; time.sleep(30)")
    assert not call.arrived.wait(3)
    proc.kill()
    proc.wait()


def test_a_peer_without_the_pinned_certificate_is_refused(tmp_path: Path, server: callback.CallbackServer) -> None:
    """The connector checks the host's certificate digest: another listener gets nothing (exit 98)."""
    call = server.expect()
    proc = _connector(tmp_path, server.address, "0" * 64, call.token)
    assert proc.wait(20) == 98
    assert b"did not present the host's certificate" in proc.stderr.read()  # type: ignore[union-attr]
    assert not call.arrived.is_set()


def test_an_unreachable_host_ends_the_connector_with_its_own_code(tmp_path: Path) -> None:
    """Nothing listening: the connector gives up after its connect timeout, exit 97, saying where it tried."""
    server = callback.CallbackServer("127.0.0.1")
    address = server.address
    server.close()
    proc = _connector(tmp_path, address, "0" * 64, b"x", code="pass", connect_timeout="1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 97 and f"cannot reach the host at {address}".encode() in err


def test_a_closed_server_stops_listening() -> None:
    """After close() nothing answers at its address (a blocked accept once kept the socket listening)."""
    import socket

    server = callback.CallbackServer("127.0.0.1")
    host, port = server.address.rsplit(":", 1)
    time.sleep(0.2)  # its accept thread is blocked in accept() by now
    server.close()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_a_connected_call_knows_when_its_container_has_gone(tmp_path: Path, server: callback.CallbackServer) -> None:
    """What a spare's claim checks: a connected, silent container is idle and open; once it is gone (its
    node went away while it waited), the call is not, and the call is run in a fresh service instead."""
    call = server.expect()
    proc = _connector(tmp_path, server.address, server.pin, call.token, code="import sys; sys.stdin.read()")
    assert call.arrived.wait(20)
    assert call.idle_and_open()
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while call.idle_and_open() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not call.idle_and_open()
    call.hang_up()
