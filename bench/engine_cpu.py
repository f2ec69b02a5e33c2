"""What one bare container costs the whole machine in CPU: create → start → wait → remove of
``python3 -c pass`` (bench/overhead.py's floor), N times one after another, against the busy time of every
process (/proc/stat: the engine, containerd, its shims, runc, the container and this client).

On a machine of C cores no scheme that gives each test or call a fresh container can, in throughput, cost
less than that CPU divided by C, whatever it starts ahead (issue 18's container isolation).

usage: python bench/engine_cpu.py [--containers 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image


def _busy() -> float:
    """CPU seconds the machine has spent on anything but idle and I/O wait, since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=20)
    args = ap.parse_args()
    api, image = api_client(), default_image_ref()
    ensure_image(default_backend(), image)
    floor_once(api, image)  # warm
    busy, start = _busy(), time.perf_counter()
    for _ in range(args.containers):
        floor_once(api, image)
    cpu = (_busy() - busy) / args.containers
    wall = (time.perf_counter() - start) / args.containers
    cores = os.cpu_count() or 1
    print(f"{args.containers} bare containers one after another: {wall * 1000:.0f} ms each (the floor), "
          f"{cpu * 1000:.0f} ms of the machine's CPU each; on {cores} cores a fresh container cannot cost less "
          f"than {cpu / cores * 1000:.0f} ms in throughput = {cpu / cores / wall:.2f}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
