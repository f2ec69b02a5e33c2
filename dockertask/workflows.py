"""flytekit's ``@workflow`` and ``@dynamic`` for code being ported (contract: "Composing tasks").

    from dockertask import task, workflow        # was: from flytekit import task, workflow

    @workflow
    def simple_wf(x: list[int], y: list[int]) -> float:
        slope_value = slope(x=x, y=y)             # a real value: the task ran, in its container
        return intercept(x=x, y=y, slope=slope_value)

In flytekit a workflow's body is compiled into a graph of promises; here tasks return real values, so the
body simply runs as Python on the host, inside a ``Run`` named after the workflow (its calls are one run in
the record; a workflow called inside another run is a group of it). ``@dynamic`` is the same: its body,
which flytekit runs at execution time to make a workflow, runs here when it is called.

What cannot mean the same here is refused by name, with what to write instead: ``conditional()`` (an
``if`` in the body), ``>>`` between tasks or nodes (calls run in the order written), ``create_node``,
launch plans, reference tasks and imperative ``Workflow(...)`` objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from dockertask.errors import TaskDefinitionError

P = ParamSpec("P")
R = TypeVar("R")


class WorkflowFunction(Generic[P, R]):
    """A flytekit workflow (or dynamic) body: calling it runs the body, its tasks in containers, as one run."""

    def __init__(self, function: Callable[P, R], kind: str) -> None:
        from dockertask.spec.interface import Interface

        if not callable(function):
            raise TaskDefinitionError(f"@{kind} expects a function, got {function!r}")
        self.function = function
        self.kind = kind
        self.name = f"{function.__module__}.{function.__qualname__}"
        self.interface = Interface.from_function(function, self.name)
        self.refused = _flytekit_only(function)  # found now, refused when called: the module still imports
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<dockertask.{self.kind} {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body: its inputs checked as a task's are, its calls recorded as one run named after it."""
        from dockertask.runs.record import Run

        if self.refused is not None:  # before any task runs: half a workflow is worse than none
            raise TaskDefinitionError(f"{self.kind} {self.name}: {self.refused}")
        bound = self.interface.bind(args, kwargs)
        with Run(self.name.rsplit(".", 1)[-1]):
            value = self.function(*bound.args, **bound.kwargs)
        checked: R = self.interface.check_output(value)
        return checked

    def __rshift__(self, other: Any) -> Any:
        raise _ordering()

    def __rrshift__(self, other: Any) -> Any:
        raise _ordering()


_CONSTRUCTS = {"conditional": "conditional() builds a branch of a flytekit graph; write it as Python (`if ...:`)",
               "create_node": "create_node() makes a node to order with `>>`; call the task instead",
               "LaunchPlan": "a LaunchPlan runs a workflow on a Flyte cluster; call the workflow itself",
               "reference_task": "a reference task is registered on a Flyte cluster; import its code and call it",
               "reference_workflow": "a reference workflow is registered on a Flyte cluster; import its code"}


def _flytekit_only(function: Callable[..., Any]) -> str | None:
    """The first construct in ``function``'s body that cannot mean here what it means in flytekit (with its
    line), or None. `>>` between results would silently be a bit shift of two values (or a TypeError on
    None) and the order it asked for would not hold: it is found in the source, not waited for."""
    import ast
    import inspect
    import textwrap

    try:
        source = textwrap.dedent(inspect.getsource(function))
        first = inspect.getsourcelines(function)[1]
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        line = first + getattr(node, "lineno", 1) - 1
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            return (f"`>>` (line {line}) orders nodes of a flytekit graph; here tasks run when they are called, in "
                    "the order the body calls them: call them in the order `>>` asked for, and remove it")
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name in _CONSTRUCTS:
            return f"{_CONSTRUCTS[name]} (line {line})"
    return None


def _ordering() -> TaskDefinitionError:
    return TaskDefinitionError("`>>` orders nodes of a flytekit graph; here tasks run when they are called, in the "
                               "order the body calls them: remove the `>>` (call the first task before the second)")


_WORKFLOW_OPTIONS = ("failure_policy", "interruptible", "on_failure", "docs", "pickle_untyped", "default_options")


@overload
def workflow(_workflow_function: Callable[P, R]) -> WorkflowFunction[P, R]: ...


@overload
def workflow(_workflow_function: None = None, **options: Any) -> Callable[[Callable[P, R]], WorkflowFunction[P, R]]:
    ...


