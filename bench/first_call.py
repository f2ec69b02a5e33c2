"""The first call in a fresh process, against a fresh process doing one bare SDK run, interleaved.

bare:  python -c: import docker, create → start → wait → remove ``python3 -c pass`` in the default image.
task:  python -c: import a module with a @task, call it once (imports, image check, runtime zip, run).

usage: python bench/first_call.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dockertask.backends import default_backend
from dockertask.images.refs import default_image_ref, ensure_image

HERE = Path(__file__).resolve().parent
BARE = """
import docker
api = docker.APIClient(version="auto", **docker.utils.kwargs_from_env())
c = api.create_container({image!r}, ["python3", "-c", "pass"])
api.start(c); api.wait(c); api.remove_container(c, force=True)
"""
# A user's script: the task defined where it is called, and nothing imported but dockertask (importing
# overhead.py would charge the task for the benchmark harness's argparse, cProfile and pstats).
TASK = """
from dockertask import task

@task
def inc(x: int) -> int:
    return x + 1

assert inc(x=1) == 2
"""
# As an installed package runs: pip byte-compiles at install, so bytecode is cached. (An environment
# with PYTHONDONTWRITEBYTECODE=1, as on the machine this was written on, would otherwise recompile
# every edited module of a development checkout in every fresh process: ~40 ms.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=HERE, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    image = default_image_ref()
    ensure_image(default_backend(), image)
    bare_code = BARE.format(image=image)
    once(bare_code), once(TASK)  # warm the page cache and pyc files
    bare, task = [], []
    for _ in range(args.runs):
        bare.append(once(bare_code))
        task.append(once(TASK))
    b, t = statistics.median(bare), statistics.median(task)
    print(f"fresh process, one bare SDK run: median {b * 1000:.0f} ms; fresh process, first task call: "
          f"median {t * 1000:.0f} ms; ratio {t / b:.2f}x ({args.runs} runs each, interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
