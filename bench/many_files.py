"""Many small returned files, end to end (issue 17, F25): a task that writes N small files and returns
them as a Directory, against the same task returning only their count, interleaved in one loop. The
difference is what returning them costs: the container's tar of them, the stream, the host's strict
unpack and its writes.

The files are written to /dev/shm (a tmpfs, Docker(shm_size=...)) so that the engine's own storage,
which a plain `docker run` pays as well, stays out of the figure: on this machine's overlay2 over ext4,
creating 100,000 files in the container took 9-59 s and removing its container ~25 s.

usage: python bench/many_files.py [--files 100000] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from dockertask import Directory, Docker, task


def _write(n: int) -> str:
    root = "/dev/shm/out"
    for i in range(n):
        d = f"{root}/d{i // 1000}"
        if i % 1000 == 0:
            os.makedirs(d)
        with open(f"{d}/f{i}.txt", "w") as f:
            f.write("x")
    return root


@task(task_config=Docker(shm_size="2g"))
def returned(n: int) -> Directory:
    return Directory(_write(n))


@task(task_config=Docker(shm_size="2g"))
def counted(n: int) -> int:
    _write(n)
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"counted": [], "returned": []}
    out = tempfile.mkdtemp(prefix="dockertask-bench-many-")
    os.environ["DOCKERTASK_OUTPUT_DIR"] = out
    try:
        for _ in range(args.runs):
            start = time.perf_counter()
            counted(args.files)
            times["counted"].append(time.perf_counter() - start)
            start = time.perf_counter()
            returned(args.files)
            times["returned"].append(time.perf_counter() - start)
            shutil.rmtree(out)
            os.makedirs(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    base, got = statistics.median(times["counted"]), statistics.median(times["returned"])
    print(f"{args.files} small files, {args.runs} interleaved runs, medians: written and counted {base:.1f} s, "
          f"written and returned {got:.1f} s; returning them {got - base:.1f} s "
          f"({(got - base) / args.files * 1e6:.0f} us a file), {got / base:.2f}x the task alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
