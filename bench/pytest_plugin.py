"""What a ``@pytest.mark.dockertask`` test costs, against the bare Docker floor in the same run.

floor:  docker SDK create → start → wait → remove of ``python3 -c pass`` (as bench/overhead.py).
marked: one pytest process running N trivial marked tests (a failing-free ``assert``), minus the
        same pytest process running the same N tests unmarked, divided by N: the per-test price
        of running the body in a container (pickling, the project archive, assertion helpers, the
        container itself). Rounds are interleaved (floor, marked, plain...) so drift hits all alike.

usage: python bench/pytest_plugin.py [--tests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image

TESTS = """
import pytest

{mark}
@pytest.mark.parametrize("n", range({count}))
def test_trivial(n):
    assert n * 2 == n + n
"""


def pytest_once(project: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:hypothesispytest", str(project)],
                         cwd=project, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"pytest failed in {project}:\n{out.stdout}\n{out.stderr}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    image = default_image_ref()
    ensure_image(default_backend(), image)
    api = api_client()
    with tempfile.TemporaryDirectory() as tmp:
        marked, plain = Path(tmp, "marked"), Path(tmp, "plain")
        for project, mark in ((marked, "@pytest.mark.dockertask"), (plain, "")):
            project.mkdir()
            (project / "test_bench.py").write_text(textwrap.dedent(TESTS.format(mark=mark, count=args.tests)))
        floor_once(api, image)
        pytest_once(marked)  # warm: page cache, pyc files
        floors, marked_runs, plain_runs = [], [], []
        for _ in range(args.rounds):
            floors.extend(floor_once(api, image) for _ in range(3))
            marked_runs.append(pytest_once(marked))
            plain_runs.append(pytest_once(plain))
    f = statistics.median(floors)
    m, p = statistics.median(marked_runs), statistics.median(plain_runs)
    per_test = (m - p) / args.tests
    print(f"image {image}; {args.tests} tests per pytest run, {args.rounds} rounds, interleaved")
    print(f"floor (create/start/wait/remove python3 -c pass): median {f * 1000:.0f} ms")
    print(f"pytest, {args.tests} marked tests: median {m:.2f} s;  same tests unmarked: median {p:.2f} s")
    print(f"per marked test: {per_test * 1000:.0f} ms = {per_test / f:.2f}x the floor "
          f"(overhead over a bare container {(per_test - f) * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
