"""Composing tasks on a real engine (contract: "Composing tasks"): futures as inputs, shared defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .test_runs import _cli, _program, _run

PIPELINE = textwrap.dedent('''
    import time
    from dockertask import map_task, task

    @task
    def load(n: int) -> list[int]:
        time.sleep(1)
        return list(range(n))

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(parts: list[int]) -> int:
        return sum(parts)

    @task
    def broken() -> list[int]:
        raise ValueError("the source is gone")

    if __name__ == "__main__":
        numbers = load.submit(4)
        squares = [square.submit(x) for x in range(3)]
        started = time.monotonic()
        summed = total.submit(squares)
        print("submitted in", round(time.monotonic() - started, 2))
        print("total", summed.result())
        print("mapped", map_task(square)(x=numbers))
        try:
            total(broken.submit())
        except Exception as exc:
            print("error", type(exc).__name__, exc)
''')


def test_futures_are_inputs_and_the_record_keeps_the_edges(tmp_path: Path) -> None:
    """Futures from submit() go into a submit (which does not wait for them), a map (a future list) and a
    call; an upstream failure fails the dependent call naming the upstream call; `show --json` has the
    edges."""
    db = tmp_path / "runs.db"
    done = _run(db, _program(tmp_path, PIPELINE))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert float(lines["submitted"].split()[-1]) < 0.5
    assert lines["total"] == "5" and lines["mapped"] == "[0, 1, 4, 9]"
    assert lines["error"].startswith("TaskInputError task __main__.total: parameter 'parts' is the result of call "
                                     "broken#1 (") and "which failed: ValueError: the source is gone" in lines["error"]
    [run] = _cli(db, "runs", "--json")
    calls = _cli(db, "show", run["id"], "--json")["calls"]
    def one(name: str) -> dict[str, Any]:
        [found] = [c for c in calls if c["task"] == name]
        return found

    squares = {c["call_id"] for c in calls if c["task"] == "__main__.square" and c["map_index"] is None
               and c["parent"] is None}
    totals = [c for c in calls if c["task"] == "__main__.total"]
    assert len(squares) == 3 and {tuple(sorted(t["upstream"])) for t in totals} == {
        tuple(sorted(squares)), (one("__main__.broken")["call_id"],)}
    assert one("map_task(__main__.square)")["upstream"] == [one("__main__.load")["call_id"]]
    failed = next(t for t in totals if t["upstream"] == [one("__main__.broken")["call_id"]])
    assert failed["status"] == "failed" and failed["error_type"] == "TaskInputError" and not failed["attempts"]


SHARED = textwrap.dedent('''
    import os
    import dockertask
    from dockertask import Resources

    etl = dockertask.Environment(environment={"B": "environment"}, retries=1)

    @etl.task(environment={"C": "task"})
    def settings() -> tuple[str, str, str, int]:
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            if os.path.exists(path):
                limit = int(open(path).read())
                break
        return os.environ["A"], os.environ["B"], os.environ["C"], limit

    if __name__ == "__main__":
        print(settings())
        print(settings.override(limits=Resources(mem="128Mi"), environment={"A": "override"})())
''')


def test_project_defaults_an_environment_and_override_reach_the_container(tmp_path: Path) -> None:
    """[tool.dockertask.defaults] (a variable and a memory limit), an Environment's variable, the task's own
    and an override: what the task sees in its container."""
    (tmp_path / "pyproject.toml").write_text('[tool.dockertask.defaults]\nenvironment = { A = "project" }\n'
                                             'limits = { mem = "256Mi" }\n')
    done = _run(tmp_path / "runs.db", _program(tmp_path, SHARED))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == f"('project', 'environment', 'task', {256 << 20})"
    assert second == f"('override', 'environment', 'task', {128 << 20})"


ASYNC = textwrap.dedent('''
    import asyncio, time
    from dockertask import ReusePolicy, task

    @task(reusable=ReusePolicy(replicas=1))
    async def warm(x: int) -> int:
        await asyncio.sleep(0.1)
        return x + 1

    @task
    async def fetch(page: int) -> tuple[int, float, float]:
        start = time.time()
        await asyncio.sleep(1.5)
        if page == 99:
            raise LookupError("no page 99")
        return page, start, time.time()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        beat = asyncio.create_task(ticker())
        pages = await asyncio.gather(*(fetch(p) for p in range(3)))
        beat.cancel()
        print("pages", [p for p, _, _ in pages])
        print("overlap", max(s for _, s, _ in pages) < min(e for _, _, e in pages))
        print("ticks", ticks)
        try:
            await fetch(99)
        except LookupError as exc:
            print("error", exc)
        print("warm", await asyncio.gather(warm(1), warm(2)))

    asyncio.run(main())
''')


def test_async_tasks_run_in_containers_at_once_without_blocking_the_loop(tmp_path: Path) -> None:
    """Three awaited calls gathered: each ran in a container (asyncio.run there), all three at once by the
    containers' own clocks, while the caller's loop kept ticking; the task's exception comes out of await."""
    done = _run(tmp_path / "runs.db", _program(tmp_path, ASYNC))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["pages"] == "[0, 1, 2]" and lines["overlap"] == "True"
    assert int(lines["ticks"]) >= 20  # >= 1 s of 50 ms ticks while the calls ran
    assert lines["error"] == "no page 99"
    assert lines["warm"] == "[2, 3]"  # in a reused replica too
