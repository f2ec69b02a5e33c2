"""async tasks (contract: "Composing tasks") with a backend that runs calls in-process (no engine): a call
is an awaitable, awaiting it does not block the loop, gather runs them at once, bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from dockertask import TaskInputError, map_task, task

from ..fakes import InProcessBackend


@task
async def fetch(x: int) -> int:
    await asyncio.sleep(0)
    if x < 0:
        raise ValueError(f"no page {x}")
    return x * 10


def test_calling_an_async_task_returns_an_awaitable_that_runs_it(inproc: InProcessBackend) -> None:
    pending = fetch(2)
    assert inproc.jobs == []  # nothing runs until it is awaited
    assert asyncio.run(pending) == 20
    assert len(inproc.jobs) == 1


def test_gather_runs_calls_at_once_without_blocking_the_loop(inproc: InProcessBackend,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Four calls of 0.4 s each, gathered: together in ~0.4 s; the loop's own ticker keeps ticking."""
    inproc.delay = lambda args, kwargs: 0.4

    async def main() -> tuple[list[int], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        beat = asyncio.create_task(ticker())
        results = await asyncio.gather(*(fetch(i) for i in range(4)))
        beat.cancel()
        return list(results), ticks

    started = time.monotonic()
    results, ticks = asyncio.run(main())
    assert results == [0, 10, 20, 30]
    assert time.monotonic() - started < 1.2 and inproc.max_running == 4
    assert ticks >= 10  # the loop went on while the calls ran


def test_gathered_calls_are_bounded_by_max_parallel(inproc: InProcessBackend,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from dockertask import tasks

    monkeypatch.setenv("DOCKERTASK_MAX_PARALLEL", "2")
    monkeypatch.setattr(tasks, "_executor", None)  # the pool is made at its size on first use
    inproc.delay = lambda args, kwargs: 0.1

    async def main() -> list[int]:
        return list(await asyncio.gather(*(fetch(i) for i in range(6))))

    try:
        assert asyncio.run(main()) == [i * 10 for i in range(6)]
        assert inproc.max_running == 2
    finally:
        monkeypatch.setattr(tasks, "_executor", None)


def test_an_async_task_s_error_and_bad_input_are_raised_by_the_await(inproc: InProcessBackend) -> None:
    with pytest.raises(ValueError, match="no page -1"):
        asyncio.run(fetch(-1))
    with pytest.raises(TaskInputError, match=r"parameter 'x' expected int, got str"):
        asyncio.run(fetch("one"))  # type: ignore[arg-type]


def test_an_async_task_maps_and_submits_as_a_plain_one(inproc: InProcessBackend) -> None:
    assert map_task(fetch)(x=[1, 2]) == [10, 20]
    assert fetch.submit(3).result() == 30
    assert fetch.local(4) == 40
