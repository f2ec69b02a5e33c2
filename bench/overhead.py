"""Per-task overhead of ``t(x=1)`` against the bare Docker floor, in the same image and run.

floor: docker SDK (low-level API) create → start → wait → remove of ``python3 -c pass``.
task:  a dockertask ``@task`` call returning x + 1 (pickle, copy in, attach, start, wait,
       copy the result out, remove).
Runs are interleaved (floor, task, floor, task...) so drift on the machine hits both alike.

usage: python bench/overhead.py [--runs N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

import docker

from dockertask import task
from dockertask.backends import default_backend
from dockertask.images import default_image_ref, ensure_image


@task
def inc(x: int) -> int:
    return x + 1


def floor_once(api: docker.APIClient, image: str) -> float:
    start = time.perf_counter()
    c = api.create_container(image, ["python3", "-c", "pass"])
    api.start(c)
    api.wait(c)
    api.remove_container(c, force=True)
    return time.perf_counter() - start


def task_once() -> float:
    start = time.perf_counter()
    assert inc(x=1) == 2
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--profile", action="store_true", help="cProfile the task calls (host side)")
    args = ap.parse_args()
    image = default_image_ref()
    ensure_image(default_backend(), image)
    api = docker.APIClient(version="auto")
    floor_once(api, image), task_once()  # warm both paths (connection pools, runtime zip)
    floors, tasks = [], []
    prof = cProfile.Profile() if args.profile else None
    for _ in range(args.runs):
        floors.append(floor_once(api, image))
        if prof:
            prof.enable()
        tasks.append(task_once())
        if prof:
            prof.disable()
    f, t = statistics.median(floors), statistics.median(tasks)
    print(f"image {image}, {args.runs} runs each, interleaved")
    print(f"floor (create/start/wait/remove python3 -c pass): median {f * 1000:.0f} ms")
    print(f"task  t(x=1):                                     median {t * 1000:.0f} ms")
    print(f"ratio task/floor: {t / f:.2f}x  (overhead {(t - f) * 1000:.0f} ms)")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
