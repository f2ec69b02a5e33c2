"""Reusable replicas: one warm call against the bare floor, and many calls through map_task.

floor:  docker SDK create → start → wait → remove of ``python3 -c pass`` (as bench/overhead.py).
warm:   ``inc(x)`` with ``reusable=ReusePolicy(replicas=1)``, sequential, after the replica started:
        its own process in the warm container, function already loaded.
map:    ``map_task(inc2)(x=range(N))`` with ``ReusePolicy(replicas=2)``: calls per second.
setup:  ``predict(x)`` reads a 500 MB object that ``ReusePolicy(setup=load_model)`` made once in the
        replica (each call's process is forked from it); against a trivial warm call, both with the same
        memory limit, interleaved.
Floor and warm calls are interleaved so drift hits both alike.

usage: python bench/reuse.py [--runs 30] [--calls 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask import Resources, ReusePolicy, map_task, task
from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image


@task(reusable=ReusePolicy(replicas=1))
def inc(x: int) -> int:
    return x + 1


@task(reusable=ReusePolicy(replicas=2))
def inc2(x: int) -> int:
    return x + 1


MODEL: bytearray | None = None


def load_model() -> None:
    global MODEL
    MODEL = bytearray(500 << 20)
    MODEL[-1] = 1


@task(reusable=ReusePolicy(replicas=1, setup=load_model), limits=Resources(mem="1200Mi"))
def predict(x: int) -> int:
    assert MODEL is not None
    return x + MODEL[-1] + len(MODEL) // (500 << 20) - 1


@task(reusable=ReusePolicy(replicas=1), limits=Resources(mem="1200Mi"))
def trivial(x: int) -> int:
    return x + 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    os.environ["DOCKERTASK_PROGRESS"] = "0"
    image = default_image_ref()
    ensure_image(default_backend(), image)
    api = api_client()
    floor_once(api, image)
    inc(0)  # start the replica
    floors, warm = [], []
    for i in range(args.runs):
        floors.append(floor_once(api, image))
        for _ in range(5):  # five warm calls per floor run: they are ~100x shorter
            t = time.perf_counter()
            assert inc(i) == i + 1
            warm.append(time.perf_counter() - t)
    f, w = statistics.median(floors), statistics.median(warm)
    map_task(inc2)(x=[0, 1])  # both replicas started
    t = time.perf_counter()
    assert map_task(inc2)(x=list(range(args.calls))) == [i + 1 for i in range(args.calls)]
    rate = args.calls / (time.perf_counter() - t)
    print(f"image {image}; floor median of {args.runs}, warm median of {len(warm)}, interleaved")
    print(f"floor (create/start/wait/remove python3 -c pass): median {f * 1000:.0f} ms")
    print(f"warm reused call inc(x):                          median {w * 1000:.1f} ms = {w / f:.3f}x the floor")
    print(f"{args.calls} calls through map_task on 2 replicas: {rate:.0f} calls/s")
    predict(0), trivial(0)  # both replicas up, the model loaded
    with_model, plain = [], []
    for i in range(args.runs * 3):
        for fn, times in ((predict, with_model), (trivial, plain)):
            t = time.perf_counter()
            assert fn(i) == i + 1
            times.append(time.perf_counter() - t)
    m, p = statistics.median(with_model), statistics.median(plain)
    print(f"call using a 500 MB object from setup:            median {m * 1000:.1f} ms = {m / f:.3f}x the floor, "
          f"{m / p:.2f}x a trivial warm call ({p * 1000:.1f} ms), {len(plain)} each, interleaved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
