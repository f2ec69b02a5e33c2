"""The policy of containers made ahead for isolated calls (spares.py), with a backend that only records."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dockertask import Resources, task
from dockertask.calls import spares

from ..fakes import SpareBackend


@task
def plain(x: int) -> int:
    return x


@task(limits=Resources(mem="300Mi"))
def bigger(x: int) -> int:
    return x


def _wait_for_spares(count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while spares.SPARES.idle_count() < count:
        assert time.monotonic() < deadline, f"{spares.SPARES.idle_count()} spare(s) made, expected {count}"
        time.sleep(0.01)


def _run_ids(backend: SpareBackend) -> list[str]:
    return [job.labels["dockertask.run-id"] for job, _ in backend.ran]


def test_the_second_call_orders_a_spare_and_the_third_runs_in_it(spare_backend: SpareBackend) -> None:
    """A configuration called once gets nothing made ahead (a one-call script must not pay for one); from
    the second call on, the next call finds its container created, and takes its run id."""
    plain(x=1)
    time.sleep(0.05)
    assert spare_backend.prepared == []
    plain(x=2)
    _wait_for_spares(1)
    plain(x=3)
    job, prepared = spare_backend.ran[2]
    assert prepared is spare_backend.prepared[0]
    assert job.labels == prepared[1], "the call's labels are the ones its container was created with"
    assert [p for _, p in spare_backend.ran[:2]] == [None, None]


def test_a_spare_runs_one_call_only(spare_backend: SpareBackend) -> None:
    """Every prepared container is handed to at most one call, and every call has its own run id."""
    for i in range(12):
        plain(x=i)
        if i == 1:
            _wait_for_spares(1)
    used = [p for _, p in spare_backend.ran if p is not None]
    assert used, "the third call should have found a spare"
    assert len({id(p) for p in used}) == len(used)
    assert len(set(_run_ids(spare_backend))) == 12


def test_spares_are_only_claimed_by_the_same_configuration(spare_backend: SpareBackend) -> None:
    """A spare made for one configuration (here a memory limit) never runs a call of another."""
    plain(x=1)
    plain(x=2)
    _wait_for_spares(1)
    bigger(x=1)
    assert spare_backend.ran[-1][1] is None
    plain(x=3)
    assert spare_backend.ran[-1][1] is spare_backend.prepared[0]


def test_unclaimed_spares_are_removed_at_shutdown_and_none_is_made_after(spare_backend: SpareBackend) -> None:
    plain(x=1)
    plain(x=2)
    _wait_for_spares(1)
    spares.SPARES.shutdown()
    assert spare_backend.discarded == spare_backend.prepared
    plain(x=3)
    time.sleep(0.05)
    assert len(spare_backend.prepared) == 1 and spare_backend.ran[-1][1] is None


def test_idle_spares_expire(spare_backend: SpareBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spares, "IDLE_SECONDS", 0.2)
    plain(x=1)
    plain(x=2)
    _wait_for_spares(1)
    deadline = time.monotonic() + 5
    while spare_backend.discarded != spare_backend.prepared:
        assert time.monotonic() < deadline, "the idle spare was not removed"
        time.sleep(0.05)


def test_precreate_can_be_turned_off(spare_backend: SpareBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKERTASK_PRECREATE", "0")
    for i in range(4):
        plain(x=i)
    time.sleep(0.05)
    assert spare_backend.prepared == []


def test_a_failing_prepare_stops_further_attempts(spare_backend: SpareBackend,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that cannot create ahead (the call itself reports why) is not asked again and again."""
    attempts: list[Any] = []

    def refuse(job: Any) -> Any:
        attempts.append(job)
        raise RuntimeError("no")

    monkeypatch.setattr(spare_backend, "prepare", refuse)
    for i in range(6):
        plain(x=i)
    time.sleep(0.05)
    assert len(attempts) == 1
    assert all(p is None for _, p in spare_backend.ran)


def test_retries_and_reusable_tasks_never_take_a_spare(spare_backend: SpareBackend) -> None:
    """Only a first attempt can take a spare (a retry keeps its call's run id)."""
    from dockertask.backends.base import ContainerJob

    job = ContainerJob(image="i", command=["c"], stdin=__import__("dockertask").backends.base.StdinPieces(()),
                       labels={"dockertask.run-id": "a", "dockertask.attempt": "2"})
    assert spares.key_of(job) == spares.key_of(ContainerJob(
        image="i", command=["c"], stdin=job.stdin, labels={"dockertask.run-id": "b", "dockertask.attempt": "2"}))
    assert spares.key_of(job) != spares.key_of(ContainerJob(
        image="i", command=["c"], stdin=job.stdin, labels={"dockertask.run-id": "a", "dockertask.attempt": "1"}))


@task(retries=1)
def flaky_or_slow(mode: str) -> int:
    return 1


def test_a_retried_call_leaves_the_count_of_calls_in_flight_right(spare_backend: SpareBackend,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """While one call runs, another that is retried must not take it off the count of calls in flight
    (spares are ordered one per call in flight): only a call that claimed is counted out, once."""
    import threading

    from dockertask.backends.base import ContainerJob, OutputSink

    from ..fakes import crashed, ok

    release = threading.Event()
    attempts: list[str] = []
    inner = SpareBackend.run

    def run(self: SpareBackend, job: ContainerJob, on_output: OutputSink, prepared: Any = None) -> Any:
        inner(self, job, on_output, prepared)
        mode = "slow" if job.labels.get("dockertask.attempt") == "1" and not attempts.count("slow") else "flaky"
        attempts.append(mode)
        if mode == "slow":
            release.wait(10)
            return ok(1)
        return crashed(1) if attempts.count("flaky") == 1 else ok(1)

    monkeypatch.setattr(SpareBackend, "run", run)
    slow = threading.Thread(target=flaky_or_slow, args=("slow",))
    slow.start()
    while "slow" not in attempts:
        time.sleep(0.01)
    assert flaky_or_slow(mode="flaky") == 1  # its first attempt crashed, its retry succeeded
    counts = [n for n in spares.SPARES._in_flight.values() if n]
    release.set()
    slow.join(10)
    assert counts == [1], "the slow call, still running, is no longer counted in flight"
