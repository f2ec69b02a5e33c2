"""The pytest plugin's helpers that need no engine: run_locally/test_secrets, and marked tests without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockertask import Secret, current_context, task
from dockertask.testing import run_locally, test_secrets

# -- helpers for tests ----------------------------------------------------------------------------

@task(secret_requests=[Secret("db", "password")])
def needs_secret(x: int) -> str:
    return f"{x}:{current_context().secrets.get('db', 'password')}:{current_context().in_container}"


def test_run_locally_calls_and_submits_in_process(tmp_path: Path) -> None:
    """Inside run_locally(), t(...) and t.submit(...) run in this process with the test's secrets only."""
    os.environ["DOCKERTASK_SECRET_DB_PASSWORD"] = "real"
    try:
        with test_secrets(tmp_path) as secrets, run_locally():
            secrets.set("db", "password", "fake")
            assert needs_secret(1) == "1:fake:False"
            assert needs_secret.submit(2).result(timeout=5) == "2:fake:False"
        assert os.environ["DOCKERTASK_SECRET_DB_PASSWORD"] == "real"
    finally:
        del os.environ["DOCKERTASK_SECRET_DB_PASSWORD"]


NO_ENGINE_TESTS = """
import pytest

@pytest.mark.dockertask
def test_marked():
    pass

def test_plain():
    pass
"""


@pytest.mark.parametrize("required", [False, True], ids=["skips", "fails-when-required"])
def test_without_an_engine_marked_tests_skip_or_fail_and_plain_ones_run(pytester: pytest.Pytester,
                                                                       required: bool) -> None:
    """No engine: marked tests are skipped with the reason (failed under DOCKERTASK_REQUIRE_ENGINE=1)."""
    pytester.makepyfile(test_no_engine=NO_ENGINE_TESTS)
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock",
           "DOCKERTASK_REQUIRE_ENGINE": "1" if required else "0"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider"], cwd=pytester.path,
                         env=env, capture_output=True, text=True, timeout=120)
    if required:
        assert "1 passed, 1 error" in out.stdout and out.returncode == 1, out.stdout  # fails at its setup
    else:
        assert "1 passed, 1 skipped" in out.stdout, out.stdout
    assert "no Docker engine" in out.stdout
