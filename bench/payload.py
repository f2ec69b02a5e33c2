"""Large arguments and results: time over a trivial call, and host peak memory per byte of payload.

time:   ``echo(data)`` with a 50 MB ``bytes`` argument returned as the result, against ``echo(b"")``,
        interleaved in one process (medians).
memory: in a fresh process holding the 50 MB argument and warmed up by a trivial call, the growth of
        peak RSS (VmHWM) during the large call, divided by the payload size: how many more copies
        of it the host held at once (the returned value is one of them).

usage: python bench/payload.py [--mb 50] [--runs 6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from dockertask import task


@task
def echo(data: bytes) -> bytes:
    return data


# Peak RSS from VmHWM, not ru_maxrss: ru_maxrss survives fork+exec, so a child of a process that
# already peaked high (this benchmark, after its timing loop) would start at the parent's peak.
CHILD = """
import sys
sys.path.insert(0, {bench!r})
from payload import echo

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

data = b"x" * ({mb} * 1024 * 1024)
echo(b"")                        # warm: runtime zip, engine connection
base = peak()                    # already holds data
out = echo(data) if {big} else echo(b"")
assert len(out) == len(data) if {big} else out == b""
print(peak() - base)
"""


def peak_extra(mb: int, big: bool) -> int:
    """Bytes of peak RSS beyond the warmed-up process that already holds the argument."""
    code = CHILD.format(bench=sys.path[0], mb=mb, big=big)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    size = args.mb * 1024 * 1024
    data = b"x" * size
    echo(b"")
    small, large = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        echo(b"")
        small.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert len(echo(data)) == size
        large.append(time.perf_counter() - t)
    s, m = statistics.median(small), statistics.median(large)
    print(f"{args.mb} MB argument and result: median {m * 1000:.0f} ms; trivial call {s * 1000:.0f} ms; "
          f"extra {(m - s) * 1000:.0f} ms ({args.runs} runs, interleaved)")
    extra = peak_extra(args.mb, True)
    print(f"host peak memory during the call, beyond the caller's own argument: {extra / 1e6:.0f} MB = "
          f"{extra / size:.1f}x the payload (the returned value itself is 1x of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
