"""``map_task``: one task over many inputs, as flytekit's ``map_task`` (contract: "Many tasks at once").

    squares = map_task(square, concurrency=8)(x=list(range(100)))   # a list, in input order
    sums = map_task(partial(add, y=10))(x=[1, 2, 3])                 # fixed inputs with partial

Every item is checked against the interface before anything starts (the error names the index).
Each item is one ordinary call of the task (its own container, retries, timeout, cache: a hit
starts nothing), at most ``concurrency`` at a time. A failing item does not stop the others;
``min_success_ratio`` decides whether the map fails (``MapTaskError`` with every failure by
index and the partial results) or returns ``None`` in the failed slots. Ctrl-C or SIGTERM
stops the whole map: nothing more starts, running containers are killed and removed.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dockertask.calls import progress, runner, upstream
from dockertask.errors import DockerTaskError, MapTaskError, TaskDefinitionError, TaskInputError
from dockertask.host import lifecycle
from dockertask.runs import record
from dockertask.tasks import Task, max_parallel

R = TypeVar("R")


class MapTask:
    """The callable ``map_task`` returns: ``mapped(**{param: [values...]})`` → a list of results."""

    def __init__(self, target: Task[Any, Any] | functools.partial[Any], concurrency: int | None = None,
                 min_success_ratio: float = 1.0, return_exceptions: bool = False) -> None:
        task, fixed_args, fixed_kwargs = _unwrap(target)
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):
            raise TaskDefinitionError(f"map_task(concurrency={concurrency!r}): expected a whole number >= 1, "
                                      "or None for DOCKERTASK_MAX_PARALLEL")
        if (isinstance(min_success_ratio, bool) or not isinstance(min_success_ratio, (int, float))
                or not 0 <= min_success_ratio <= 1):
            raise TaskDefinitionError(f"map_task(min_success_ratio={min_success_ratio!r}): expected a number "
                                      "from 0 to 1")
        self.task = task
        self.fixed_args = fixed_args
        self.fixed_kwargs = fixed_kwargs
        self.concurrency = concurrency
        self.min_success_ratio = float(min_success_ratio)
        if not isinstance(return_exceptions, bool):
            raise TaskDefinitionError(f"map_task(return_exceptions={return_exceptions!r}): expected True or False")
        self.return_exceptions = return_exceptions
        self.name = task.spec.name.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<dockertask map_task of {self.task.spec.name}>"

    def __call__(self, *args: Any, **mapped: Sequence[Any]) -> list[Any]:
        if args:
            raise TaskInputError(f"map of task {self.task.spec.name}: pass each mapped input by name, as a list "
                                 f"(e.g. x=[1, 2, 3]); fixed inputs go in functools.partial(task, ...)")
        edges: list[str] = []
        fixed = dict(enumerate(self.fixed_args))
        if upstream.present(self.fixed_args, {**self.fixed_kwargs, **mapped}):  # futures: waited for here
            named, edges = upstream.resolve_named(f"map of task {self.task.spec.name}", {
                **{f"input {i}": v for i, v in fixed.items()}, **self.fixed_kwargs, **mapped})
            fixed_args = tuple(named[f"input {i}"] for i in fixed)
            mapped = {k: named[k] for k in mapped}
            fixed_kwargs = {k: named[k] for k in self.fixed_kwargs}
        else:
            fixed_args, fixed_kwargs = self.fixed_args, self.fixed_kwargs
        items = self._items(mapped, fixed_args, fixed_kwargs)
        concurrency = self.concurrency or max_parallel()
        self.task.warn_if_deprecated(stacklevel=3)  # once for the map, not once per item
        lifecycle.install_signal_handlers()
        since = lifecycle.generation()
        rec = record.begin_map(self.task, len(items), edges)
        try:
            results = self._run(items, concurrency, since, rec.call_id if rec is not None else None)
        except BaseException as exc:
            if rec is not None:
                rec.failed(exc)
                if isinstance(exc, Exception):
                    exc.add_note(record.hint(rec))
            if isinstance(exc, KeyboardInterrupt):  # a few lines, not the frames of wherever it landed
                raise KeyboardInterrupt(f"map of task {self.task.spec.name}: stopped; no more items start, "
                                        "running containers were killed and removed") from None
            if isinstance(exc, DockerTaskError):  # MapTaskError: the user's line, not this module's frames
                raise exc.with_traceback(None)  # noqa: B904 - its failures are in .failures
            raise
        if rec is not None:
            rec.succeeded(f"{len(items)} items")
        return results

    def _run(self, items: list[tuple[tuple[Any, ...], dict[str, Any]]], concurrency: int, since: int,
             parent: str | None) -> list[Any]:
        results: list[Any] = [None] * len(items)
        failures: dict[int, BaseException] = {}
        shown = progress.Progress(self.name, len(items))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(concurrency, max(len(items), 1)),
                                                     thread_name_prefix=f"dockertask-map-{self.name}")
        futures: dict[concurrent.futures.Future[Any], int] = {}
        try:
            for i, (item_args, item_kwargs) in enumerate(items):
                # Each item in a copy of this thread's context: the group it was made in labels it.
                futures[pool.submit(contextvars.copy_context().run, self._one, shown, i, item_args, item_kwargs,
                                    since, parent)] = i
            pending = set(futures)
            while pending:  # short waits: Ctrl-C / SIGTERM reach this thread between them
                done, pending = concurrent.futures.wait(pending, timeout=0.25)
                for future in done:
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - every item's failure is kept, whatever it is
                        failures[i] = exc
                        if not lifecycle.interrupted(since):  # each failure, as it happens, in one line
                            shown.note(f"[{self.name}[{i}]] failed: {type(exc).__name__}: "
                                       f"{runner._first_line(exc)[:300]}")
        except BaseException:
            # Interrupted: nothing more starts (queued items are cancelled; a started one sees the
            # interrupted flag), and the signal handler has already killed what runs.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            shown.close()
        pool.shutdown(wait=True)
        return self._outcome(results, failures)

    def _items(self, mapped: dict[str, Sequence[Any]], fixed_args: tuple[Any, ...],
               fixed_kwargs: dict[str, Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        name = self.task.spec.name
        if not mapped:
            raise TaskInputError(f"map of task {name}: no mapped input; pass lists by name, e.g. x=[1, 2, 3]")
        for key, values in mapped.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise TaskInputError(f"map of task {name}: mapped input {key!r} must be a list of values, "
                                     f"got {type(values).__qualname__}")
        lengths = {key: len(values) for key, values in mapped.items()}
        if len(set(lengths.values())) > 1:
            raise TaskInputError(f"map of task {name}: mapped inputs must be lists of equal length, got "
                                 + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
        clash = sorted(set(mapped) & set(fixed_kwargs))
        if clash:
            raise TaskInputError(f"map of task {name}: {clash} are both mapped and fixed by functools.partial")
        count = next(iter(lengths.values()))
        items = []
        for i in range(count):
            kwargs = {**fixed_kwargs, **{key: values[i] for key, values in mapped.items()}}
            try:  # every item is checked before anything starts
                self.task.interface.bind(fixed_args, kwargs)
            except TaskInputError as exc:
                raise TaskInputError(f"map of task {name}, item {i}: {exc}") from None
            items.append((fixed_args, kwargs))
        return items

    def _one(self, shown: progress.Progress, i: int, args: tuple[Any, ...], kwargs: dict[str, Any],
             since: int, parent: str | None) -> Any:
        if lifecycle.interrupted(since):
            raise runner._not_started(self.task.spec.name)
        shown.started()
        ok = False
        try:
            value = runner.call(self.task, args, kwargs, warn=False, output=progress.prefixed(f"{self.name}[{i}]"),
                                since=since, parent=parent, index=i)
            ok = True
            return value
        finally:
            shown.finished(ok)

    def _outcome(self, results: list[Any], failures: dict[int, BaseException]) -> list[Any]:
        total = len(results)
        succeeded = total - len(failures)
        needed = math.ceil(self.min_success_ratio * total - 1e-9)  # at 1.0: every item
        if succeeded >= needed:
            if self.return_exceptions:
                for i, exc in failures.items():
                    results[i] = exc
            return results
        shown = "; ".join(f"item {i}: {type(e).__name__}: {runner._first_line(e)[:200]}"
                          for i, e in sorted(failures.items())[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise MapTaskError(
            f"map of task {self.task.spec.name}: {len(failures)} of {total} items failed, {succeeded} succeeded "
            f"(min_success_ratio={self.min_success_ratio:g} needs {needed}): {shown}{more}",
            failures=dict(sorted(failures.items())), results=results)


def _unwrap(target: Any) -> tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]]:
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    while isinstance(target, functools.partial):
        args = tuple(target.args) + args
        kwargs = {**target.keywords, **kwargs}
        target = target.func
    if not isinstance(target, Task):
        raise TaskDefinitionError(f"map_task({target!r}): expected a @task (or functools.partial of one)")
    return target, args, kwargs


def map_task(target: Task[Any, R] | functools.partial[R], concurrency: int | None = None,
             min_success_ratio: float = 1.0, return_exceptions: bool = False) -> Callable[..., list[R]]:
    """flytekit's ``map_task``: the returned callable takes a list per mapped input and returns the
    results in input order; ``return_exceptions=True`` puts a failed item's exception in its slot (else
    ``None``, with ``min_success_ratio < 1``). See the module docstring."""
    return MapTask(target, concurrency=concurrency, min_success_ratio=min_success_ratio,
                   return_exceptions=return_exceptions)

