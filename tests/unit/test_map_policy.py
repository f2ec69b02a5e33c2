"""map_task bookkeeping, progress and prefixes with a backend that runs calls in-process (no engine)."""

from __future__ import annotations

import io
import warnings
from functools import partial

import pytest

from dockertask import MapTaskError, TaskDefinitionError, TaskInputError, map_task, task
from dockertask.calls.progress import Progress

from ..fakes import InProcessBackend


@task
def square(x: int) -> int:
    return x * x


@task
def add(x: int, y: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x + y


def test_results_come_back_in_input_order_whatever_finishes_first(inproc: InProcessBackend) -> None:
    """Later items finishing first does not reorder the results."""
    inproc.delay = lambda args, kwargs: 0.05 * (5 - kwargs["x"]) if kwargs["x"] < 5 else 0
    assert map_task(square, concurrency=6)(x=list(range(10))) == [i * i for i in range(10)]


def test_fixed_inputs_come_from_functools_partial(inproc: InProcessBackend) -> None:
    """partial(task, y=10) fixes y for every item; a name both mapped and fixed is an error."""
    assert map_task(partial(add, y=10))(x=[1, 2, 3]) == [11, 12, 13]
    with pytest.raises(TaskInputError, match=r"\['y'\] are both mapped and fixed"):
        map_task(partial(add, y=10))(x=[1], y=[2])


def test_every_item_is_checked_before_any_container_starts(inproc: InProcessBackend) -> None:
    """A wrong item (here index 3) is a TaskInputError naming its index, and nothing has run."""
    with pytest.raises(TaskInputError, match=r"item 3: .*parameter 'x' expected int, got str"):
        map_task(square)(x=[1, 2, 3, "four", 5])
    assert inproc.jobs == []


@pytest.mark.parametrize("call, match", [
    (lambda m: m(x=[1, 2], y=[1]), r"equal length, got x: 2, y: 1"),
    (lambda m: m([1, 2]), "pass each mapped input by name"),
    (lambda m: m(x="123", y=[1, 2, 3]), "must be a list"),
    (lambda m: m(), "no mapped input"),
])
def test_malformed_maps_are_task_input_errors(inproc: InProcessBackend, call: object, match: str) -> None:
    """Lists of different lengths, positional or non-list inputs: TaskInputError, nothing run."""
    with pytest.raises(TaskInputError, match=match):
        call(map_task(add))  # type: ignore[operator]
    assert inproc.jobs == []


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"concurrency": 1.5}, {"min_success_ratio": 1.5},
                                    {"min_success_ratio": -0.1}])
def test_bad_map_settings_are_refused_when_made(kwargs: dict[str, object]) -> None:
    """concurrency < 1 or a ratio outside [0, 1] fails when the map is made."""
    with pytest.raises(TaskDefinitionError):
        map_task(square, **kwargs)  # type: ignore[arg-type]


def test_a_failing_item_runs_the_others_and_fails_the_map_with_every_failure(inproc: InProcessBackend) -> None:
    """With min_success_ratio=1, failures raise MapTaskError after every item ran, with .failures by index."""
    with pytest.raises(MapTaskError) as info:
        map_task(partial(add, y=1))(x=[1, -2, 3, -4, 5])
    assert len(inproc.jobs) == 5
    assert sorted(info.value.failures) == [1, 3]
    assert isinstance(info.value.failures[1], ValueError) and str(info.value.failures[3]) == "negative: -4"
    assert info.value.results == [2, None, 4, None, 6]
    assert "2 of 5 items failed" in str(info.value) and "item 1: ValueError: negative: -2" in str(info.value)


def test_min_success_ratio_returns_none_slots_or_raises_below_it(inproc: InProcessBackend) -> None:
    """At or above the ratio failed slots are None; below it, MapTaskError with the partial results."""
    assert map_task(partial(add, y=1), min_success_ratio=0.6)(x=[1, -2, 3, -4, 5]) == [2, None, 4, None, 6]
    with pytest.raises(MapTaskError, match="needs 4") as info:
        map_task(partial(add, y=1), min_success_ratio=0.8)(x=[1, -2, 3, -4, 5])
    assert info.value.results == [2, None, 4, None, 6]


def test_concurrency_bounds_how_many_run_at_once(inproc: InProcessBackend) -> None:
    """No more than `concurrency` items run at the same time."""
    inproc.delay = lambda args, kwargs: 0.05
    map_task(square, concurrency=3)(x=list(range(12)))
    assert inproc.max_running == 3


