"""`pytest --dockertask-image=REF`: an existing suite, unchanged, in containers of REF (issue 18).

Each project here is generated, then run by pytest in a subprocess (the plugin loads from its entry
point, as for a user). Every test that must run in the container asserts a sentinel: the project holds
this host's name (tests/host.txt), and a container's hostname is its own, so a test that silently stayed
on the host fails. (/.dockerenv will not do: this host is itself a container.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dockertask.images.refs import default_image_ref

from ..services import GET, SERVICE_CONFTEST

pytestmark = pytest.mark.docker

IMAGE = default_image_ref()  # Python only: no pytest in it, which the session supplies
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

CONFTEST = """
import os
import socket
from pathlib import Path

import pytest

HOST = (Path(__file__).parent / "host.txt").read_text().strip()
IN_CONTAINER = socket.gethostname() != HOST

@pytest.fixture
def answer():
    return 42

def pytest_collection_modifyitems(items):
    for item in items:
        item.user_properties.append(("collected_in_container", IN_CONTAINER))

@pytest.fixture(autouse=True)
def _ran_where(request, record_property):
    record_property("ran_in_container", socket.gethostname() != HOST)
"""

TESTS = '''
import logging
import os
import pickle
import socket
import threading
import unittest
from pathlib import Path

import pytest

from calc import double

HERE = Path(__file__).parent
LOCK = threading.Lock()  # a module-level object that does not pickle
HOSTNAME = open("/etc/hostname").read().strip()
STATE = []


def inside():
    return socket.gethostname() != (HERE / "host.txt").read_text().strip()


class Point:
    def __init__(self, x):
        self.x = x


def test_sentinel():
    assert inside()


def test_data_file_beside_the_test():
    assert (HERE / "data" / "greeting.txt").read_text() == "hello\\n"


def test_tmp_path_is_inside(tmp_path):
    (tmp_path / "f").write_text("x")
    assert inside() and str(tmp_path).startswith("/tmp/")


def test_capsys(capsys):
    print("to capture")
    assert capsys.readouterr().out == "to capture\\n" and inside()


def test_caplog(caplog):
    logging.getLogger("t").warning("logged")
    assert "logged" in caplog.text and inside()


def test_request_and_conftest_fixture(request, answer):
    assert request.node.name == "test_request_and_conftest_fixture" and answer == 42 and inside()


def test_monkeypatch(monkeypatch):
    monkeypatch.setenv("X_SET", "1")
    assert os.environ["X_SET"] == "1" and inside()


def test_class_pickled_in_the_test():
    assert pickle.loads(pickle.dumps(Point(3))).x == 3 and inside()


def test_module_global_that_does_not_pickle():
    with LOCK:
        assert inside()


def test_src_layout_project_imports():
    assert double(2) == 4 and inside()


def test_cwd_is_the_hosts():
    assert os.getcwd() == os.environ.get("HOST_CWD_UNSET", os.getcwd()) and inside()


def test_skip():
    assert inside()
    pytest.skip("skipped inside")


@pytest.mark.xfail(reason="known")
def test_xfail():
    assert inside()
    assert 0


def test_fails_with_introspection():
    assert inside()
    assert double(2) == 5


def test_state_a():
    STATE.append(1)
    assert inside()


def test_state_b():
    assert inside()
    assert STATE == [1], "module state from test_state_a"


def test_warns():
    import warnings

    warnings.warn(UserWarning("warned-in-the-test"))
    assert inside()


def test_where():
    print("HOSTNAME", HOSTNAME, os.getpid())


@pytest.mark.dockertask_host
def test_kept_on_the_host():
    assert not inside()


class TestUnit(unittest.TestCase):
    def test_unittest_runs_inside(self):
        self.assertTrue(inside())

    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertTrue(inside())


def add(a, b):
    """
    >>> import socket; socket.gethostname() != open(__file__[:-len("test_things.py")] + "host.txt").read().strip()
    True
    >>> add(1, 2)
    3
    """
    return a + b
'''


def _project(root: Path) -> Path:
    (root / "src" / "calc").mkdir(parents=True)
    (root / "src" / "calc" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "tests" / "data").mkdir(parents=True)
    (root / "tests" / "data" / "greeting.txt").write_text("hello\n")
    (root / "tests" / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (root / "tests" / "host.txt").write_text(socket.gethostname())
    (root / "tests" / "test_things.py").write_text(TESTS)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["src"]\n'
                                         'addopts = "--doctest-modules"\n')
    return root


def _pytest(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", *QUIET, *args], cwd=root, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def _outcomes(junit: Path) -> dict[str, str]:
    """Test id → outcome, from a junit XML report (what the host's report says of each test)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = kinds[0] if kinds else "passed"
        if outcome == "skipped" and "xfail" in (case.find("skipped").get("type") or "") + (  # type: ignore[union-attr]
                case.find("skipped").get("message") or ""):  # type: ignore[union-attr]
            outcome = "xfailed"
        outcomes[name] = outcome
    return outcomes


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("suite"))


