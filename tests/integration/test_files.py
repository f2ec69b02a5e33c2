"""File and Directory on a real engine: in, out, nested, chained, mapped, cached, refused when unsafe,
bounded in memory; volumes relative to the task's file and Docker(user='host')."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dockertask import Directory, File, TaskInputError, TaskOutputError, map_task, task

ROOT = Path(__file__).resolve().parents[2]
DOCKERTASK = str(Path(sys.executable).parent / "dockertask")


@pytest.fixture(autouse=True)
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "outputs"
    monkeypatch.setenv("DOCKERTASK_OUTPUT_DIR", str(out))
    return out


@task
def count_lines(data: File) -> int:
    with open(data) as fh:
        return sum(1 for _ in fh)


@task
def render(n: int) -> Directory:
    os.makedirs("/tmp/site/pages", exist_ok=True)
    for i in range(n):
        with open(f"/tmp/site/pages/p{i}.html", "w") as f:
            f.write(f"page {i}\n")
    with open("/tmp/site/build.sh", "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod("/tmp/site/build.sh", 0o750)
    os.symlink("pages/p0.html", "/tmp/site/index.html")
    return Directory("/tmp/site")


def test_a_file_goes_in_and_a_directory_comes_back_whole_and_owned_by_the_host_user(tmp_path: Path,
                                                                                     outputs: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("a\nb\nc\n")
    assert count_lines(data=str(data)) == 3  # a str where File is annotated
    assert count_lines(data=data) == 3  # a Path too
    site = render(n=2)
    root = Path(site)
    assert isinstance(site, Directory) and root.parent.parent.parent == outputs
    assert root.parent.parent.name.endswith("render")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "build.sh", "index.html", "pages", "pages/p0.html", "pages/p1.html"]
    assert os.readlink(root / "index.html") == "pages/p0.html"
    assert stat.S_IMODE((root / "build.sh").stat().st_mode) == 0o750
    assert (root / "index.html").read_text() == "page 0\n"
    assert {p.lstat().st_uid for p in root.rglob("*")} | {root.stat().st_uid} == {os.getuid()}


@dataclasses.dataclass
class Report:
    summary: File
    parts: dict[str, File]


@task
def split(data: File, sizes: list[int]) -> Report:
    with open(data) as f:
        text = f.read()
    parts = {}
    pos = 0
    for i, n in enumerate(sizes):
        path = f"/tmp/part{i}.txt"
        with open(path, "w") as f:
            f.write(text[pos:pos + n])
        parts[f"p{i}"] = File(path)
        pos += n
    with open("/tmp/summary.txt", "w") as f:
        f.write(str(len(parts)))
    return Report(File("/tmp/summary.txt"), parts)


@task
def concat(parts: list[File]) -> str:
    return "".join(open(p).read() for p in parts)


def test_files_nested_in_dataclasses_dicts_and_lists_and_a_returned_file_passed_on(tmp_path: Path) -> None:
    data = tmp_path / "text.txt"
    data.write_text("abcdef")
    report = split(data=data, sizes=[2, 4])
    assert isinstance(report.summary, File) and Path(report.summary).read_text() == "2"
    assert {k: Path(v).read_text() for k, v in report.parts.items()} == {"p0": "ab", "p1": "cdef"}
    assert concat(parts=[report.parts["p1"], report.parts["p0"]]) == "cdefab"  # straight to another task


def test_map_task_over_a_list_of_files(tmp_path: Path) -> None:
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}.txt"
        p.write_text("x\n" * (i + 1))
        paths.append(str(p))
    assert map_task(count_lines, concurrency=2)(data=paths) == [1, 2, 3, 4]


def test_a_missing_input_is_refused_before_any_container(tmp_path: Path, api: Any) -> None:
    before = {c["Id"] for c in api.containers(all=True)}
    with pytest.raises(TaskInputError, match=r"parameter 'data': no such file: .*missing\.csv"):
        count_lines(data=tmp_path / "missing.csv")
    assert {c["Id"] for c in api.containers(all=True)} <= before


@task
def forges_an_archive(kind: str) -> File:
    """Runs in the container: replaces the archive maker the bootstrap is about to use with a hostile one."""
    import io
    import tarfile

    from dockertask import files

    def hostile(items: Any) -> Any:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            if kind == "dotdot":
                info = tarfile.TarInfo("0/../../../escaped")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
            elif kind == "absolute":
                info = tarfile.TarInfo("/tmp/escaped-absolute")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
            else:  # a symlink out of the tree, then a write through it
                link = tarfile.TarInfo("0/x.txt")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(link)
        yield buf.getvalue()

    files.tar_pieces = hostile
    with open("/tmp/x.txt", "w") as f:
        f.write("fine")
    return File("/tmp/x.txt")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink-out"])
def test_a_returned_archive_that_would_escape_is_refused_and_writes_nothing(kind: str, tmp_path: Path,
                                                                              outputs: Path) -> None:
    before = set(Path("/tmp").iterdir())
    with pytest.raises(TaskOutputError, match="refused"):
        forges_an_archive(kind=kind)
    assert not Path("/tmp/escaped-absolute").exists()
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*"))
    assert set(Path("/tmp").iterdir()) - before == set() or all(
        not p.name.startswith("escaped") for p in set(Path("/tmp").iterdir()) - before)
    assert not outputs.exists() or not any(p.is_file() or p.is_symlink() for p in outputs.rglob("*"))


@task
def links_out() -> Directory:
    os.makedirs("/tmp/d", exist_ok=True)
    os.symlink("/etc/hostname", "/tmp/d/host")
    return Directory("/tmp/d")


def test_a_symlink_pointing_outside_the_returned_tree_is_an_error(outputs: Path) -> None:
    with pytest.raises(TaskOutputError, match=r"symlink '0/d/host' -> '/etc/hostname' points outside its tree"):
        links_out()


@task
def returns_a_missing_file() -> File:
    return File("/tmp/not-there.txt")


def test_returning_a_file_that_does_not_exist_is_a_task_output_error() -> None:
    with pytest.raises(TaskOutputError, match=r"no such file in the container"):
        returns_a_missing_file()


@task(cache=True)
def fingerprint(data: File) -> tuple[str, File]:
    import socket

    with open("/tmp/who.txt", "w") as f:
        f.write(socket.gethostname())
    return open(data).read(), File("/tmp/who.txt")


def test_cached_by_content_and_the_outputs_files_are_restored(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same")
    b.write_text("same")
    first = fingerprint(data=a)
    second = fingerprint(data=b)  # another path, same content: a hit, nothing runs
    assert second[0] == "same" and Path(second[1]).read_text() == Path(first[1]).read_text()
    assert Path(second[1]) != Path(first[1]), "a hit gets its own copy of the files"
    b.write_text("changed")
    third = fingerprint(data=b)
    assert third[0] == "changed" and Path(third[1]).read_text() != Path(first[1]).read_text()


MODULE = """
import os
from dockertask import Docker, task

