"""Per-call time and throughput on a real 3-node Swarm, against the bare service floor on the same cluster.

floor: a service (one task, restart none) of ``python3 -c pass`` created on the manager, waited for
       until its task is complete, then removed — the image by digest, as dockertask runs it.
task:  a dockertask ``@task`` call returning x + 1 on the Swarm backend (token secret, service,
       callback connection, result, removal).
Each run also times a call that finds a service made ahead for it (spares.py: started and connected
while the floor ran). Then a reused call (ReusePolicy: a warm replica service), and 24 concurrent calls (map_task,
concurrency 24) against 24 concurrent bare services.
Runs are interleaved (floor, task, floor, task...) so drift on the machine hits both alike.
The cluster is built for the run (tests/swarm/cluster.py: Docker-in-Docker nodes and a registry)
and removed afterwards.

usage: python bench/swarm.py [--runs N] [--fanout N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockertask import ReusePolicy, backends, map_task, task
from dockertask.backends.docker import NETWORK_LABEL, DockerBackend  # noqa: E402
from dockertask.calls import replicas  # noqa: E402
from dockertask.host import owner
from dockertask.images import refs
from tests.swarm import cluster as cluster_mod  # noqa: E402
from tests.swarm.conftest import make_backend  # noqa: E402


@task
def inc(x: int) -> int:
    return x + 1


@task(reusable=ReusePolicy(replicas=1, idle_ttl=120))
def warm_inc(x: int) -> int:
    return x + 1


def bare_service(api, image: str, i: int) -> float:  # type: ignore[no-untyped-def]
    from docker.types import ContainerSpec, RestartPolicy, TaskTemplate

    start = time.perf_counter()
    sid = api.create_service(TaskTemplate(ContainerSpec(image, command=["python3", "-c", "pass"]),
                                          restart_policy=RestartPolicy(condition="none")),
                             name=f"bench-floor-{i}-{time.monotonic_ns()}")["ID"]
    try:
        while True:
            tasks = api.tasks(filters={"service": sid})
            if tasks and tasks[0]["Status"]["State"] in ("complete", "failed", "rejected"):
                assert tasks[0]["Status"]["State"] == "complete", tasks[0]["Status"]
                break
            time.sleep(0.05)
    finally:
        api.remove_service(sid)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fanout", type=int, default=24)
    args = parser.parse_args()
    refs.build_default_image(DockerBackend())
    t0 = time.perf_counter()
    cluster, network, containers = cluster_mod.start({NETWORK_LABEL: "swarm-bench", **owner.owner_labels()},
                                                     [refs.default_image_ref()])
    print(f"cluster of {len(cluster.node_urls)} nodes + registry up in {time.perf_counter() - t0:.1f} s")
    try:
        backend = make_backend(cluster)
        backends.set_default_backend(backend)
        image = backend.publish(refs.default_image_ref())
        api = cluster.engine("manager")
        bare_service(api, image, -1)  # every node pulls once before timing starts
        for i in range(3):
            inc(i)
        floors, calls, ahead = [], [], []
        for i in range(args.runs):
            floors.append(bare_service(api, image, i))  # meanwhile the spare ordered by the last call is made
            os.environ["DOCKERTASK_PRECREATE"] = "0"  # a fresh service: what a first or lone call costs
            t = time.perf_counter()
            assert inc(i) == i + 1
            calls.append(time.perf_counter() - t)
            os.environ["DOCKERTASK_PRECREATE"] = "1"  # the service made ahead, started and connected
            t = time.perf_counter()
            assert inc(i) == i + 1
            ahead.append(time.perf_counter() - t)
        f, c, a = statistics.median(floors), statistics.median(calls), statistics.median(ahead)
        print(f"one call:   floor {f * 1000:.0f} ms, task {c * 1000:.0f} ms, ratio {c / f:.2f}x "
              f"(medians of {args.runs}; floor min {min(floors) * 1000:.0f}, task min {min(calls) * 1000:.0f})")
        print(f"one call in a service made ahead: {a * 1000:.0f} ms, ratio {a / f:.3f}x "
              f"(median of {args.runs}, min {min(ahead) * 1000:.0f} ms)")
        warm_inc(0)  # the replica's service starts
        reused = []
        for i in range(args.runs):
            t = time.perf_counter()
            assert warm_inc(i) == i + 1
            reused.append(time.perf_counter() - t)
        replicas.shutdown()
        r = statistics.median(reused)
        print(f"reused call: {r * 1000:.1f} ms, ratio {r / f:.3f}x the floor (median of {args.runs})")
        n = args.fanout
        for round_ in range(2):
            t = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                list(pool.map(lambda i, r=round_: bare_service(api, image, 1000 * (r + 1) + i), range(n)))
            floor_n = time.perf_counter() - t
            t = time.perf_counter()
            assert map_task(inc, concurrency=n)(x=list(range(n))) == [i + 1 for i in range(n)]
            task_n = time.perf_counter() - t
            print(f"{n} concurrent: floor {floor_n:.2f} s ({n / floor_n:.1f}/s), task {task_n:.2f} s "
                  f"({n / task_n:.1f}/s), ratio {task_n / floor_n:.2f}x")
        backend.close()
    finally:
        backends.set_default_backend(None)
        cluster_mod.stop(network, containers)


if __name__ == "__main__":
    main()
