"""The `dockertask` console script, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import remove_container

FLOWS = Path(__file__).resolve().parent / "cliproj" / "pkg" / "flows.py"
EXE = str(Path(sys.executable).parent / "dockertask")


def dt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=os.environ.copy())


def test_help_lists_every_command() -> None:
    """`dockertask --help` lists the contract's commands, and each has --help."""
    out = dt("--help")
    assert out.returncode == 0
    for name in ("run", "inspect", "images", "cache", "gc", "doctor"):
        assert name in out.stdout
    for sub in (["run"], ["inspect"], ["images", "build"], ["images", "list"], ["images", "rm"],
                ["images", "prune"], ["cache", "list"], ["cache", "clear"], ["cache", "prune"], ["gc"], ["doctor"]):
        assert dt(*sub, "--help").returncode == 0, sub


def test_run_parses_json_params_and_prints_json() -> None:
    """Lists of dataclasses and dicts come as JSON; the result is JSON on stdout; task output streams."""
    out = dt("run", f"{FLOWS}:total", "--boxes", '[{"w": 2, "h": 3}, {"w": 1, "h": 1}]', "--scale", "2",
             "--labels", '{"a": 1}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"area": 14.0, "labels": 1.0}  # stdout is the result alone: scriptable
    assert "computing 2" in out.stderr.splitlines()  # the task's own prints go to stderr


def test_task_help_lists_its_parameters() -> None:
    """`run FILE:TASK --help` shows the task's own parameters and types."""
    out = dt("run", f"{FLOWS}:total", "--help")
    assert out.returncode == 0
    assert "--boxes" in out.stdout and "--scale" in out.stdout and "Sum the areas" in out.stdout


@pytest.mark.parametrize("args,needle", [
    (["--boxes", "not json"], "--boxes"),
    (["--boxes", "[]", "--scale", "big"], "--scale"),
    (["--boxes", '[{"w": "x", "h": 1}]'], "boxes[0].w"),
    ([], "boxes"),
])
def test_bad_input_is_one_line_without_traceback(args: list[str], needle: str) -> None:
    """A user mistake prints `TaskInputError: ...` naming the parameter, exits 2, no host traceback."""
    out = dt("run", f"{FLOWS}:total", *args)
    assert out.returncode == 2
    assert out.stderr.startswith("TaskInputError:") and needle in out.stderr
    assert "Traceback" not in out.stderr


def test_task_failure_shows_container_traceback_and_exits_1() -> None:
    """A failing task prints the container's traceback and `ValueError: msg`, exit 1."""
    out = dt("run", f"{FLOWS}:explode", "--msg", "kaput")
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "in explode" in out.stderr
    *_, error, hint = out.stderr.strip().splitlines()
    assert error == "ValueError: kaput"
    assert out.stderr.count("ValueError: kaput") == 1  # the traceback's last line, not printed again
    assert hint.startswith("dockertask: see this call with `dockertask show ") and "dockertask rerun " in hint
    assert "cli.py" not in out.stderr  # no host-side frames


def test_a_dataclass_with_defaults_is_optional_and_its_help_shows_its_fields(tmp_path: Path) -> None:
    """`--cfg JSON` lists CleanConfig's fields and defaults and may be left out; a File reads PATH; Docker's
    `256m` is a memory size."""
    shown = " ".join(dt("run", f"{FLOWS}:clean", "--help").stdout.split())  # as one line, however wrapped
    assert '--cfg JSON CleanConfig as a JSON object: {"threshold": float = 0.5, "name": str = \'raw\'}' in shown
    assert "[default: CleanConfig()]" in shown and "--raw PATH" in shown
    raw = tmp_path / "in.txt"
    raw.write_text("hello")
    out = dt("run", f"{FLOWS}:clean", "--raw", str(raw))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "raw:0.5:hello"
    out = dt("run", f"{FLOWS}:clean", "--raw", str(raw), "--cfg", '{"threshold": 0.9}')
    assert json.loads(out.stdout) == "raw:0.9:hello"


def test_unknown_task_is_named() -> None:
    """A FILE:TASK that does not exist says which tasks do."""
    out = dt("run", f"{FLOWS}:nope")
    assert out.returncode == 2 and "nope" in out.stderr and "total" in out.stderr


def test_inspect_prints_spec_with_image_and_constraints() -> None:
    """inspect prints the spec as JSON with the resolved image and Docker constraints."""
    out = dt("inspect", f"{FLOWS}:cached_square")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    assert spec["name"] == "pkg.flows.cached_square" and spec["cache_version"] == "7"
    assert spec["docker"]["image"].startswith("dockertask-runtime:")
    assert spec["interface"]["inputs"] == {"x": {"type": "int"}}


def test_cache_list_marks_the_current_entry_and_prune_removes_the_stale(tmp_path: Path) -> None:
    """Three runs of a cached task with its code edited between them: `cache list` has a header and marks
    the entry a call would hit now; `prune` removes the two no call can hit; `clear --task` takes the short
    name, and a misspelt one is refused with a suggestion, removing nothing."""
    flows = tmp_path / "flows.py"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)

    for edit in ("", "  # edited", "  # edited again"):
        flows.write_text("from dockertask import task\n\n@task(cache=True, cache_version='7')\n"
                         f"def square(x: int) -> int:\n    return x * x{edit}\n")
        assert run("run", f"{flows}:square", "--x", "9").stdout.strip() == "81"
    header, *rows = run("cache", "list").stdout.splitlines()
    assert header.split() == ["KEY", "TASK", "VERSION", "CREATED", "SIZE", "STATE"]
    assert len(rows) == 3 and [r.split()[-1] for r in rows] == ["stale", "stale", "current"]
    assert rows[-1].startswith("*") and not rows[0].startswith("*") and " 7 " in rows[0]
    pruned = run("cache", "prune")
    assert pruned.returncode == 0 and "removed 2 cached result(s)" in pruned.stdout
    [row] = run("cache", "list").stdout.splitlines()[1:]
    assert row.startswith("*") and "flows.square" in row
    wrong = run("cache", "clear", "--task", "sqare")
    assert wrong.returncode == 1 and "did you mean 'square'?" in wrong.stderr
    assert "removed 1" in run("cache", "clear", "--task", "square").stdout
    assert run("cache", "list").stdout == ""