def workflow(_workflow_function: Callable[P, R] | None = None,
             **options: Any) -> WorkflowFunction[P, R] | Callable[[Callable[P, R]], WorkflowFunction[P, R]]:
    """flytekit's ``@workflow``: the body runs as plain Python in a ``Run`` named after it. flytekit's options
    (``failure_policy``, ``interruptible``, ``on_failure``, ``docs``, ``pickle_untyped``,
    ``default_options``) are accepted and have no effect here: the tasks' own settings decide."""
    unknown = sorted(set(options) - set(_WORKFLOW_OPTIONS))
    if unknown:
        raise TaskDefinitionError(f"@workflow: unknown option {unknown[0]!r}; flytekit's are: "
                                  f"{', '.join(_WORKFLOW_OPTIONS)}")
    if options.get("on_failure") is not None:
        raise TaskDefinitionError("@workflow(on_failure=...): a failure here is the workflow's exception; catch it "
                                  "around the call (try/except) to run the clean-up task")

    def decorate(function: Callable[P, R]) -> WorkflowFunction[P, R]:
        return WorkflowFunction(function, "workflow")

    return decorate(_workflow_function) if _workflow_function is not None else decorate


@overload
def dynamic(_task_function: Callable[P, R]) -> WorkflowFunction[P, R]: ...


@overload
def dynamic(_task_function: None = None, **settings: Any) -> Callable[[Callable[P, R]], WorkflowFunction[P, R]]:
    ...


def dynamic(_task_function: Callable[P, R] | None = None,
            **settings: Any) -> WorkflowFunction[P, R] | Callable[[Callable[P, R]], WorkflowFunction[P, R]]:
    """flytekit's ``@dynamic``: the body (which flytekit runs at execution time to make a workflow) runs when
    it is called, on the host, as a workflow's does; its tasks run in their containers. The task keywords
    flytekit takes here (``container_image``, ``requests``...) would describe the container flytekit runs
    the body in: they are checked by name and have no effect."""
    from dockertask.defaults import checked

    checked(settings, "@dynamic")

    def decorate(function: Callable[P, R]) -> WorkflowFunction[P, R]:
        return WorkflowFunction(function, "dynamic")

    return decorate(_task_function) if _task_function is not None else decorate


def conditional(name: str, *args: Any, **kwargs: Any) -> Any:
    """flytekit's ``conditional()``: refused, since tasks return real values here."""
    raise TaskDefinitionError(f"conditional({name!r}) builds a branch of a flytekit graph; here tasks return real "
                              "values, so write it as Python: `if value > 0.5: ... else: ...`")


def create_node(entity: Any, *args: Any, **kwargs: Any) -> Any:
    raise TaskDefinitionError(f"create_node({getattr(entity, '__name__', entity)!r}) makes a node of a flytekit "
                              "graph to order with `>>`; here call the task: it runs when it is called")


def reference_task(*args: Any, **kwargs: Any) -> Any:
    raise TaskDefinitionError("reference_task names a task registered on a Flyte cluster; dockertask has no "
                              "cluster to look it up on: import the task's code and call it")


def reference_workflow(*args: Any, **kwargs: Any) -> Any:
    raise TaskDefinitionError("reference_workflow names a workflow registered on a Flyte cluster; dockertask has "
                              "no cluster to look it up on: import the workflow's code and call it")


class _Refused:
    """A flytekit construct with no meaning without a Flyte cluster: every use is a TaskDefinitionError."""

    what = ""
    instead = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TaskDefinitionError(f"{self.what}: {self.instead}")

    @classmethod
    def refuse(cls, *args: Any, **kwargs: Any) -> Any:
        raise TaskDefinitionError(f"{cls.what}: {cls.instead}")


class LaunchPlan(_Refused):
    """flytekit's launch plans schedule and parametrize workflows on a cluster."""

    what = "LaunchPlan (a workflow's launch plan on a Flyte cluster)"
    instead = ("call the workflow with the inputs the plan would give it (default inputs: functools.partial); "
               "schedules belong to cron or CI here")

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.refuse()

    @classmethod
    def get_or_create(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.refuse()

    @classmethod
    def get_default_launch_plan(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.refuse()


class Workflow(_Refused):
    """flytekit's imperative workflow builder."""

    what = "Workflow(...) (flytekit's imperative workflow builder)"
    instead = "write the workflow as a function decorated with @dockertask.workflow that calls its tasks in order"
