"""Throughput of a File in and out of a task, against `docker cp` of the same file, in the same run.

in:   a task given a SIZE File (it only stats it) — minus a trivial call — against `docker cp` of the
      file into a created container.
out:  a task that writes SIZE bytes and returns them as a File — minus the same task returning only
      the size, so the writing itself is not counted — against `docker cp` of such a file out of a
      container.
Also the host's peak resident memory growth over the whole run (VmHWM), against SIZE.
Runs are interleaved (dockertask, docker cp, ...) so drift on the machine hits both alike.

usage: python bench/files.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from dockertask import File, task
from dockertask.backends import default_backend
from dockertask.images.refs import default_image_ref, ensure_image


@task
def trivial() -> int:
    return 1


@task
def size_of(data: File) -> int:
    return os.path.getsize(data)


@task
def make(size: int, send: bool) -> File | int:
    block = b"\1" * (1 << 20)
    with open("/tmp/big.bin", "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
    return File("/tmp/big.bin") if send else size


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.size_mib << 20
    image = default_image_ref()
    ensure_image(default_backend(), image)
    work = tempfile.mkdtemp(prefix="dockertask-bench-files-", dir=os.getcwd())
    os.environ.setdefault("DOCKERTASK_OUTPUT_DIR", os.path.join(work, "outputs"))
    source = os.path.join(work, "big.in")
    with open(source, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    trivial()
    start_rss = peak_rss()
    task_in, task_out, cp_in, cp_out, base, written = [], [], [], [], [], []
    try:
        for i in range(args.runs):
            base.append(timed(trivial))
            task_in.append(timed(size_of, source))
            written.append(timed(lambda: make(size=size, send=False)))
            t0 = time.perf_counter()
            made = make(size=size, send=True)
            task_out.append(time.perf_counter() - t0)
            os.unlink(made)
            cid = docker("create", image, "sleep", "60")
            try:
                t0 = time.perf_counter()
                docker("cp", source, f"{cid}:/tmp/big.in")
                cp_in.append(time.perf_counter() - t0)
            finally:
                docker("rm", "-f", cid)
            cid = docker("run", "-d", image, "sh", "-c", f"head -c {size} /dev/zero > /tmp/big.out && sleep 60")
            try:
                while docker("exec", cid, "stat", "-c", "%s", "/tmp/big.out") != str(size):
                    time.sleep(0.2)
                target = os.path.join(work, f"cp-out-{i}")
                t0 = time.perf_counter()
                docker("cp", f"{cid}:/tmp/big.out", target)
                cp_out.append(time.perf_counter() - t0)
                os.unlink(target)
            finally:
                docker("rm", "-f", cid)
        grew = peak_rss() - start_rss
    finally:
        subprocess.run(["rm", "-rf", work], check=False)
    mb = size / 1e6
    b = statistics.median(base)

    def rate(seconds: float) -> float:
        return mb / seconds

    tin, tout = statistics.median(task_in) - b, statistics.median(task_out) - statistics.median(written)
    cin, cout = statistics.median(cp_in), statistics.median(cp_out)
    print(f"{args.size_mib} MiB, {args.runs} runs each, interleaved; a trivial call took {b * 1000:.0f} ms")
    print(f"in:  dockertask {rate(tin):.0f} MB/s ({tin:.2f} s over a trivial call); docker cp {rate(cin):.0f} MB/s "
          f"({cin:.2f} s); ratio time {tin / cin:.2f}x")
    print(f"out: dockertask {rate(tout):.0f} MB/s ({tout:.2f} s over writing it alone); "
          f"docker cp {rate(cout):.0f} MB/s ({cout:.2f} s); ratio time {tout / cout:.2f}x")
    print(f"host peak memory grew by {grew / 2**20:.0f} MiB over the run ({grew / size:.3f}x the file size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
