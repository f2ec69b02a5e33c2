"""Finding the engine as the docker CLI does, and failing fast when it does not answer (no engine needed)."""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockertask import DockerUnavailableError
from dockertask.backends import discovery


def test_docker_host_comes_first() -> None:
    """DOCKER_HOST wins over everything else, and says so."""
    found = discovery.locate({"DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert (found.base_url, found.how) == ("tcp://127.0.0.1:2375", "DOCKER_HOST")


def _context(config_dir: Path, name: str, host: str) -> None:
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Metadata": {},
                                                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}}}))


def test_the_active_docker_context_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DOCKER_HOST, the current `docker context` (config or DOCKER_CONTEXT) names the engine."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    _context(tmp_path, "remote", "tcp://127.0.0.2:2375")
    _context(tmp_path, "other", "tcp://127.0.0.3:2375")
    found = discovery.locate({})
    assert (found.base_url, found.how) == ("tcp://127.0.0.2:2375", "docker context 'remote'")
    assert discovery.locate({"DOCKER_CONTEXT": "other"}).base_url == "tcp://127.0.0.3:2375"
    with pytest.raises(DockerUnavailableError, match="docker context 'gone' .*DOCKER_CONTEXT"):
        discovery.locate({"DOCKER_CONTEXT": "gone"})


def test_the_rootless_socket_is_found_when_there_is_no_system_socket(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No DOCKER_HOST, no context, no /var/run/docker.sock: $XDG_RUNTIME_DIR/docker.sock, the rootless engine's."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    (tmp_path / "docker.sock").touch()
    found = discovery.locate({"XDG_RUNTIME_DIR": str(tmp_path)}, system_socket=str(tmp_path / "no-such.sock"))
    assert (found.base_url, found.how) == (f"unix://{tmp_path}/docker.sock", "the rootless engine's socket")


def test_an_ssh_engine_without_paramiko_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKER_HOST=ssh://... needs paramiko: the error says `pip install 'dockertask[ssh]'`."""
    monkeypatch.setitem(sys.modules, "paramiko", None)  # as if it were not installed
    with pytest.raises(DockerUnavailableError, match=r"ssh://.*dockertask\[ssh\]"):
        discovery.locate({"DOCKER_HOST": "ssh://ci@build-host"})


@pytest.fixture
def silent_engine(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections and never answers (a hung engine)."""
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_an_engine_that_never_answers_is_reported_in_seconds(silent_engine: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung engine costs the first-contact bound (DOCKERTASK_ENGINE_TIMEOUT), not requests' 120 s."""
    from dockertask.backends.docker import DockerBackend

    monkeypatch.setenv("DOCKER_HOST", f"unix://{silent_engine}")
    monkeypatch.setenv("DOCKERTASK_ENGINE_TIMEOUT", "1.5")
    start = time.monotonic()
    with pytest.raises(DockerUnavailableError, match="found through DOCKER_HOST"):
        DockerBackend()
    assert time.monotonic() - start < 6


class _RacingAPI:
    """remove_container as Podman answers a forced removal racing the container's own exit."""

    base_url = "unix://fake"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def remove_container(self, cid: str, force: bool, v: bool) -> None:
        from docker.errors import APIError

        self.calls += 1
        if self.calls <= self.failures:
            raise APIError("500 Server Error: cannot remove container as it could not be stopped: sending SIGKILL "
                           "to container: container state improper: stopped")


def test_a_removal_racing_the_containers_exit_is_tried_again() -> None:
    """Podman refuses a forced removal of a container that stopped meanwhile; a moment later it works."""
    from dockertask.backends.docker import DockerBackend

    api = _RacingAPI(failures=1)
    DockerBackend(client=api)._remove("c")  # type: ignore[arg-type]
    assert api.calls == 2
    from docker.errors import APIError

    with pytest.raises(APIError):  # not forever: a third refusal is a real one (recorded as abandoned)
        DockerBackend(client=_RacingAPI(failures=5))._remove("c")  # type: ignore[arg-type]


@pytest.mark.parametrize("text,kind", [
    ('crun: executable file `/usr/libexec/podman/catatonit` not found: No such file or directory: OCI runtime '
     'attempted to invoke a command that was not found', "init"),
    ('OCI runtime create failed: exec: "docker-init": executable file not found in $PATH', "init"),
    ('OCI runtime create failed: exec: "python3": executable file not found in $PATH', "python"),
    ('crun: executable file `python3` not found in $PATH: No such file or directory', "python"),
])
def test_a_missing_init_is_not_reported_as_a_missing_python(text: str, kind: str) -> None:
    """A missing init binary gets an error naming the init; only a missing python3 is a PythonVersionError."""
    from docker.errors import APIError

    from dockertask.backends.base import ContainerJob, StdinPieces
    from dockertask.backends.docker import _refusal
    from dockertask.errors import PythonVersionError

    err = _refusal(APIError("500", explanation=text), "start", ContainerJob("img", ["python3"], StdinPieces(())))
    if kind == "init":
        assert not isinstance(err, PythonVersionError) and "init binary is missing" in str(err)
    else:
        assert isinstance(err, PythonVersionError) and "has no Python" in str(err)


def test_the_image_id_is_read_from_docker_and_podman_import_answers() -> None:
    """Both engines answer an import with the id in `status` (Podman ignores the tag, so it is tagged by id)."""
    from dockertask.backends.docker import imported_id
    from dockertask.errors import ImageBuildError

    assert imported_id('{"status":"sha256:6ced"}\r\n') == "sha256:6ced"
    assert imported_id('{"status":"sha256:655f","progress":"","progressDetail":{},"id":"sha256:655f"}\n') \
        == "sha256:655f"
    with pytest.raises(ImageBuildError, match="names no image"):
        imported_id('{"error":"no space left"}')


def test_podman_is_known_by_the_version_answer_of_the_first_contact() -> None:
    """Podman names itself among the version's components; Docker does not (no extra round trip is made)."""
    from dockertask.backends.docker import _names_podman

    assert _names_podman({"ApiVersion": "1.41", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]})
    assert not _names_podman({"ApiVersion": "1.41", "Components": [{"Name": "Engine", "Version": "20.10.24"},
                                                                    {"Name": "containerd"}]})
    assert not _names_podman({"ApiVersion": "1.41"})


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2026-12-01T14:03:05.123456789Z", 1796133785),
    ("2026-12-01T15:03:05.5+01:00", 1796133785),
    ("2026-12-01T14:03:05Z", 1796133785),
    ("0001-01-01T00:00:00Z", None),  # the engine's "never" (a container that has not finished)
    ("yesterday", None),
    (None, None),
])
def test_engine_times_are_read_in_the_engines_clock(stamp: object, expected: int | None) -> None:
    """The window in which a container's kill events are looked up comes from its own State times
    (nanoseconds and offsets included), so a host clock that differs from the engine's does not matter."""
    from dockertask.backends.docker import _epoch

    assert _epoch(stamp) == expected