def test_every_kind_of_test_runs_in_the_container_with_a_plain_runs_outcomes(project: Path) -> None:
    """Functions, a unittest class (subtests too), a doctest, data files, tmp_path, capsys/caplog/request/
    monkeypatch, a conftest fixture and hook, skip/xfail, a class pickled in a test, a module-level lock, a
    src layout: each passes its in-container sentinel; the report is the host's (introspection, junit,
    exit code 1 for the one failing test); the header says how many run where."""
    junit = project / "junit.xml"
    result = _pytest(project, f"--dockertask-image={IMAGE}", f"--junitxml={junit}", "-rA")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"dockertask: 21 tests run in containers of {IMAGE} (isolation session), 1 on the host" in out, out
    # a warning in a test reaches the host's summary once (the container's collection warnings are not
    # repeated: the host's collection gave them)
    assert out.count("UserWarning: warned-in-the-test") == 1, out
    # pytest's introspection, made in the container, shown by the host
    assert "assert 4 == 5" in out and "where 4 = double(2)" in out, out
    outcomes = _outcomes(junit)
    assert outcomes.pop("tests.test_things::test_fails_with_introspection") == "failure"
    assert outcomes.pop("tests.test_things::test_skip") == "skipped"
    assert outcomes.pop("tests.test_things::test_xfail") == "xfailed"
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert len(outcomes) == 19, outcomes
    # the conftest's autouse fixture recorded where each ran: all in the container but the host-marked one
    where = {f"{c.get('classname')}::{c.get('name')}": p.get("value")
             for c in ET.parse(junit).getroot().iter("testcase") for p in c.iter("property")
             if p.get("name") == "ran_in_container"}
    assert where.pop("tests.test_things::test_kept_on_the_host") == "False"
    assert set(where.values()) == {"True"}, where


