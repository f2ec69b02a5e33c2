"""Shared fixtures. Integration tests are marked ``docker``; without an engine they are skipped
with the reason, unless DOCKERTASK_REQUIRE_ENGINE=1 (CI), where they run and fail."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every container this test session (and the processes it starts) creates carries this label, so the
# leftover checks look at exactly ours, whatever else uses the engine meanwhile.
SESSION_LABEL = "dockertask.user.test-session"
SESSION = uuid.uuid4().hex
os.environ["DOCKERTASK_LABELS"] = ",".join(filter(None, [os.environ.get("DOCKERTASK_LABELS", ""),
                                                         f"{SESSION_LABEL}={SESSION}"]))
# The calls this session (and the processes it starts) make are recorded in a file of its own, never in the
# developer's record; removed at the end of the session (pytest_unconfigure).
_RUNS_DIR = None
if not os.environ.get("DOCKERTASK_RUNS_DB"):
    import tempfile

    _RUNS_DIR = tempfile.mkdtemp(prefix="dockertask-test-runs-")
    os.environ["DOCKERTASK_RUNS_DB"] = os.path.join(_RUNS_DIR, "runs.sqlite3")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RUNS_DIR is not None:
        import shutil

        shutil.rmtree(_RUNS_DIR, ignore_errors=True)


# pytest running pytest: how the dockertask pytest plugin is tested, as its users use it.
pytest_plugins = ["pytester"]
# A run started in the background (nohup, `cmd &` in a script) has SIGINT ignored, and every process the
# tests start would inherit that: the tests that press Ctrl-C on one would see it ignored. Handled here,
# the processes started get it at its default again (exec resets a handled signal, not an ignored one).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _engine_problem() -> str | None:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # any failure means: no usable engine
        return f"no Docker engine reachable ({exc}); run ./dev.sh test as root to start one"
    return None


_PROBLEM: list[str | None] = []


def engine_problem() -> str | None:
    if not _PROBLEM:
        _PROBLEM.append(_engine_problem())
    return _PROBLEM[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = None
    for item in items:
        if "integration" in item.path.parts or "swarm" in item.path.parts:
            item.add_marker(pytest.mark.docker)
        if "swarm" in item.path.parts:
            item.add_marker(pytest.mark.swarm)
    for item in items:
        if item.get_closest_marker("docker"):
            problem = problem or engine_problem()
            if problem is None:
                return
            if os.environ.get("DOCKERTASK_REQUIRE_ENGINE") == "1":
                return  # CI: let them run and fail; a missing engine must not pass as skips
            item.add_marker(pytest.mark.skip(reason=problem))


def pytest_report_header(config: pytest.Config) -> str:
    problem = engine_problem()
    return "docker engine: " + ("reachable" if problem is None else f"NOT reachable: {problem} (docker tests skipped)")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own cache, secrets and state dirs, and never the developer's real ones."""
    base = tmp_path_factory.mktemp("dt")
    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(base / "secrets"))
    monkeypatch.setenv("DOCKERTASK_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("DOCKERTASK_OUTPUT_DIR", str(base / "outputs"))
    for key in list(os.environ):
        if key.startswith(("DOCKERTASK_SECRET_", "DOCKERTASK_IMAGE_")):
            monkeypatch.delenv(key)
    yield
