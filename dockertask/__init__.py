"""dockertask: flytekit's ``@task``, where each call runs in its own Docker container.

Names are loaded on first use (PEP 562), so ``import dockertask`` costs almost nothing, on the
host and inside containers, and never touches Docker. No submodule may share an exported
name: importing ``dockertask.X`` binds the module as the package attribute ``X``, which would
shadow a lazily exported ``X`` (why the decorator lives in ``tasks.py``, not ``task.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "task": "tasks", "Task": "tasks", "TaskSpec": "tasks", "ExecutionBehavior": "tasks", "Environment": "tasks",
    "Resources": "spec.resources",
    "Secret": "spec.secrets",
    "ImageSpec": "images.imagespec",
    "current_context": "spec.context", "ExecutionContext": "spec.context",
    "Docker": "plugins",
    "File": "files", "Directory": "files",
    "map_task": "fanout", "MapTaskError": "errors", "ReusePolicy": "spec.reuse",
    "DockerTaskError": "errors", "TaskDefinitionError": "errors", "TaskInputError": "errors",
    "TaskOutputError": "errors",
    "TaskTimeoutError": "errors", "TaskOOMError": "errors", "TaskFailedError": "errors",
    "TaskInterruptedError": "errors", "PythonVersionError": "errors", "ImageResolutionError": "errors",
    "ImageNotFoundError": "errors", "ImageBuildError": "errors", "SecretNotFoundError": "errors",
    "ResourceSpecError": "errors", "UnsupportedResourceError": "errors", "DockerUnavailableError": "errors",
    "TaskSchedulingError": "errors", "configure": "config",
    "Run": "runs.record", "group": "runs.record", "NonRecoverableError": "errors",
    "workflow": "workflows", "dynamic": "workflows", "conditional": "workflows", "create_node": "workflows",
    "reference_task": "workflows", "reference_workflow": "workflows", "LaunchPlan": "workflows",
    "Workflow": "workflows",
}
__all__ = [
    "Directory",
    "Docker",
    "DockerTaskError",
    "DockerUnavailableError",
    "Environment",
    "ExecutionBehavior",
    "ExecutionContext",
    "File",
    "ImageBuildError",
    "ImageNotFoundError",
    "ImageResolutionError",
    "ImageSpec",
    "LaunchPlan",
    "MapTaskError",
    "NonRecoverableError",
    "PythonVersionError",
    "ResourceSpecError",
    "Resources",
    "ReusePolicy",
    "Run",
    "Secret",
    "SecretNotFoundError",
    "Task",
    "TaskDefinitionError",
    "TaskFailedError",
    "TaskInputError",
    "TaskInterruptedError",
    "TaskOOMError",
    "TaskOutputError",
    "TaskSchedulingError",
    "TaskSpec",
    "TaskTimeoutError",
    "UnsupportedResourceError",
    "Workflow",
    "conditional",
    "configure",
    "create_node",
    "current_context",
    "dynamic",
    "group",
    "map_task",
    "reference_task",
    "reference_workflow",
    "task",
    "workflow",
]

if TYPE_CHECKING:
    from dockertask.config import configure
    from dockertask.errors import (
        DockerTaskError,
        DockerUnavailableError,
        ImageBuildError,
        ImageNotFoundError,
        ImageResolutionError,
        MapTaskError,
        NonRecoverableError,
        PythonVersionError,
        ResourceSpecError,
        SecretNotFoundError,
        TaskDefinitionError,
        TaskFailedError,
        TaskInputError,
        TaskInterruptedError,
        TaskOOMError,
        TaskOutputError,
        TaskSchedulingError,
        TaskTimeoutError,
        UnsupportedResourceError,
    )
    from dockertask.fanout import map_task
    from dockertask.files import Directory, File
    from dockertask.images.imagespec import ImageSpec
    from dockertask.plugins import Docker
    from dockertask.runs.record import Run, group
    from dockertask.spec.context import ExecutionContext, current_context
    from dockertask.spec.resources import Resources
    from dockertask.spec.reuse import ReusePolicy
    from dockertask.spec.secrets import Secret
    from dockertask.tasks import Environment, ExecutionBehavior, Task, TaskSpec, task
    from dockertask.workflows import (
        LaunchPlan,
        Workflow,
        conditional,
        create_node,
        dynamic,
        reference_task,
        reference_workflow,
        workflow,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dockertask' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
