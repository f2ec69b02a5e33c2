"""flytekit's @workflow and @dynamic (contract: "Composing tasks") with a backend that runs calls in-process:
the body runs as Python in a Run named after it; what cannot mean the same is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from dockertask import TaskDefinitionError, conditional, dynamic, task, workflow
from dockertask.runs import record, store, views

from ..fakes import InProcessBackend


class Slope(NamedTuple):
    slope: float


@task
def slope(x: list[int], y: list[int]) -> Slope:
    n = len(x)
    return (n * sum(a * b for a, b in zip(x, y, strict=True)) - sum(x) * sum(y)) / (  # type: ignore[return-value]
        n * sum(a * a for a in x) - sum(x) ** 2)


@workflow
def fit(x: list[int], y: list[int]) -> float:
    return slope(x=x, y=y).slope


@dynamic(container_image="ignored:1")
def fits(xs: list[list[int]]) -> list[float]:
    return [fit(x=x, y=[1, 2, 3]) for x in xs]


def test_a_one_field_named_tuple_output_may_be_returned_bare(inproc: InProcessBackend) -> None:
    """As in flytekit: the task returned a float; the caller gets Slope(slope=...)."""
    assert slope(x=[-3, 0, 3], y=[7, 4, -2]) == Slope(slope=-1.5)


def test_a_workflow_runs_its_body_as_one_run_named_after_it(inproc: InProcessBackend, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.DB_ENV, str(tmp_path / "runs.db"))
    monkeypatch.setattr(store, "WRITER", store.Writer())
    monkeypatch.setattr(record, "_default", None)
    assert fit(x=[-3, 0, 3], y=[7, 4, -2]) == -1.5
    assert fits(xs=[[1, 2, 3], [2, 4, 6]]) == [1.0, 0.5]  # a dynamic calling a workflow: groups of its run
    store.WRITER.flush()
    with store.reading(tmp_path / "runs.db") as conn:
        runs = views.runs(conn)
        assert sorted(r["name"] for r in runs) == ["fit", "fits"]
        [inner] = [r for r in runs if r["name"] == "fits"]
        assert {c["grp"] for c in views.run(conn, inner["id"])["calls"]} == {"fit"}


def test_bad_input_to_a_workflow_is_named_before_any_task_runs(inproc: InProcessBackend) -> None:
    with pytest.raises(TypeError, match=r"parameter 'x' expected list\[int\], got str"):
        fit(x="1, 2", y=[1])  # type: ignore[arg-type]
    assert inproc.jobs == []


def test_flytekit_only_constructs_are_refused_by_name(inproc: InProcessBackend) -> None:
    @workflow
    def ordered() -> None:
        a = slope(x=[1, 2], y=[1, 2])
        b = slope(x=[1, 2], y=[2, 4])
        a >> b  # type: ignore[operator]

    @workflow
    def branching(x: int) -> float:
        return conditional("big").if_(x > 1).then(slope(x=[1, 2], y=[1, 2]))  # type: ignore[no-any-return]

    with pytest.raises(TaskDefinitionError, match=r"`>>` \(line \d+\) orders nodes of a flytekit graph"):
        ordered()
    with pytest.raises(TaskDefinitionError, match=r"conditional\(\) builds a branch .* \(line \d+\)"):
        branching(x=3)
    assert inproc.jobs == []  # refused before anything ran
    with pytest.raises(TaskDefinitionError, match=r">> \.\.\.: `>>` orders"):
        slope >> fit  # type: ignore[operator]
    with pytest.raises(TaskDefinitionError, match=r"on_failure=.*try/except"):
        workflow(on_failure=lambda: None)
    with pytest.raises(TaskDefinitionError, match=r"unknown option 'retries'"):
        workflow(retries=2)
