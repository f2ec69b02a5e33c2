"""The pytest plugin's parts that need no engine: assertion helpers, tracebacks, what ships, helpers."""

from __future__ import annotations

import ast
import io
import os
import pickle
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest
from _pytest.assertion import rewrite as real_rewrite
from _pytest.assertion import util as real_util

from dockertask import Secret, current_context, task
from dockertask.errors import RemoteTraceback
from dockertask.pytest import shipping, tracebacks
from dockertask.runtime import assertrepr
from dockertask.testing import run_locally, test_secrets


def _assertion_message(source: str, helpers: Any) -> str:
    """Run ``source`` rewritten as pytest rewrites a test module, with ``helpers`` as @pytest_ar."""
    tree = ast.parse(textwrap.dedent(source))
    real_rewrite.rewrite_asserts(tree, textwrap.dedent(source).encode(), "t.py")
    namespace: dict[str, Any] = {}
    exec(compile(tree, "t.py", "exec"), namespace)
    namespace["@pytest_ar"] = helpers
    try:
        namespace["check"]()
    except AssertionError as exc:
        return str(exc)
    raise AssertionError("the assert passed")


CASES = [
    "def check():\n    assert 2 == 3\n",
    "def f(x):\n    return x + 1\ndef check():\n    assert f(1) == 3\n",
    "def check():\n    x = [1]\n    assert len(x) > 1 and x\n",
    "def check():\n    d = {'a': 1}\n    assert 'b' in d, 'no b'\n",
    "def check():\n    assert not (1 < 2 < 3)\n",
]


