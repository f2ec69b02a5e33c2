"""Two versions of dockertask in one interleaved run: does a change cost anything?

Each version (a git revision of this repository, unpacked to a temporary directory, or this checkout)
runs in a worker process of its own, put first on PYTHONPATH. One loop then takes, in turn, a bare
floor (create/start/wait/remove of ``python3 -c pass``, as bench/overhead.py) and one call of each
version, so drift on the machine hits all alike:

    isolated   t(x=1), a fresh container per call (bench/overhead.py's task)
    reused     a warm call on a ReusePolicy(replicas=1) replica (bench/reuse.py's warm call)
    first      a fresh process importing dockertask and making one call (bench/first_call.py's task)
    import     a fresh process running ``from dockertask import task`` (and ``import dockertask``)

usage: python bench/versions.py --old REV [--new REV] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image

ROOT = Path(__file__).resolve().parent.parent
WORKER = """
import sys, time
from dockertask import ReusePolicy, task

@task
def inc(x: int) -> int:
    return x + 1

@task(reusable=ReusePolicy(replicas=1))
def rinc(x: int) -> int:
    return x + 1

print(__import__("dockertask").__file__, flush=True)
for line in sys.stdin:
    f = inc if line.strip() == "isolated" else rinc
    t0 = time.perf_counter()
    assert f(x=1) == 2
    print(time.perf_counter() - t0, flush=True)
"""
FIRST = """
from dockertask import task

@task
def inc(x: int) -> int:
    return x + 1

assert inc(x=1) == 2
"""


def unpack(rev: str, into: Path) -> Path:
    """``rev``'s tree of this repository, as files (no worktree left behind: a temporary directory)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


class Worker:
    def __init__(self, name: str, path: Path) -> None:
        self.name, self.env = name, {**os.environ, "PYTHONPATH": str(path), "DOCKERTASK_PROGRESS": "0"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=self.env, cwd=tempfile.gettempdir())
        assert self.proc.stdout is not None
        loaded = self.proc.stdout.readline().strip()
        if not loaded.startswith(str(path)):
            raise SystemExit(f"{name}: imported dockertask from {loaded}, not {path}")

    def call(self, kind: str) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(kind + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def fresh(self, code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=self.env, check=True, cwd=tempfile.gettempdir())
        return time.perf_counter() - t0

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True, help="a git revision of this repository (e.g. main, HEAD~3)")
    ap.add_argument("--new", default="", help="a git revision; default: this checkout as it is")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    image = default_image_ref()
    ensure_image(default_backend(), image)
    api = api_client()
    with tempfile.TemporaryDirectory(prefix="dockertask-versions-") as tmp:
        old_path = unpack(args.old, Path(tmp) / "old")
        new_path = unpack(args.new, Path(tmp) / "new") if args.new else ROOT
        workers = [Worker(f"old ({args.old})", old_path), Worker(f"new ({args.new or 'checkout'})", new_path)]
        times: dict[str, list[float]] = {}

        def note(what: str, value: float) -> None:
            times.setdefault(what, []).append(value)

        try:
            for w in workers:  # warm each path: connection pools, runtime zip, the replica, spares
                for _ in range(3):
                    w.call("isolated"), w.call("reused")
            floor_once(api, image)
            for i in range(args.runs):
                order = workers if i % 2 == 0 else workers[::-1]
                note("floor", floor_once(api, image))
                for w in order:
                    note(f"isolated {w.name}", w.call("isolated"))
                for w in order:
                    note(f"reused {w.name}", w.call("reused"))
                for w in order:
                    note(f"import {w.name}", w.fresh("from dockertask import task"))
                    note(f"bare import {w.name}", w.fresh("import dockertask"))
                if i % 2 == 0:  # a fresh process per first call: half as many, they are slow
                    for w in order:
                        note(f"first {w.name}", w.fresh(FIRST))
        finally:
            for w in workers:
                w.close()
    floor = statistics.median(times["floor"])
    print(f"image {image}, {args.runs} rounds, old and new interleaved (order alternating)")
    print(f"{'floor (create/start/wait/remove python3 -c pass)':54} median {floor * 1000:7.1f} ms")
    for what, values in times.items():
        if what == "floor":
            continue
        med = statistics.median(values)
        ratio = f"  {med / floor:.3f}x floor" if what.startswith(("isolated", "reused", "first")) else ""
        print(f"{what:54} median {med * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, n={len(values)}){ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