def test_doctor_reports_a_healthy_setup() -> None:
    """doctor checks engine, default image and Python versions, and exits 0 here."""
    out = dt("doctor")
    assert out.returncode == 0, out.stdout
    assert "Docker engine" in out.stdout and "default image" in out.stdout and "Python 3." in out.stdout
    assert "found through" in out.stdout


def test_doctor_fix_removes_what_dead_processes_left(api) -> None:  # type: ignore[no-untyped-def]
    """A container of a process that no longer exists fails `doctor` (which says to run gc), and `doctor
    --fix` removes it, so `./dev.sh test` after a killed run goes on instead of stopping there."""
    import socket

    from dockertask.images.refs import default_image_ref

    from ..conftest import SESSION, SESSION_LABEL

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    labels = {"dockertask.run-id": "orphan", "dockertask.host": socket.gethostname(),
              "dockertask.host-pid": gone.stdout.strip(), SESSION_LABEL: SESSION}
    cid = api.create_container(default_image_ref(), ["true"], labels=labels)["Id"]
    try:
        out = dt("doctor")
        assert out.returncode == 1 and "run `dockertask gc`" in out.stdout, out.stdout
        out = dt("doctor", "--fix")
        assert out.returncode == 0, out.stdout
        assert "container(s) left by dead dockertask processes" in out.stdout and "removed " in out.stdout
        assert not api.containers(all=True, filters={"id": cid})
    finally:
        remove_container(api, cid)


