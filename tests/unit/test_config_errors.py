"""Bad configuration is a typed error naming the setting, and the command line exits 2 for it (issue 17, F23)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dockertask import Secret, TaskDefinitionError, task
from dockertask.backends import discovery
from dockertask.config import tool_table
from dockertask.spec import secrets
from dockertask.tasks import max_parallel

ROOT = Path(__file__).resolve().parents[2]
DOCKERTASK = str(Path(sys.executable).parent / "dockertask")


@pytest.mark.parametrize(("content", "says"), [
    (b"tool = 5\n", "tool = 5: expected a table"),
    (b"[tool]\ndockertask = 3\n", "tool.dockertask = 3: expected a table"),
    (b'[tool.dockertask]\nbackend = "\xff"\n', "not UTF-8"),
])
def test_a_pyproject_that_is_not_what_it_should_be_is_said(tmp_path: Path, content: bytes, says: str) -> None:
    """`tool = 5` or non-UTF-8 bytes: a TOMLDecodeError saying which (an AttributeError or a
    UnicodeDecodeError before), which configuration and image resolution turn into their typed errors."""
    import tomllib

    (tmp_path / "pyproject.toml").write_bytes(content)
    with pytest.raises(tomllib.TOMLDecodeError, match=says):
        tool_table(tmp_path / "pyproject.toml")


def test_the_command_line_exits_2_on_a_bad_pyproject(tmp_path: Path) -> None:
    """A configuration mistake is the user's to fix: one line naming the file, exit 2, no traceback."""
    (tmp_path / "pyproject.toml").write_bytes(b"tool = 5\n")
    out = subprocess.run([DOCKERTASK, "run", str(ROOT / "examples" / "hello.py") + ":greet", "--name", "x"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("TaskDefinitionError:") and "Traceback" not in out.stderr


@pytest.mark.parametrize("host", ["tcp://localhost:abc", "tcp://localhost:99999999"])
def test_a_docker_host_with_a_bad_port_is_a_typed_error(host: str) -> None:
    """DOCKER_HOST with a port that is not one: a TaskDefinitionError naming it (a bare ValueError before)."""
    with pytest.raises(TaskDefinitionError, match="DOCKER_HOST="):
        discovery.locate({"DOCKER_HOST": host})


def test_a_secret_env_var_that_is_not_utf8_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes the locale could not decode in DOCKERTASK_SECRET_*: a TaskDefinitionError naming the variable
    (a UnicodeEncodeError on the way to the container before)."""
    monkeypatch.setenv("DOCKERTASK_SECRET_A_B", "x\udcff")

    @task(secret_requests=[Secret(group="a", key="b")])
    def uses() -> int:
        return 1

    with pytest.raises(TaskDefinitionError, match="DOCKERTASK_SECRET_A_B"):
        secrets.resolve(uses.spec.secret_requests, uses.spec.name)


@pytest.mark.parametrize("raw", ["²", "٣", "0", "-1", "many"])
def test_max_parallel_accepts_only_plain_whole_numbers(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    """DOCKERTASK_MAX_PARALLEL=² (a digit to str.isdigit) is a TaskDefinitionError, not a bare ValueError."""
    monkeypatch.setenv("DOCKERTASK_MAX_PARALLEL", raw)
    with pytest.raises(TaskDefinitionError, match="DOCKERTASK_MAX_PARALLEL"):
        max_parallel()
