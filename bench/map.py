"""map_task over N trivial items at concurrency C, against C threads doing the bare floor over N containers.

floor: C threads, each taking containers from a shared counter: docker SDK create → start → wait →
       remove of ``python3 -c pass`` (as bench/overhead.py), N containers in all.
map:   ``map_task(inc, concurrency=C)(x=range(N))``: N isolated calls, results in order.
Rounds are interleaved (floor, map, floor, map...) so drift on the machine hits both alike.

usage: python bench/map.py [--items 48] [--concurrency 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time

import docker
from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask import map_task, task
from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image


@task
def inc(x: int) -> int:
    return x + 1


def floor_parallel(api: docker.APIClient, image: str, items: int, threads: int) -> float:
    counter = itertools.count()

    def worker() -> None:
        while next(counter) < items:
            floor_once(api, image)

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def map_once(items: int, concurrency: int) -> float:
    start = time.perf_counter()
    assert map_task(inc, concurrency=concurrency)(x=list(range(items))) == [i + 1 for i in range(items)]
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["DOCKERTASK_PROGRESS"] = "0"
    image = default_image_ref()
    ensure_image(default_backend(), image)
    api = api_client(max_pool_size=args.concurrency * 2)
    map_once(args.concurrency, args.concurrency)  # warm: runtime zip, connection pool
    floors, maps = [], []
    for _ in range(args.rounds):
        floors.append(floor_parallel(api, image, args.items, args.concurrency))
        maps.append(map_once(args.items, args.concurrency))
    f, m = statistics.median(floors), statistics.median(maps)
    print(f"image {image}; {args.items} items, concurrency {args.concurrency}, {args.rounds} rounds, interleaved")
    print(f"floor ({args.concurrency} threads, bare create/start/wait/remove): median {f:.2f} s "
          f"({args.items / f:.1f} containers/s)")
    print(f"map_task:                                   median {m:.2f} s ({args.items / m:.1f} calls/s)")
    print(f"ratio map/floor: {m / f:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