@pytest.mark.parametrize("source", CASES)
def test_assert_helpers_read_like_pytests_own(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewritten assert explains itself with our stdlib helpers exactly as with pytest's (no custom compare)."""
    monkeypatch.setattr(real_util, "_reprcompare", None)
    monkeypatch.setattr(real_util, "_config", None)
    assert _assertion_message(source, assertrepr) == _assertion_message(source, real_rewrite)


def test_equal_sequences_get_a_full_diff() -> None:
    """== of two lists or multi-line strings adds a diff, as pytest's introspection does."""
    message = _assertion_message("def check():\n    assert [1, 2, 3] == [1, 2, 4]\n", assertrepr)
    assert message.splitlines() == ["assert [1, 2, 3] == [1, 2, 4]", "  Full diff:", "    - [1, 2, 4]",
                                    "    + [1, 2, 3]"]


def test_a_broken_repr_does_not_hide_the_assertion() -> None:
    """An operand whose __repr__ raises is shown as such, and the comparison is still explained."""
    source = ("class B:\n    def __repr__(self):\n        raise RuntimeError('no')\n"
              "def check():\n    assert B() == 1\n")
    assert "RuntimeError(no) raised in repr()" in _assertion_message(source, assertrepr)


# -- tracebacks ---------------------------------------------------------------------------------

def _project_file(tmp_path: Path) -> Path:
    path = tmp_path / "tests" / "test_x.py"
    path.parent.mkdir()
    path.write_text("import pytest\n\n\n@pytest.mark.dockertask\ndef test_it():\n    x = 1\n    assert x == 2\n")
    return path


def _remote_error(tb_text: str) -> AssertionError:
    exc = AssertionError("assert 1 == 2")
    exc.__cause__ = RemoteTraceback(tb_text)
    return exc


def test_container_frames_become_host_frames_at_the_same_lines(tmp_path: Path) -> None:
    """A by-value frame (<dynamic-code>) maps to the test file and line; dockertask's frames are dropped."""
    path = _project_file(tmp_path)
    exc = _remote_error(
        'Traceback (most recent call last):\n'
        '  File "dockertask/runtime/bootstrap.py", line 148, in main\n'
        '  File "/tmp/dockertask-7/runtime.zip/dockertask/runtime/testbody.py", line 40, in run_test\n'
        '  File "<dynamic-code>", line 7, in test_it\n'
        'AssertionError: assert 1 == 2\n')
    assert tracebacks.relocate(exc, tmp_path, [str(path)])
    frames = traceback.extract_tb(exc.__traceback__)
    assert [(f.filename, f.lineno, f.name) for f in frames] == [(str(path), 7, "test_it")]
    assert frames[0].line == "assert x == 2"
    assert exc.__traceback__ is not None and exc.__traceback__.tb_frame.f_code.co_firstlineno == 4
    assert exc.__cause__ is None


def test_frames_of_archived_project_modules_map_back_to_the_rootdir(tmp_path: Path) -> None:
    """A frame in the container's project.zip is the same file under the host's rootdir."""
    path = _project_file(tmp_path)
    frames = tracebacks.remote_frames(
        '  File "/tmp/dockertask-project-x/project.zip/tests/test_x.py", line 7, in test_it\n'
        '  File "/usr/lib/python3.11/json/__init__.py", line 3, in loads\n', tmp_path, [])
    assert frames == [(str(path), 7, "test_it")]


def test_no_project_frame_leaves_the_exception_as_it_was(tmp_path: Path) -> None:
    """With nothing of the project in the traceback, relocate says so and keeps the container's text."""
    exc = _remote_error('  File "dockertask/runtime/bootstrap.py", line 148, in main\n')
    assert not tracebacks.relocate(exc, tmp_path, [])
    assert isinstance(exc.__cause__, RemoteTraceback)


# -- what ships ---------------------------------------------------------------------------------

def test_archive_holds_project_sources_and_no_environments_or_caches(tmp_path: Path) -> None:
    """The zip has the project's .py files; virtualenvs, hidden dirs, caches and build output stay home."""
    for rel in ["src/pkg/__init__.py", "tests/test_a.py", "top.py", ".venv/lib/x.py", "venv/lib/y.py",
                "pkg/__pycache__/z.py", "node_modules/m.py", "build/b.py", "data/notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("# x\n")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(shipping.project_archive(tmp_path))).namelist()
    assert sorted(names) == ["src/pkg/__init__.py", "tests/test_a.py", "top.py"]


def test_roots_are_the_hosts_import_roots_inside_the_rootdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sys.path entries under the rootdir become roots; ones outside it or in a hidden dir do not."""
    (tmp_path / "src").mkdir()
    (tmp_path / ".venv").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "src"), "/usr/lib/python3", str(tmp_path / ".venv"),
                                      str(tmp_path)])
    roots = shipping.project_roots(tmp_path)
    assert roots[:2] == ["src", ""]
    assert all(not r.startswith(".venv") for r in roots)


def test_project_modules_go_by_reference_and_the_test_module_by_value(tmp_path: Path) -> None:
    """A fixture value from an archived module unpickles as that module's own object; the test function
    itself, and anything not importable from the roots, travel by value."""
    (tmp_path / "shipped_mod_x.py").write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import shipped_mod_x  # type: ignore[import-not-found]

        def test_body(h: Any) -> Any:
            return h()

        function, fixtures = pickle.loads(_packed(test_body, {"h": shipped_mod_x.f}, tmp_path, [""], "t::test_body"))
        assert fixtures["h"] is shipped_mod_x.f
        assert function is not test_body and function(**fixtures) == 1
        _, not_shipped = pickle.loads(_packed(test_body, {"h": shipped_mod_x.f}, tmp_path, [], "t::test_body"))
        assert not_shipped["h"] is not shipped_mod_x.f
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shipped_mod_x", None)


def _packed(*args: Any) -> bytes:
    out = io.BytesIO()
    shipping.pack_test(*args, out)
    return out.getvalue()


def test_the_test_function_travels_without_pytests_marks() -> None:
    """pytest keeps marks on the function (pytestmark); they stay home, so no pytest object is pickled."""

    @pytest.mark.dockertask
    def test_marked() -> int:
        return 3

    blob = _packed(test_marked, {}, Path("/nonexistent"), [], "t::test_marked")
    assert b"_pytest.mark" not in blob and b"Mark" not in blob
    assert pickle.loads(blob)[0]() == 3


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
