"""The pytest plugin on a real engine, tested as its users use it: pytest running pytest on a
generated project (in a subprocess, so the plugin loads from its entry point)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from dockertask.images.refs import default_image_ref

from ..services import GET, SERVICE_CONFTEST

ROOT = Path(__file__).resolve().parents[2]
DOCKERTASK = str(Path(sys.executable).parent / "dockertask")


def _project(pytester: pytest.Pytester, **files: str) -> None:
    """A src-layout project: ``calc`` under src/, tests under tests/."""
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\npythonpath = ["src"]\n')
    (pytester.path / "src" / "calc").mkdir(parents=True)
    (pytester.path / "src" / "calc" / "__init__.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass

        @dataclass
        class Config:
            a: int

        def parse(cfg: Config) -> dict:
            return {"a": cfg.a}

        def check(x: int) -> int:
            if x > 1:
                raise ValueError(f"too big: {x}")
            return x
    """))
    (pytester.path / "tests").mkdir()
    for name, text in files.items():
        (pytester.path / "tests" / f"{name}.py").write_text(textwrap.dedent(text))


# Hypothesis (a test dependency of ours, not of the projects generated here) adds ~1 s to each pytest start.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*QUIET, *args, timeout=300)


def test_failing_assert_is_reported_with_pytests_introspection_from_an_image_without_pytest(
        pytester: pytest.Pytester) -> None:
    """A failing assert in the container reads as pytest's own report: values, 'where', source, no dockertask frames."""
    _project(pytester, test_asserts="""
        import importlib.util, subprocess
        import pytest

        def helper(x):
            return x + 1

        @pytest.mark.dockertask
        def test_image_has_no_pytest():  # its own: the session supplies the host's to the test's process
            assert importlib.util.find_spec("_pytest").origin.startswith("/opt/dockertask-pytest/site/")
            assert subprocess.run(["python3", "-c", "import pytest"], capture_output=True).returncode == 1

        @pytest.mark.dockertask
        def test_compares():
            assert helper(1) == 3

        @pytest.mark.dockertask
        def test_lists():
            assert [1, 2, 3] == [1, 2, 4], "lists differ"
    """)
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*def test_compares():",
        ">       assert helper(1) == 3",
        "E       assert 2 == 3",
        "E        +  where 2 = helper(1)",
        "tests/test_asserts.py:15: AssertionError",
    ])
    result.stdout.fnmatch_lines(["E       AssertionError: lists differ", "E       assert [1, 2, 3] == [1, 2, 4]"])
    out = result.stdout.str()
    for ours in ("runner.py", "bootstrap.py", "pytestworker.py", "plugin.py", "RemoteTraceback"):
        assert ours not in out


def test_a_marked_test_and_its_fixtures_run_in_its_container_importing_the_project(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A marked test runs as it would in a plain pytest run in the image: its fixtures run there too (with
    the marker's environment, not the host's), pytest's own fixtures work, the project imports."""
    _project(pytester, conftest="""
        import os
        import pytest
        from calc import Config

        @pytest.fixture
        def cfg():
            return Config(a=int(os.environ["A"]))
    """, test_body="""
        import logging
        import pytest
        from dockertask import current_context

        @pytest.mark.dockertask(environment={"A": "7"})
        def test_in_container(cfg, capsys, caplog, request, tmp_path):
            import os
            from calc import Config, parse
            assert current_context().in_container
            assert "HOST_ONLY" not in os.environ
            assert isinstance(cfg, Config) and parse(cfg) == {"a": 7}
            print("to capsys")
            logging.getLogger("t").warning("to caplog")
            assert capsys.readouterr().out == "to capsys\\n" and "to caplog" in caplog.text
            assert request.node.name == "test_in_container" and tmp_path.is_dir()

        @pytest.mark.dockertask
        def test_skips_inside():
            pytest.skip("skipped in its container")

        def test_plain_tests_stay_on_the_host(cfg):
            assert not current_context().in_container and cfg.a == 8
    """)
    monkeypatch.setenv("HOST_ONLY", "1")
    monkeypatch.setenv("A", "8")
    result = _run(pytester, "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*skipped in its container*"])


def test_exception_in_project_code_shows_the_container_frames_at_their_host_lines(
        pytester: pytest.Pytester) -> None:
    """An exception raised in project code shows each frame (test, then module) at its host source line."""
    _project(pytester, test_raise="""
        import pytest

        @pytest.mark.dockertask
        def test_raises():
            from calc import check
            check(5)
    """)
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        ">       check(5)",
        "tests/test_raise.py:7: ",
        ">           raise ValueError(f\"too big: {x}\")",
        "E           ValueError: too big: 5",
        "src/calc/__init__.py:13: ValueError",
    ])


