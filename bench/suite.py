"""A real suite in an image (issue 18): `pytest --dockertask-image=REF` against a plain `docker run` of the
same suite in the same image, interleaved in one loop so drift hits all alike.

The suite is boltons 26.2.0's own (519 tests), from its sdist (pip download, cached in the temporary
directory of one run). The image for `docker run` is the suite image dockertask made (REF with the
checkout at its path and pytest under /opt/dockertask-pytest/site): the same files, so the ratio is
what dockertask adds. Each round times:

    docker run      docker run --rm -w ROOT -e PYTHONPATH=SITE SUITE python3 -m pytest -q tests
    session         pytest --dockertask-image=REF               (one worker container)
    session -n 2    pytest --dockertask-image=REF -n 2
    process         pytest --dockertask-image=REF --dockertask-isolation=process
    process -n 2    pytest --dockertask-image=REF --dockertask-isolation=process -n 2
    container       pytest --dockertask-image=REF --dockertask-isolation=container -n 2  (--container)
    floor           create/start/wait/remove of `python3 -c pass` (bench/overhead.py)

and prints each median and its ratio to `docker run` (the container mode: seconds per test, and that
over the floor).

usage: python bench/suite.py [--runs 3] [--container]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from overhead import floor_once  # the same floor as bench/overhead.py (this folder is on sys.path)

from dockertask.backends.discovery import api_client
from dockertask.images.refs import default_image_ref
from dockertask.pytest.checkout import ROOT_LABEL, SITE

SDIST = "boltons==26.2.0"
TESTS = 519


def _timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--container", action="store_true", help="also time container isolation (slow)")
    args = ap.parse_args()
    ref = default_image_ref()
    api = api_client()
    with tempfile.TemporaryDirectory(prefix="dockertask-bench-suite-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d",
                        tmp, SDIST], check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        root = Path(tmp) / "boltons-26.2.0"
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                  "tests", f"--dockertask-image={ref}"]
        _timed(pytest, root)  # makes the suite image (once per content), which `docker run` then uses
        (suite,) = [t for i in api.images(filters={"label": f"{ROOT_LABEL}={root.resolve()}"})
                    for t in i.get("RepoTags") or []]
        variants = {
            "docker run": ["docker", "run", "--rm", "-w", str(root.resolve()), "-e", f"PYTHONPATH={SITE}", suite,
                           "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                           "tests"],
            "session": pytest,
            "session -n 2": [*pytest, "-n", "2"],
            "process": [*pytest, "--dockertask-isolation=process"],
            "process -n 2": [*pytest, "--dockertask-isolation=process", "-n", "2"],
        }
        if args.container:
            variants["container -n 2"] = [*pytest, "--dockertask-isolation=container", "-n", "2"]
        times: dict[str, list[float]] = {name: [] for name in [*variants, "floor"]}
        for _ in range(args.runs):
            for name, cmd in variants.items():
                times[name].append(_timed(cmd, root))
            times["floor"].append(statistics.median(floor_once(api, ref) for _ in range(5)))
        try:
            api.remove_image(suite, force=True)
        except Exception:  # noqa: BLE001 - in use by a concurrent run: `dockertask images prune` takes it
            pass
    base = statistics.median(times["docker run"])
    floor = statistics.median(times["floor"])
    print(f"boltons {TESTS} tests, {args.runs} interleaved runs, medians (min-max):")
    for name, values in times.items():
        med = statistics.median(values)
        extra = f"{med / base:5.2f}x docker run" if name != "floor" else "bare container"
        print(f"  {name:16s} {med:7.2f} s  ({min(values):.2f}-{max(values):.2f})  {extra}")
    if "container -n 2" in times:
        per_test = statistics.median(times["container -n 2"]) / TESTS * 2
        print(f"  container isolation: {per_test:.3f} s a test per worker = {per_test / floor:.2f}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