def test_the_hosts_selection_and_stop_options_apply(project: Path) -> None:
    """-k selects on the host, -x stops at the first failure, and the exit code follows."""
    result = _pytest(project, f"--dockertask-image={IMAGE}", "-k", "sentinel or data_file", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 20 deselected" in result.stdout, result.stdout
    result = _pytest(project, f"--dockertask-image={IMAGE}", "-x", "tests/test_things.py")
    assert result.returncode == 1
    assert "stopping after 1 failures" in result.stdout, result.stdout
    assert "test_state_a" not in result.stdout


def test_last_failed_reruns_only_the_failure(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    args = ("-p", "cacheprovider", f"--dockertask-image={IMAGE}", "tests/test_things.py")
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:hypothesispytest", *args], cwd=root,
                   capture_output=True, text=True, timeout=300)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:hypothesispytest", *args, "--lf", "-v"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert "test_fails_with_introspection FAILED" in result.stdout, result.stdout
    assert "1 failed, 21 deselected" in result.stdout, result.stdout


def test_the_project_s_task_defaults_do_not_bound_the_session(tmp_path: Path) -> None:
    """[tool.dockertask.defaults] timeout = 2 is for the project's tasks: two tests of 1.5 s each in one
    worker (3 s) still pass, where the worker's container used to be killed at 2 s."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_slow.py").write_text(
        "import time\n\ndef test_a():\n    time.sleep(1.5)\n\ndef test_b():\n    time.sleep(1.5)\n")
    (tmp_path / "pyproject.toml").write_text('[tool.dockertask.defaults]\ntimeout = 2\n')
    done = _pytest(tmp_path, f"--dockertask-image={IMAGE}")
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize(("isolation", "workers"), [("session", 2), ("process", 1), ("container", 2)])
def test_isolation_modes_and_workers(project: Path, isolation: str, workers: int) -> None:
    """Same outcomes in every mode; module state carries between tests only in `session`; `container`
    runs tests in different containers (hostnames); -n N runs N worker containers."""
    args = [f"--dockertask-image={IMAGE}", f"--dockertask-isolation={isolation}", "-rA", "-s",
            "tests/test_things.py"]
    if workers > 1:
        args += ["-n", str(workers)]
    result = _pytest(project, *args)
    out = result.stdout
    assert f"(isolation {isolation}" in out, out
    state_b_failed = "FAILED tests/test_things.py::test_state_b" in out
    assert state_b_failed == (isolation != "session"), out
    failed = 2 if isolation != "session" else 1
    assert f"{failed} failed, " in out, out
    assert result.returncode == 1


CRASHING = """
import os
import signal

def test_first():
    pass

def test_dies():
    os.kill(os.getpid(), signal.SIGKILL)

def test_fails():
    assert False

def test_last():
    pass
"""


def test_a_process_isolated_test_that_kills_itself_fails_alone_and_x_stops_the_worker(tmp_path: Path) -> None:
    """process isolation: a test whose process dies is failed with how it died, the tests after it run
    in processes of their own; with -x the worker stops at that failure (its children stop theirs only)."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_crash.py").write_text(CRASHING)
    common = [f"--dockertask-image={IMAGE}", "--dockertask-isolation=process", "-rA", "tests"]
    result = _pytest(tmp_path, *common)
    out = result.stdout
    assert "FAILED tests/test_crash.py::test_dies" in out and "was killed by signal 9" in out, out
    assert "PASSED tests/test_crash.py::test_last" in out and "2 failed, 2 passed" in out, out
    stopped = _pytest(tmp_path, *common, "-x").stdout
    assert "1 failed, 1 passed" in stopped and "test_fails" not in stopped, stopped


SERVICES_CONFTEST = SERVICE_CONFTEST + """
@pytest.fixture
def per_test_service(dockertask_network):
    yield "never"
"""