@task(retries=1)
def flaky_once(x: int) -> int:
    from dockertask import current_context

    if x == 2 and current_context().attempt == 1:
        raise RuntimeError("transient")
    return x


def test_each_item_has_its_own_retries(inproc: InProcessBackend) -> None:
    """An item that fails once is retried on its own; the others run once."""
    assert map_task(flaky_once)(x=[1, 2, 3]) == [1, 2, 3]
    assert len(inproc.jobs) == 4


@task(cache=True)
def cached_square(x: int) -> int:
    return x * x


def test_cached_items_start_nothing(inproc: InProcessBackend) -> None:
    """Items already in the cache are hits: a second map runs only the new items."""
    assert map_task(cached_square)(x=[1, 2, 3]) == [1, 4, 9]
    assert map_task(cached_square)(x=[1, 2, 3, 4]) == [1, 4, 9, 16]
    assert len(inproc.jobs) == 4


@task
def talks(x: int, say: str) -> int:
    return x


def test_concurrent_output_is_prefixed_and_a_single_call_is_not(inproc: InProcessBackend,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Map items' lines say `[task[i]]`, submits' `[task#n]`; a plain call's lines are bare."""
    map_task(partial(talks, say="hi"))(x=[0, 1])
    talks.submit(5, say="from submit").result()
    talks(7, say="plain")
    out = capsys.readouterr().out.splitlines()
    assert sorted(out[:2]) == ["[talks[0]] hi", "[talks[1]] hi"]
    assert out[2].startswith("[talks#") and out[2].endswith("] from submit")
    assert out[3] == "plain"


def test_off_a_terminal_progress_is_summary_lines_on_stderr_only(inproc: InProcessBackend,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal: a final summary line on stderr, nothing on stdout; DOCKERTASK_PROGRESS=0 silences it."""
    map_task(square)(x=[1, 2, 3])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().startswith("square: 3/3 done, 0 failed, 0 running")


def test_progress_can_be_turned_off(inproc: InProcessBackend, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKERTASK_PROGRESS=0: no progress output at all."""
    monkeypatch.setenv("DOCKERTASK_PROGRESS", "0")
    map_task(square)(x=[1, 2, 3])
    assert capsys.readouterr().err == ""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_bar_shows_done_failed_and_running() -> None:
    """On a terminal the bar counts done/total with failed and running beside it (tqdm)."""
    term = FakeTerminal()
    shown = Progress("square", 4, stream=term)
    for ok in (True, True, False, True):
        shown.started()
        shown.finished(ok)
    shown.close()
    text = term.getvalue()
    assert "square" in text and "4/4" in text and "failed=1" in text and "running=0" in text


def test_summary_lines_come_at_most_every_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal, a long map writes a summary now and then, not a line per item."""
    from dockertask.calls import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    shown = Progress("square", 100, stream=out)
    for _ in range(100):
        clock[0] += 0.5
        shown.started()
        shown.finished(True)
    shown.close()
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 12, lines  # every 5 s over 50 s, and the final one
    assert lines[-1].startswith("square: 100/100 done")


@task(deprecated="use square")
def old_square(x: int) -> int:
    return x * x


def test_a_deprecated_task_warns_once_per_map(inproc: InProcessBackend) -> None:
    """The FutureWarning comes once for the map, not once per item."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        map_task(old_square)(x=[1, 2, 3])
    assert [str(w.message) for w in caught if w.category is FutureWarning] == [
        "Task tests.unit.test_map_policy.old_square is deprecated: use square"]


def test_a_caught_ctrl_c_does_not_stop_later_calls(inproc: InProcessBackend) -> None:
    """After an interrupt the program caught (a notebook's stop button), new calls, submits and maps run."""
    from dockertask.host import lifecycle

    lifecycle.note_interrupt()
    assert square(3) == 9
    assert square.submit(4).result() == 16
    assert map_task(square)(x=[1, 2]) == [1, 4]


def test_work_queued_before_an_interrupt_never_starts(inproc: InProcessBackend) -> None:
    """Ctrl-C while the first item runs: the queued items of that map are not started, and say why."""
    from dockertask.host import lifecycle

    def interrupt_during_first(args: tuple[object, ...], named: dict[str, object]) -> float:
        if named["x"] == 0:
            lifecycle.note_interrupt()
        return 0.0

    inproc.delay = interrupt_during_first
    with pytest.raises(MapTaskError) as info:
        map_task(square, concurrency=1)(x=[0, 1, 2, 3])
    assert len(inproc.jobs) == 1
    assert sorted(info.value.failures) == [1, 2, 3]
    assert all("was not started: the host is shutting down" in str(e) for e in info.value.failures.values())
