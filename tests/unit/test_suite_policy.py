"""The host's policy for `pytest --dockertask-image` (issue 18), without an engine: what the workers are
told, how tests are shared between them, and what is supplied to the image."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dockertask.pytest import checkout, suite


def test_the_worker_gets_the_command_line_without_what_only_the_host_does() -> None:
    args = ["-x", "--dockertask-image", "img:1", "-n", "4", "--dockertask-isolation=process", "-k", "a or b",
            "--junitxml=out.xml", "--lf", "-n2", "tests/test_a.py", "-p", "myplugin", "--tb=short", "--dist", "load"]
    assert suite.worker_args(args) == ["-x", "-k", "a or b", "tests/test_a.py", "-p", "myplugin", "--tb=short"]


class _Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def _ids(groups: list[list[Any]]) -> list[list[str]]:
    return [[i.nodeid for i in g] for g in groups]


def test_workers_get_whole_files_in_collection_order_balanced_by_count() -> None:
    items: list[Any] = [_Item(f"t/test_{f}.py::test_{n}") for f, count in (("a", 3), ("b", 1), ("c", 2))
                        for n in range(count)]
    groups = _ids(suite.split(items, 2, "session"))
    assert sorted(groups) == sorted([["t/test_a.py::test_0", "t/test_a.py::test_1", "t/test_a.py::test_2"],
                                     ["t/test_b.py::test_0", "t/test_c.py::test_0", "t/test_c.py::test_1"]])
    assert _ids(suite.split(items, 8, "session")) != [], "more workers than files: one file each"
    assert len(suite.split(items, 8, "session")) == 3
    assert _ids(suite.split(items, 2, "container")) == [[i.nodeid] for i in items]


def test_json_lists_become_the_tuples_pytest_reads() -> None:
    data = suite._tuples({"location": ["a.py", 1, "t"], "longrepr": ["a.py", 2, "Skipped: x"],
                          "sections": [["Captured stdout call", "hi"]]})
    assert data == {"location": ("a.py", 1, "t"), "longrepr": ("a.py", 2, "Skipped: x"),
                    "sections": [("Captured stdout call", "hi")]}


def test_a_message_split_in_pieces_is_put_back_together() -> None:
    import queue

    inbox: queue.Queue[Any] = queue.Queue()
    worker = suite._Worker(0, [], inbox)
    worker.sink("stdout", suite._MARK + '+{"t": "st')
    worker.sink("stderr", "a line of the worker's own\n")
    worker.sink("stdout", suite._MARK + '=art"}\n')
    assert inbox.get_nowait() == ("message", 0, '{"t": "start"}')
    assert inbox.empty()
    assert worker.stderr == ["a line of the worker's own"]


def test_the_checkout_goes_in_at_its_own_path_without_caches_or_environments(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_x.py").write_text("def test(): pass\n")
    (root / "tests" / "data.txt").write_text("d")
    for skipped in (".git", ".venv", "__pycache__", ".pytest_cache", "node_modules"):
        (root / skipped).mkdir()
        (root / skipped / "f").write_text("no")
    (root / "tests" / "link").symlink_to("data.txt")
    supplied = checkout.Supply(files=[(str(root / "tests" / "data.txt"), "pkg/data.txt")], compiled=[], path=[])
    out = io.BytesIO()
    checkout.write_tar(root, supplied, out)
    first = checkout.fingerprint(root, supplied)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
    base = str(root).lstrip("/")
    assert f"{base}/tests/test_x.py" in names and f"{base}/tests/data.txt" in names
    assert f"{base}/tests/link" in names
    assert not [n for n in names if any(s in n for s in (".git", ".venv", "__pycache__", "node_modules"))]
    assert checkout.SITE.lstrip("/") + "/pkg/data.txt" in names
    assert checkout.fingerprint(root, supplied) == first, "the same checkout, the same image"
    (root / "tests" / "test_x.py").write_text("def test(): assert 1\n")
    assert checkout.fingerprint(root, supplied) != first, "an edit makes a new image"
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:  # and what went in is what was there
        member = tar.extractfile(f"{base}/tests/data.txt")
        assert member is not None and member.read() == b"d"


def test_pytest_and_pure_python_test_dependencies_are_supplied_compiled_ones_named() -> None:
    import _pytest  # noqa: F401 - imported here, as a session would have
    import pluggy  # noqa: F401

    supplied = checkout.supply(Path.cwd(), before=frozenset(), plugins=())
    supplied_tops = {rel.split("/")[0] for _, rel in supplied.files}
    assert {"pytest", "_pytest", "pluggy"} <= supplied_tops
    assert any(top.startswith("pytest-") and top.endswith(".dist-info") for top in supplied_tops)
    assert "dockertask" not in supplied_tops
    assert not any(rel.endswith((".so", ".pyd")) for _, rel in supplied.files)  # never an extension


@pytest.mark.parametrize("nodeid", ["tests/test_a.py::test_x[1-2]", "test_b.py::C::test_y"])
def test_a_node_id_becomes_a_path_that_selects_it_alone(nodeid: str) -> None:
    class _Config:
        rootpath = Path("/work/proj")

    assert suite._path_arg(_Config(), nodeid) == "/work/proj/" + nodeid  # type: ignore[arg-type]


def test_service_fixtures_are_those_that_use_the_network_fixture_directly_or_not() -> None:
    """With --dockertask-image, these run on the host (they drive Docker); the rest run in the container."""

    class _Def:
        def __init__(self, *argnames: str) -> None:
            self.argnames = argnames

    closure = {"dockertask_network": [_Def()], "web": [_Def("dockertask_network")], "client": [_Def("web", "tmp_path")],
               "tmp_path": [_Def("tmp_path_factory")], "tmp_path_factory": [_Def()], "loop": [_Def("loop")],
               "overridden": [_Def("dockertask_network"), _Def()]}  # the nearest definition (last) is the one used
    assert suite._service_fixtures(closure) == {"dockertask_network", "web", "client"}


def test_a_supplied_module_goes_with_the_hosts_byte_code_only_when_it_is_of_that_very_source(tmp_path: Path) -> None:
    """So that containers do not compile pytest from source each time; a stale .pyc is left behind."""
    import py_compile

    source = tmp_path / "mod.py"
    source.write_text("X = 1\n")
    py_compile.compile(str(source), doraise=True)
    assert checkout._valid_pyc(str(source)) is not None
    source.write_text("X = 22\n")  # another size (and mtime): the pyc is not of this source
    assert checkout._valid_pyc(str(source)) is None
    assert checkout._valid_pyc(str(tmp_path / "absent.py")) is None


def test_a_container_started_ahead_of_a_pytest_worker_imports_pytest_from_where_the_worker_would() -> None:
    import marshal

    from dockertask import tasks
    from dockertask.calls import envelope, executors
    from dockertask.runtime import pytestworker

    assert pytestworker.SITE == checkout.SITE
    made = tasks.task(pytestworker.run)
    job = executors.build_job(made, "img", envelope.Envelope({}, b"call"), {}, "r", 1, False)
    assert job.preload == ("dockertask.runtime.pytestworker:preload",)

    def header(piece: bytes) -> Any:
        try:
            return marshal.loads(piece)
        except (ValueError, EOFError, TypeError):
            return None

    (ahead,) = [h for p in envelope.ahead_pieces(job.preload) if isinstance(h := header(p), dict) and "mode" in h]
    assert ahead["mode"] == "ahead" and ahead["preload"] == ["dockertask.runtime.pytestworker:preload"]
