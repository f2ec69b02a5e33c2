"""Futures as inputs (contract: "Composing tasks").

    cleaned = clean.submit(raw)
    report(cleaned)                        # waits for clean's result, then runs report with it
    total(parts=[p.submit(x) for x in xs])  # a list of futures: each is waited for

A ``Future`` from ``t.submit(...)``, or a list or tuple holding some, passed where a value is expected is
waited for by the call that receives it: in the caller for ``t(...)`` and ``map_task``, in the submit
pool's thread for ``t.submit(...)`` (so submitting never blocks). An upstream failure fails the dependent
call with a ``TaskInputError`` naming the upstream call; the record keeps each edge (the upstream call
ids) on the dependent call.

No deadlock from the bounded pool: a future exists only once its call was submitted, so it is queued
ahead of (or runs before) any call that receives it, and the pool takes its queue in order.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dockertask.errors import TaskInputError

if TYPE_CHECKING:
    import concurrent.futures

    from dockertask.spec.interface import Interface

_ATTR = "_dockertask_call"


def failed_upstream(message: str, where: str, edges: list[str]) -> TaskInputError:
    """An input's upstream call failed (or was cancelled): the dependent call fails without running, with
    a TaskInputError carrying what the record keeps of it: the parameter, and the upstream calls waited
    for so far (``upstream`` on the error)."""
    error = TaskInputError(message)
    error.upstream = (where, edges)  # type: ignore[attr-defined]
    return error


def upstream_of(error: BaseException) -> tuple[str, list[str]] | None:
    found: tuple[str, list[str]] | None = getattr(error, "upstream", None)
    return found


class Handle:
    """What a submitted call's Future says about it: its label (``clean#2``) and, once its call is
    recorded, its call id."""

    __slots__ = ("call_id", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.call_id: str | None = None


def mark(future: concurrent.futures.Future[Any], handle: Handle) -> None:
    setattr(future, _ATTR, handle)


def _future_type() -> type[concurrent.futures.Future[Any]] | None:
    # No Future can exist before concurrent.futures is imported: a script that never submits does not
    # pay its import (~11 ms) to find out that it passed none.
    module = sys.modules.get("concurrent.futures")
    return module.Future if module is not None else None


def _holds(value: Any, future: type) -> bool:
    if isinstance(value, future):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, future) for v in value)


def present(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """Does a call's input hold a Future (itself, or in a list or tuple)?"""
    future = _future_type()
    if future is None:
        return False
    return any(_holds(v, future) for v in args) or any(_holds(v, future) for v in kwargs.values())


def describe(future: Any) -> str:
    handle = getattr(future, _ATTR, None)
    if handle is None:
        return "a Future"
    return f"call {handle.label}" + (f" ({handle.call_id})" if handle.call_id else "")


def resolve(interface: Interface, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], list[str]]:
    """The inputs with every Future replaced by its result (waiting for it), and the upstream call ids.
    A Future that failed or was cancelled: TaskInputError naming the parameter and the upstream call."""
    future = _future_type()
    assert future is not None  # present() said there is one
    try:
        bound = interface.signature.bind(*args, **kwargs)
    except TypeError:
        # A wrong number of inputs: names are unknown; the interface's own check says what is wrong
        # once the values are in.
        names = [f"input {i}" for i in range(len(args))]
        bound = None
    edges: list[str] = []

    def wait(where: str, value: Any) -> Any:
        return _wait(f"task {interface.task_name}", where, value, future, edges)

    if bound is None:
        return (tuple(wait(n, v) for n, v in zip(names, args, strict=True)),
                {k: wait(k, v) for k, v in kwargs.items()}, edges)
    for name, value in bound.arguments.items():
        kind = interface.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: wait(f"{name}[{k!r}]", v) for k, v in value.items()}
        else:
            bound.arguments[name] = wait(name, value)
    return tuple(bound.args), dict(bound.kwargs), edges


def resolve_named(who: str, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` (a map's mapped lists and fixed inputs, by name) with every Future replaced by its
    result, and the upstream call ids; ``who`` begins an error's message ("map of task t")."""
    future = _future_type()
    edges: list[str] = []
    if future is None:
        return values, edges
    return {name: _wait(who, name, value, future, edges) for name, value in values.items()}, edges


def _wait(who: str, where: str, value: Any, future: type[Any], edges: list[str]) -> Any:
    if isinstance(value, future):
        return _result(who, where, value, edges)
    if isinstance(value, (list, tuple)) and any(isinstance(v, future) for v in value):
        done = [_result(who, f"{where}[{i}]", v, edges) if isinstance(v, future) else v
                for i, v in enumerate(value)]
        return done if isinstance(value, list) else tuple(done)
    return value


def _result(who: str, where: str, future: concurrent.futures.Future[Any], edges: list[str]) -> Any:
    import concurrent.futures

    try:
        value = future.result()
    except concurrent.futures.CancelledError:
        raise failed_upstream(f"{who}: parameter {where!r} is the result of {describe(future)}, "
                              "which was cancelled before it ran", where, edges) from None
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise failed_upstream(f"{who}: parameter {where!r} is the result of {describe(future)}, "
                              f"which failed: {type(exc).__name__}: {first}", where, edges) from exc
    finally:
        handle = getattr(future, _ATTR, None)
        if handle is not None and handle.call_id:
            edges.append(handle.call_id)
    return value