def test_timeout_oom_missing_image_and_a_bad_marker_fail_with_dockertask_errors(
        pytester: pytest.Pytester) -> None:
    """Each infrastructure failure fails its test with the dockertask error, and leaves no container."""
    _project(pytester, test_faults="""
        import threading, time
        import pytest
        from dockertask import Resources

        @pytest.fixture
        def lock():
            return threading.Lock()

        @pytest.mark.dockertask(timeout=2)
        def test_timeout():
            time.sleep(60)

        @pytest.mark.dockertask(limits=Resources(mem="64Mi"))
        def test_oom():
            hog = bytearray(512 * 1024 * 1024)
            hog[::4096] = b"x" * len(hog[::4096])

        @pytest.mark.dockertask(container_image="dockertask-no-such-image:1")
        def test_missing_image():
            pass

        @pytest.mark.dockertask
        def test_unpicklable(lock):
            pass

        @pytest.mark.dockertask(no_such_keyword=1)
        def test_bad_marker():
            pass
    """)
    result = _run(pytester, "-rA")
    result.assert_outcomes(failed=4, passed=1)  # a fixture value that does not pickle: it never leaves the container
    result.stdout.fnmatch_lines_random([
        "dockertask.errors.TaskTimeoutError: task test_faults.test_timeout exceeded its timeout of 2s*",
        "dockertask.errors.TaskOOMError: task test_faults.test_oom was killed *memory limit of 64Mi*",
        "dockertask.errors.ImageNotFoundError: image 'dockertask-no-such-image:1' is not on the Docker engine*",
        "PASSED tests/test_faults.py::test_unpicklable",
        "dockertask.errors.TaskDefinitionError: @task: unknown setting 'no_such_keyword'; expected one of: *",
    ])


def test_a_host_fixture_that_cannot_be_sent_fails_its_test_alone(pytester: pytest.Pytester) -> None:
    """A marked test's fixture set up on the host (it uses dockertask_secrets) returning a lock: that test is
    an error naming the fixture, as a fixture's failure is in pytest; the session goes on (it was
    interrupted whole) and the next test passes."""
    _project(pytester, test_host_value="""
        import threading
        import pytest

        @pytest.fixture
        def guarded(dockertask_secrets):
            dockertask_secrets.set("db", "password", "x")
            return threading.Lock()

        @pytest.mark.dockertask
        def test_gets_a_lock(guarded):
            pass

        @pytest.mark.dockertask
        def test_after_it():
            pass
    """)
    result = _run(pytester, "-rA")
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines_random([
        "*fixture 'guarded'*value, set up on the host, cannot be sent to the containers*",
        "PASSED tests/test_host_value.py::test_after_it",
    ])


def test_secrets_from_the_test_secrets_fixture_reach_the_container(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """dockertask_secrets gives a marked test its secret files, never the host's real secrets."""
    _project(pytester, test_secret="""
        import pytest
        from dockertask import Secret, current_context

        @pytest.fixture
        def db_password(dockertask_secrets):
            dockertask_secrets.set("db", "password", "for-tests-only")

        @pytest.mark.dockertask(secret_requests=[Secret("db", "password")])
        def test_reads_it(db_password):
            assert current_context().secrets.get("db", "password") == "for-tests-only"
            assert open("/etc/secrets/db/password").read() == "for-tests-only"
    """)
    monkeypatch.setenv("DOCKERTASK_SECRET_DB_PASSWORD", "the-real-one")
    _run(pytester).assert_outcomes(passed=1)


@pytest.fixture
def flavoured_image(api) -> str:  # type: ignore[no-untyped-def]
    """The default image plus ENV DT_FLAVOR=alt: another image for the --dockertask-image matrix."""
    tag = f"dockertask-test-flavour:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {default_image_ref()}\nENV DT_FLAVOR=alt\n".encode()
    list(api.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, decode=True))
    yield tag
    api.remove_image(tag, force=True)


def test_image_option_is_the_image_of_marked_tests_without_their_own_and_named_in_the_header(
        pytester: pytest.Pytester, flavoured_image: str) -> None:
    """--dockertask-image=REF is the image of a marked test that names none (its other settings apply);
    a marker's own container_image is a per-test setting and wins; the header names REF."""
    _project(pytester, test_matrix="""
        import os
        import pytest

        @pytest.mark.dockertask(environment={"FROM_MARKER": "1"})
        def test_flavour():
            assert os.environ.get("DT_FLAVOR") == "alt" and os.environ["FROM_MARKER"] == "1"

        @pytest.mark.dockertask(container_image="dockertask-no-such-image:1")
        def test_own_image():
            pass
    """)
    result = _run(pytester, f"--dockertask-image={flavoured_image}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"dockertask: image {flavoured_image}",
                                 "dockertask: 0 tests run in containers of * 2 in containers of their own "
                                 "(@pytest.mark.dockertask), 0 on the host",
                                 "FAILED*test_own_image*"])


def test_xdist_workers_run_marked_tests_in_parallel(pytester: pytest.Pytester) -> None:
    """pytest -n 2 runs marked tests in both workers; failures are reported, nothing is left behind."""
    _project(pytester, test_many="""
        import os, time
        import pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.dockertask
        def test_square(n):
            time.sleep(0.5)
            assert n * n == n ** 2

        @pytest.mark.dockertask
        def test_fails():
            assert 1 + 1 == 3
    """)
    result = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*", "E       assert (1 + 1) == 3"])