def test_run_writes_the_result_to_a_file_with_output(tmp_path: Path) -> None:
    """--output FILE puts the JSON result in FILE instead of stdout."""
    target = tmp_path / "result.json"
    out = dt("run", "--output", str(target), f"{FLOWS}:cached_square", "--x", "5")
    assert out.returncode == 0, out.stderr
    assert json.loads(target.read_text()) == 25 and out.stdout == ""


def test_booleans_take_flag_and_no_flag_and_optional_strings_take_bare_text() -> None:
    """A bool parameter is --flag/--no-flag; an Optional[str] one takes plain text, not JSON."""
    out = dt("run", f"{FLOWS}:describe", "--loud", "--name", "ada")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "ADA"
    assert json.loads(dt("run", f"{FLOWS}:describe", "--no-loud", "--name", "ada").stdout) == "ada"
    assert json.loads(dt("run", f"{FLOWS}:describe", "--no-loud").stdout) == "nobody"


def test_list_commands_speak_json_with_json() -> None:
    """`cache list --json` and `images list --json` print a JSON array a script can read."""
    assert dt("run", f"{FLOWS}:cached_square", "--x", "3").returncode == 0
    entries = json.loads(dt("cache", "list", "--json").stdout)
    assert [e["task"] for e in entries] == ["pkg.flows.cached_square"] and entries[0]["size"] > 0
    images = json.loads(dt("images", "list", "--json").stdout)
    assert any(i["kind"] == "default" and i["ref"].startswith("dockertask-runtime:") for i in images)


def test_python_dash_m_dockertask_is_the_cli() -> None:
    """`python -m dockertask` works where the console script is not on PATH."""
    out = subprocess.run([sys.executable, "-m", "dockertask", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage:" in out.stdout and "run" in out.stdout


@pytest.mark.parametrize("file_name", ["json.py", "a.b.py"])
def test_run_loads_the_file_named_even_when_its_name_is_no_module_of_its_own(tmp_path: Path,
                                                                              file_name: str) -> None:
    """`json.py:t` runs the user's json.py (the standard library's json was loaded instead), and `a.b.py:t`
    runs a.b.py (a 39-line traceback before): the file named is the file run (issue 17, F24)."""
    (tmp_path / file_name).write_text("from dockertask import task\n\n@task\ndef t() -> str:\n    return 'mine'\n")
    out = dt("run", f"{file_name}:t", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '"mine"'


def test_images_prune_lists_suite_images_and_rm_takes_only_dockertasks(api) -> None:  # type: ignore[no-untyped-def]
    """`images prune --dry-run` names a suite image and why; `images rm` removes it, and refuses an image
    dockertask did not make. (A real prune is not run here: the engine is shared.)"""
    import io
    import uuid

    from dockertask.images.refs import default_image_ref

    suite = f"dockertask-test-suite:{uuid.uuid4().hex[:8]}"
    foreign = f"dockertask-test-foreign:{uuid.uuid4().hex[:8]}"
    list(api.build(fileobj=io.BytesIO(f"FROM {default_image_ref()}\nLABEL dockertask.suite=1\n".encode()),
                   tag=suite, rm=True, decode=True))
    list(api.build(fileobj=io.BytesIO(b"FROM scratch\nLABEL made.by=someone-else\n"), tag=foreign, rm=True,
                   decode=True))
    try:
        listed = dt("images", "prune", "--dry-run")
        assert listed.returncode == 0, listed.stderr
        assert any(suite in line and "suite image" in line for line in listed.stdout.splitlines()), listed.stdout
        assert api.images(name=suite.split(":")[0])  # a dry run removes nothing
        refused = dt("images", "rm", foreign)
        assert refused.returncode == 1 and "not an image dockertask made" in refused.stderr
        removed = dt("images", "rm", suite)
        assert removed.returncode == 0 and f"removed {suite}" in removed.stdout, removed.stderr
        assert not api.images(name=suite.split(":")[0])
    finally:
        for tag in (suite, foreign):
            try:
                api.remove_image(tag, force=True)
            except Exception:  # noqa: BLE001 - removed by the test itself
                pass
