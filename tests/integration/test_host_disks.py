"""This host's own disks fill or refuse writes (issue 17, E17): the call ends with a TaskOutputError that
names the directory and the cause, the container's stream is drained (no hang), nothing is left behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that fills at once."""
    where = tmp_path / "tiny"
    where.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (needs root): {made.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


SCRIPT = """
import os, sys
from dockertask import File, ReusePolicy, TaskOutputError, task

@task
def big_result() -> bytes:
    return b"x" * (12 << 20)  # past the size that is received into a temporary file

@task
def big_file() -> File:
    with open("/tmp/out.bin", "wb") as f:
        f.write(os.urandom(4 << 20))
    return File("/tmp/out.bin")

@task(reusable=ReusePolicy(replicas=1))
def big_file_reused() -> File:
    with open("/tmp/out.bin", "wb") as f:
        f.write(os.urandom(4 << 20))
    return File("/tmp/out.bin")

try:
    globals()[sys.argv[1]]()
    print("no error")
except TaskOutputError as exc:
    print("TaskOutputError:", exc)
"""


def _run(tmp_path: Path, which: str, env: dict[str, str]) -> str:
    import os

    script = tmp_path / "disk_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.Popen([sys.executable, str(script), which], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**os.environ, **env})
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: dockertask kills and removes its containers on the way out
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise AssertionError(f"{which}: the call hung with the disk full") from None
    from dockertask.backends.discovery import api_client

    left = api_client().containers(all=True, filters={"label": f"dockertask.host-pid={proc.pid}"})
    assert not left, f"containers left behind: {[c['Id'][:12] for c in left]}"
    assert proc.returncode == 0, err
    return out.strip().splitlines()[-1]


def test_a_full_tmpdir_fails_a_large_result_with_an_output_error(tmp_path: Path, full_disk: Path) -> None:
    """A 12 MiB result goes to a temporary file first: with TMPDIR full, the call says so (it hung)."""
    line = _run(tmp_path, "big_result", {"TMPDIR": str(full_disk)})
    assert line.startswith("TaskOutputError:") and str(full_disk) in line and "No space" in line


@pytest.mark.parametrize("which", ["big_file", "big_file_reused"])
def test_a_full_output_directory_fails_returned_files_with_an_output_error(tmp_path: Path, full_disk: Path,
                                                                           which: str) -> None:
    """Returned files are received beside the outputs: with that disk full, the call (isolated or reused)
    is a TaskOutputError naming the directory and the cause."""
    line = _run(tmp_path, which, {"DOCKERTASK_OUTPUT_DIR": str(full_disk / "outputs")})
    assert line.startswith("TaskOutputError:") and str(full_disk) in line and "No space" in line