def _wait_for_started(proc: subprocess.Popen[str]) -> None:
    """Read the child's output until the test says it started (fails with the output if it never does)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == "started" or line.rstrip().endswith("started"):
            return
    raise AssertionError("the test never started:\n" + "".join(seen))


def _labelled(api, task_name: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return api.containers(all=True, filters={"label": f"dockertask.task={task_name}"})


def test_ctrl_c_of_pytest_removes_the_running_test_container(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C to pytest while a marked test runs: pytest stops promptly and its container is gone."""
    module = f"test_ctrl_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        import time
        import pytest

        @pytest.mark.dockertask
        def test_sleeps():
            print("started", flush=True)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", *QUIET, str(tmp_path)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_started(proc)
        assert len(_labelled(api, f"{module}.test_sleeps")) == 1
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - start < 20, "pytest waited for the test instead of stopping it"
        assert "KeyboardInterrupt" in out
        assert _labelled(api, f"{module}.test_sleeps") == []
    finally:
        proc.kill()


SERVICE_TESTS = GET + """
import pytest
from dockertask import Docker, task

@pytest.mark.dockertask
def test_marked_test_reaches_the_service(web):
    assert get(web) == 200

def test_task_on_the_network_reaches_it(web, dockertask_network):
    fetch = task(task_config=Docker(network=dockertask_network.name))(get)
    assert fetch(web) == 200
"""


def _service_project(pytester_path: Path, mark: str, extra: str = "") -> None:
    (pytester_path / "conftest.py").write_text(SERVICE_CONFTEST.format(image=default_image_ref(), mark=mark))
    (pytester_path / "test_services.py").write_text(SERVICE_TESTS + extra)


def _networks(api) -> list[dict]:  # type: ignore[no-untyped-def]
    return api.networks(filters={"label": "dockertask.network"})


def test_service_containers_on_the_network_fixture_are_reachable_by_alias_and_removed_after(
        pytester: pytest.Pytester, api) -> None:  # type: ignore[no-untyped-def]
    """A testcontainers service joined to dockertask_network answers marked tests and tasks; all is removed after."""
    mark = uuid.uuid4().hex
    networks_before = {n["Id"] for n in _networks(api)}
    _service_project(pytester.path, mark)
    _run(pytester).assert_outcomes(passed=2)
    assert api.containers(all=True, filters={"label": f"dt-test-service={mark}"}) == []
    assert {n["Id"] for n in _networks(api)} <= networks_before


def test_gc_after_kill_9_removes_the_test_network_and_its_services(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without Ryuk: after pytest is killed with -9, `dockertask gc` removes its network, service and test container."""
    mark = uuid.uuid4().hex
    _service_project(tmp_path, mark, extra=textwrap.dedent("""
        @pytest.mark.dockertask
        def test_hangs(web):
            print("started", flush=True)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", *QUIET, "-k", "hangs",
                             str(tmp_path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_started(proc)
        ours = [n for n in _networks(api) if n["Labels"].get("dockertask.host-pid") == str(proc.pid)]
        assert len(ours) == 1
        proc.kill()
        proc.wait(10)
        assert api.containers(all=True, filters={"label": f"dt-test-service={mark}"})
        out = subprocess.run([DOCKERTASK, "gc"], capture_output=True, text=True, timeout=60, env=os.environ)
        assert out.returncode == 0, out.stderr
        assert "removed 1 network(s)" in out.stdout
        assert api.containers(all=True, filters={"label": f"dt-test-service={mark}"}) == []
        assert _labelled(api, "test_services.test_hangs") == []
        assert ours[0]["Id"] not in {n["Id"] for n in _networks(api)}
    finally:
        proc.kill()


def test_the_shipped_example_project_passes(tmp_path: Path) -> None:
    """examples/ci-project, a small project tested with the plugin, passes as its README says."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", *QUIET, "examples/ci-project"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_a_large_fixture_value_is_not_held_three_times_on_its_way(tmp_path: Path) -> None:
    """A 300 MB fixture value of a marked test: the host's peak stays far below it (it was ~960 MiB: the
    value, its pickle and the call's pickle of that; issue 17 F25). The fixture now runs in the test's
    container, so the value never exists on the host."""

    (tmp_path / "test_big.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.fixture
        def big():
            return b"x" * (300 * 2**20)

        @pytest.mark.dockertask
        def test_big(big):
            assert len(big) == 300 * 2**20
    """))
    script = ("import resource, subprocess, sys\n"
              f"r = subprocess.run([sys.executable, '-m', 'pytest', '-q', *{QUIET!r}, 'test_big.py'])\n"
              "print('peak', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
              "sys.exit(r.returncode)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    peak_mib = int(done.stdout.rsplit("peak", 1)[1]) / 1024
    assert peak_mib < 300 + 250, f"the host peaked at {peak_mib:.0f} MiB for a 300 MiB fixture value"
