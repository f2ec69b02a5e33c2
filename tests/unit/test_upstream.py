"""Futures as inputs (contract: "Composing tasks"), with a backend that runs calls in-process (no engine):
what waits, what fails and how, and the edge the record keeps."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from dockertask import TaskInputError, map_task, task
from dockertask.runs import record, store, views

from ..fakes import InProcessBackend


@task
def double(x: int) -> int:
    if x < 0:
        raise ValueError(f"cannot double {x}")
    return 2 * x


@task
def total(parts: list[int], bonus: int = 0) -> int:
    return sum(parts) + bonus


def test_a_future_is_an_input_to_a_call_a_submit_and_a_map(inproc: InProcessBackend) -> None:
    """The result of the upstream call is what the dependent call receives, whichever way it is made."""
    a, b = double.submit(1), double.submit(2)
    assert double(a) == 4
    assert double.submit(x=b).result() == 8
    assert total([a, b, 10]) == 16  # a list holding futures
    assert total.submit(parts=[a, b], bonus=a).result() == 8  # by keyword
    assert map_task(double)(x=[a, b, 3]) == [4, 8, 6]
    assert map_task(partial(total, bonus=a))(parts=[[1], [2]]) == [3, 4]  # a fixed input


def test_a_map_over_a_future_list_waits_for_it(inproc: InProcessBackend) -> None:
    @task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    assert map_task(double)(x=numbers.submit(4)) == [0, 2, 4, 6]


def test_submitting_with_a_future_does_not_wait_for_it(inproc: InProcessBackend) -> None:
    """The dependent submit returns at once; its call waits for the upstream one in the pool's thread."""
    inproc.delay = lambda args, kwargs: 0.5 if kwargs.get("x") == 1 else 0
    started = time.monotonic()
    upstream = double.submit(1)
    dependent = double.submit(upstream)
    assert time.monotonic() - started < 0.3
    assert dependent.result(timeout=30) == 4


def test_an_upstream_failure_fails_the_dependent_call_naming_the_upstream_call(inproc: InProcessBackend) -> None:
    """TaskInputError naming the parameter, the upstream call and its error; the dependent call never runs."""
    bad = double.submit(-1)
    with pytest.raises(TaskInputError, match=r"task .*double: parameter 'x' is the result of call double#\d+ "
                                             r".*which failed: ValueError: cannot double -1") as caught:
        double(bad)
    assert isinstance(caught.value.__cause__, ValueError)
    runs = len(inproc.jobs)
    with pytest.raises(TaskInputError, match=r"parameter 'parts\[1\]' is the result of call double#\d+"):
        total.submit([double.submit(1), bad]).result()
    with pytest.raises(TaskInputError, match=r"map of task .*double: .*parameter 'x\[0\]' .*which failed"):
        map_task(double)(x=[bad])
    assert len(inproc.jobs) == runs + 1  # the good upstream ran; no dependent did


def test_a_future_holding_the_wrong_type_fails_the_dependent_call_as_bad_input(inproc: InProcessBackend) -> None:
    """The value a future brings is checked against the parameter as any value is."""
    @task
    def word() -> str:
        return "seven"

    with pytest.raises(TaskInputError, match=r"parameter 'x' expected int, got str 'seven'"):
        double.submit(word.submit()).result()


def test_a_wrong_number_of_inputs_with_a_future_is_refused_at_submit(inproc: InProcessBackend) -> None:
    with pytest.raises(TaskInputError, match=r"unknown parameter 'y'"):
        double.submit(x=double.submit(1), y=2)


def test_the_record_keeps_each_edge(inproc: InProcessBackend, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A dependent call's record names the calls whose results its inputs were; a map's record does too."""
    monkeypatch.setenv(store.DB_ENV, str(tmp_path / "runs.db"))
    monkeypatch.setattr(store, "WRITER", store.Writer())
    monkeypatch.setattr(record, "_default", None)
    a, b = double.submit(1), double.submit(2)
    total([a, b])
    map_task(double)(x=[a])
    store.WRITER.flush()
    with store.reading(tmp_path / "runs.db") as conn:
        [run] = views.runs(conn)
        calls = views.run(conn, run["id"])["calls"]
        by_inputs = {c["inputs"]: c for c in calls if c["map_index"] is None}
        ups = {by_inputs["x=1"]["call_id"], by_inputs["x=2"]["call_id"]}
        assert set(by_inputs["parts=[2, 4], bonus=0"]["upstream"]) == ups
        assert by_inputs["1 items"]["upstream"] == [by_inputs["x=1"]["call_id"]]
        assert by_inputs["x=1"]["upstream"] == []
        one = views.call(conn, by_inputs["parts=[2, 4], bonus=0"]["call_id"])
        assert set(one["upstream"]) == ups
        import json

        shown = json.loads(views.run_json(conn, run["id"]))
        assert any(set(c["upstream"]) == ups for c in shown["calls"])