@task(task_config=Docker(volumes=["./data:/data"], user="host"))
def write_through_bind(name: str) -> tuple[list[str], int]:
    with open(os.path.join("/data", name), "w") as f:
        f.write("written in the container")
    return sorted(os.listdir("/data")), os.getuid()
"""


def test_a_relative_volume_is_next_to_the_tasks_file_and_user_host_owns_what_it_writes(tmp_path: Path) -> None:
    """Run from another directory: ./data is the one beside the module, and the file the task writes
    there belongs to this host user, not to root."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "seed.txt").write_text("seed")
    (project / "flows.py").write_text(textwrap.dedent(MODULE))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import flows; "
            "print(flows.write_through_bind(name='out.txt'))")
    out = subprocess.run([sys.executable, "-c", code, str(project)], cwd=elsewhere, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"(['out.txt', 'seed.txt'], {os.getuid()})"
    written = project / "data" / "out.txt"
    assert written.read_text() == "written in the container"
    assert written.stat().st_uid == os.getuid()


def test_the_cli_takes_a_path_for_a_file_and_prints_the_returned_files_host_path(tmp_path: Path) -> None:
    (tmp_path / "cli_files.py").write_text(textwrap.dedent("""
        from dockertask import File, task

        @task
        def shout(data: File) -> File:
            with open(data) as f, open("/tmp/loud.txt", "w") as g:
                g.write(f.read().upper())
            return File("/tmp/loud.txt")
    """))
    (tmp_path / "in.txt").write_text("hey")
    out = subprocess.run([DOCKERTASK, "run", "cli_files.py:shout", "--data", "in.txt"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = Path(out.stdout.strip())
    assert printed.is_absolute() and printed.read_text() == "HEY"


MEMORY = """
import os, sys
from dockertask import File, task

@task
def checksum(data: File) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(data, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()

@task
def make(size: int) -> File:
    with open("/tmp/big.bin", "wb") as f:
        for _ in range(size >> 20):
            f.write(b"\\1" * (1 << 20))
    return File("/tmp/big.bin")

def peak() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

size = int(sys.argv[1])
with open("big.in", "wb") as f:
    for _ in range(size >> 20):
        f.write(os.urandom(1 << 20))
before = peak()
checksum(data="big.in")
made = make(size=size)
assert os.path.getsize(made) == size
print(before, peak())
"""


def test_a_large_file_in_and_out_never_sits_whole_in_host_memory(tmp_path: Path) -> None:
    """256 MiB in and 256 MiB out: the host's peak resident memory grows by a small fraction of that."""
    size = 256 << 20
    (tmp_path / "mem.py").write_text(MEMORY)
    out = subprocess.run([sys.executable, "mem.py", str(size)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "DOCKERTASK_OUTPUT_DIR": str(tmp_path / "out")})
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after - before < size // 4, f"host peak grew by {(after - before) >> 20} MiB for {size >> 20} MiB files"


@task(reusable=__import__("dockertask").ReusePolicy(replicas=1))
def upper_reused(data: File) -> tuple[File, list[str]]:
    out = "/tmp/upper-" + os.path.basename(data)
    with open(data) as f, open(out, "w") as g:
        g.write(f.read().upper())
    here = os.path.dirname(os.path.dirname(os.fspath(data)))
    return File(out), sorted(os.listdir(here))


def test_files_through_a_reusable_replica_and_no_call_sees_anothers_inputs(tmp_path: Path) -> None:
    from dockertask.calls import replicas

    try:
        (tmp_path / "one.txt").write_text("one")
        (tmp_path / "two.txt").write_text("two")
        first, seen_first = upper_reused(data=tmp_path / "one.txt")
        second, seen_second = upper_reused(data=first)  # a returned File, straight back in
        assert Path(first).read_text() == "ONE" and Path(second).read_text() == "ONE"
        assert seen_first == seen_second == ["0"], "a call's input directory held another call's files"
    finally:
        replicas.shutdown()