SERVICES_TESTS = GET + """
import socket
from pathlib import Path

HOST = (Path(__file__).parent / "host.txt").read_text().strip()

def test_reaches_the_service_by_alias(web, dockertask_network):
    assert socket.gethostname() != HOST  # in a container
    assert dockertask_network.name
    assert get(web) == 200

def test_without_services():
    assert socket.gethostname() != HOST

def test_function_scoped_service(per_test_service):
    pass
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_service_fixtures_run_on_the_host_once_and_container_tests_reach_them_by_alias(
        tmp_path: Path, api, workers: int) -> None:  # type: ignore[no-untyped-def]
    """Services (testcontainers on dockertask_network) for a whole suite in an image: the fixture drives
    Docker on the host, once; the worker containers join its network; a service fixture that is not
    session-scoped is an error naming it; the service and the network are gone after."""
    mark = uuid.uuid4().hex
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(SERVICES_CONFTEST.format(image=IMAGE, mark=mark))
    (tmp_path / "tests" / "test_services.py").write_text(SERVICES_TESTS)
    (tmp_path / "tests" / "host.txt").write_text(socket.gethostname())
    networks = {n["Id"] for n in api.networks(filters={"label": "dockertask.network"})}
    result = _pytest(tmp_path, f"--dockertask-image={IMAGE}", "-rA", "-n", str(workers), "tests")
    out = result.stdout
    assert "PASSED tests/test_services.py::test_reaches_the_service_by_alias" in out, out
    assert "PASSED tests/test_services.py::test_without_services" in out, out
    assert "test_function_scoped_service" in out and "must be scope='session'" in out, out
    assert "2 passed" in out and result.returncode == 1, out
    assert api.containers(all=True, filters={"label": f"dt-test-service={mark}"}) == []
    assert {n["Id"] for n in api.networks(filters={"label": "dockertask.network"})} <= networks


def test_a_compiled_dependency_the_image_lacks_is_one_error_naming_it(tmp_path: Path) -> None:
    """The session imports cryptography (its Rust extension is not supplied; its Python files are, and do
    not import without it) and wrapt (no extension needed: its pure-Python fallback works)."""
    (tmp_path / "tests").mkdir()
    for i in range(3):
        (tmp_path / "tests" / f"test_c{i}.py").write_text(
            "import wrapt\nfrom cryptography.fernet import Fernet\n\n"
            "def test_key():\n    assert Fernet.generate_key()\n")
    result = _pytest(tmp_path, f"--dockertask-image={IMAGE}", "tests")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    lacks = out.split("the image lacks ")[1].split(", which")[0]
    assert "cryptography" in lacks and "wrapt" not in lacks, out
    assert out.count("the image lacks") == 1, out


def test_a_missing_image_fails_the_session_once(project: Path) -> None:
    result = _pytest(project, "--dockertask-image=dockertask-no-such-image:never", "tests/test_things.py")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert out.count("dockertask-no-such-image:never") <= 3, out  # the header, and the one error
    assert "Interrupted: dockertask:" in out, out


def test_ctrl_c_leaves_no_container(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = f"slow{uuid.uuid4().hex[:8]}"  # the worker's task is named after the rootdir: pytest:<name>
    root = tmp_path / name
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_slow.py").write_text("import time\n\ndef test_sleeps():\n"
                                                 "    print('started', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *QUIET, f"--dockertask-image={IMAGE}", "tests"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = api.containers(filters={"label": f"dockertask.task=pytest:{name}"})
            if found:
                break
            time.sleep(0.2)
        assert found, "no worker container started"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert "KeyboardInterrupt" in out or "Interrupted" in out, out
        assert api.containers(all=True, filters={"label": f"dockertask.task=pytest:{name}"}) == []
    finally:
        proc.kill()


ONLY_FILES_CONFTEST = """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        if item.name == "test_marked_from_another_directory":
            item.add_marker(pytest.mark.xfail(reason="marked by a/conftest.py", strict=True))
"""

ONLY_FILES_TEST = """
import socket
import sys

import pytest

def test_{name}_runs_without_the_other_module():
    assert socket.gethostname() != open("{host}").read()  # in a container
    # the other worker's test module was not imported here
    assert not [m for m in sys.modules if m.split(".")[-1] == "test_{other}"], sorted(sys.modules)[-20:]

def test_marked_from_another_directory():
    assert False
"""


def test_n_workers_import_only_their_own_test_files_but_every_conftest(tmp_path: Path) -> None:
    """-n 2: each worker imports the test modules of its own tests only (importing the whole suite in every
    worker made -n 2 no faster than one), while every conftest still loads as in a whole run: a hook in
    tests/a/conftest.py marks a test in tests/b."""
    (tmp_path / "tests" / "a").mkdir(parents=True)
    (tmp_path / "tests" / "b").mkdir()
    (tmp_path / "tests" / "host.txt").write_text(socket.gethostname())
    (tmp_path / "tests" / "a" / "conftest.py").write_text(ONLY_FILES_CONFTEST)
    host = str(tmp_path / "tests" / "host.txt")
    (tmp_path / "tests" / "a" / "test_a.py").write_text(ONLY_FILES_TEST.format(name="a", other="b", host=host))
    (tmp_path / "tests" / "b" / "test_b.py").write_text(ONLY_FILES_TEST.format(name="b", other="a", host=host))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --import-mode=importlib\n")
    result = _pytest(tmp_path, f"--dockertask-image={IMAGE}", "-rA", "-n", "2", "tests")
    out = result.stdout + result.stderr
    assert "PASSED tests/a/test_a.py::test_a_runs_without_the_other_module" in out, out
    assert "PASSED tests/b/test_b.py::test_b_runs_without_the_other_module" in out, out
    assert out.count("XFAIL") == 2 and "2 passed, 2 xfailed" in out and result.returncode == 0, out
