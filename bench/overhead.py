"""Per-task overhead of ``t(x=1)`` against the bare Docker floor, in the same image and run.

floor: docker SDK (low-level API) create → start → wait → remove of ``python3 -c pass``.
task:  a dockertask ``@task`` call returning x + 1 (pickle, copy in, attach, start, wait,
       copy the result out, remove).
Runs are interleaved (floor, task, floor, task...) so drift on the machine hits both alike.

usage: python bench/overhead.py [--runs N] [--profile] [--phases]

--phases times each engine call of both paths (medians), which shows where the difference
goes: host-side work is what is left of a task call once the engine calls are taken out.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import statistics
import sys
import time

import docker

from dockertask import task
from dockertask.backends import default_backend
from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref, ensure_image


@task
def inc(x: int) -> int:
    return x + 1


PHASES: dict[str, collections.defaultdict[str, list[float]]] = {
    "floor": collections.defaultdict(list), "task": collections.defaultdict(list)}


def timed(api: docker.APIClient, path: str) -> None:
    """Wrap the engine calls of ``api`` so each one's duration is recorded under ``path``."""
    for name in ("create_container", "create_container_from_config", "attach_socket", "start", "wait",
                 "inspect_container", "remove_container"):
        original = getattr(api, name)

        def wrapper(*a: object, _original=original, _name=name, **k: object) -> object:  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                PHASES[path][_name.replace("_from_config", "")].append(time.perf_counter() - t0)

        setattr(api, name, wrapper)


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
    ap.add_argument("--phases", action="store_true", help="time each engine call of both paths")
    args = ap.parse_args()
    image = default_image_ref()
    backend = default_backend()
    ensure_image(backend, image)
    api = api_client()
    floor_once(api, image), task_once()  # warm both paths (connection pools, runtime zip)
    if args.phases:
        timed(api, "floor")
        timed(backend.api, "task")  # type: ignore[attr-defined]
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
    if args.phases:
        for path, total in (("floor", f), ("task", t)):
            parts = {k: statistics.median(v) for k, v in PHASES[path].items()}
            shown = "  ".join(f"{k} {v * 1000:.0f}" for k, v in parts.items())
            rest = total - sum(parts.values())
            print(f"{path:5} phases (median ms): {shown}  | outside engine calls {rest * 1000:.0f}")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
