"""``@task`` → ``Task``: a declarative spec plus the ways to run it (call, local, submit).

Decorating validates everything it can (resources, timeout, retries, task_config, secrets)
and never touches Docker; the spec's version (a git call) is computed on first access.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import functools
import hashlib
import inspect
import itertools
import math
import os
import subprocess
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

if TYPE_CHECKING:  # imported by submit itself: a script that never submits is spared its ~11 ms
    import concurrent.futures

from dockertask import defaults, plugins
from dockertask.errors import TaskDefinitionError
from dockertask.images import refs
from dockertask.plugins import ContainerOptions
from dockertask.spec import secrets
from dockertask.spec.context import ExecutionContext, SecretsReader, enter_local, leave_local
from dockertask.spec.interface import Interface
from dockertask.spec.resources import Resources, check_request_within_limit, host_config_kwargs, limit_of
from dockertask.spec.secrets import Secret

P = ParamSpec("P")
R = TypeVar("R")
# A year: longer is a mistake (timedelta.max, 1e300) that would overflow the engine's wait.
MAX_TIMEOUT_SECONDS = 366 * 86400


class ExecutionBehavior(enum.Enum):
    """flytekit's ``execution_mode``; dockertask has one behaviour."""

    DEFAULT = 1
    DYNAMIC = 2
    EAGER = 3


def _timeout_seconds(timeout: dt.timedelta | float) -> float:
    if isinstance(timeout, dt.timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TaskDefinitionError(f"timeout={timeout!r}: expected int seconds or a datetime.timedelta (0 = no timeout)")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_TIMEOUT_SECONDS:
        raise TaskDefinitionError(f"timeout={timeout!r}: expected a finite duration from 0 (no timeout) to "
                                  f"{MAX_TIMEOUT_SECONDS // 86400} days")
    return seconds


@dataclass(frozen=True)
class TaskSpec:
    """Everything declared about a task. ``to_dict()`` is JSON-serializable."""

    name: str
    interface: Interface = field(repr=False)
    container_image: str
    cache: bool
    cache_version: str
    retries: int
    interruptible: bool
    deprecated: str
    timeout_seconds: float
    environment: Mapping[str, str]
    requests: Resources | None
    limits: Resources | None
    secret_requests: tuple[Secret, ...]
    task_config: Any
    execution_mode: ExecutionBehavior
    reusable: Any = None  # a spec.reuse.ReusePolicy: calls run in warm replicas instead of fresh containers
    source_file: str = field(repr=False, default="")
    source_text: str = field(repr=False, default="")

    @functools.cached_property
    def version(self) -> str:
        return task_version(self.source_file, self.source_text)

    @property
    def effective_mem_limit(self) -> int | None:
        mem: int | None = limit_of(self.requests, self.limits, "mem_bytes")
        return mem

    def resolved_image(self) -> str:
        return refs.resolve(self.container_image)

    def docker_constraints(self) -> dict[str, Any]:
        return host_config_kwargs(self.requests, self.limits, interruptible=self.interruptible)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "interface": self.interface.to_dict(),
            "container_image": self.container_image,
            "image": self.resolved_image(),
            "requests": self.requests.to_dict() if self.requests else {},
            "limits": self.limits.to_dict() if self.limits else {},
            "environment": sorted(self.environment),
            "secret_requests": [s.to_dict() for s in self.secret_requests],
            "timeout_seconds": self.timeout_seconds,
            "retries": self.retries,
            "cache": self.cache,
            "cache_version": self.cache_version,
            "interruptible": self.interruptible,
            "deprecated": self.deprecated,
            "task_config": None if self.task_config is None else repr(self.task_config),
            "execution_mode": self.execution_mode.name,
            "reusable": None if self.reusable is None else self.reusable.to_dict(),
        }


_version_cache: dict[str, str | None] = {}
_version_lock = threading.Lock()


def _git_version(directory: str) -> str | None:
    """HEAD of the git tree holding ``directory``, ``-dirty`` with uncommitted tracked changes."""
    with _version_lock:
        if directory in _version_cache:
            return _version_cache[directory]
        version = None
        try:
            head = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True,
                                  text=True, timeout=10)
            if head.returncode == 0:
                status = subprocess.run(["git", "-C", directory, "status", "--porcelain", "--untracked-files=no"],
                                        capture_output=True, text=True, timeout=10)
                version = head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            version = None
        _version_cache[directory] = version
        return version


def task_version(source_file: str, source_text: str) -> str:
    if source_file and os.path.exists(source_file):
        version = _git_version(str(Path(source_file).resolve().parent))
        if version:
            return version
    return "src-" + hashlib.sha256(source_text.encode()).hexdigest()[:16]


def _for_the_user(exc: Exception) -> bool:
    """The task's own exception (its frames are in the container's traceback, its cause) or dockertask's
    error for the user: raised without the runner's (or the pool's) frames, which would only hide the
    user's line."""
    from dockertask.errors import DockerTaskError, RemoteTraceback

    return isinstance(exc, DockerTaskError) or isinstance(exc.__cause__, RemoteTraceback)


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    """A forked child inherits the pool object but none of its threads: it makes its own on first submit."""
    global _executor, _executor_lock
    _executor, _executor_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def max_parallel() -> int:
    """DOCKERTASK_MAX_PARALLEL (default 16): the submit pool's size and map_task's default concurrency."""
    raw = os.environ.get("DOCKERTASK_MAX_PARALLEL", "16")
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # "²" is a digit to str.isdigit
        raise TaskDefinitionError(f"DOCKERTASK_MAX_PARALLEL={raw!r}: expected a whole number >= 1")
    return int(raw)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    import concurrent.futures

    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=max_parallel(),
                                                              thread_name_prefix="dockertask")
        return _executor


class Task(Generic[P, R]):
    """A function that runs in a fresh container when called."""

    def __init__(self, function: Callable[P, R], spec: TaskSpec, container_options: ContainerOptions,
                 image_spec: Any = None) -> None:
        self.function = function
        self.image_spec = image_spec  # the ImageSpec container_image came from, built on first use
        self.spec = spec
        self.interface = spec.interface
        self.container_options = container_options
        self.settings: dict[str, Any] = {}  # what @task, its Environment and the project said (override's base)
        self._submits = itertools.count(1)
        functools.update_wrapper(self, function)

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def code_fingerprint(self) -> str:
        """A hash of the code this task runs (its source and the project modules it uses), for the cache key.
        Computed once per process: the code a process runs does not change under it."""
        from dockertask.calls.cache import code_fingerprint

        return code_fingerprint(self.function, self.spec.source_text)

    def __repr__(self) -> str:
        return f"<dockertask.Task {self.spec.name}>"

    def warn_if_deprecated(self, stacklevel: int) -> None:
        """``stacklevel`` counts from this method up to the user's call."""
        if self.spec.deprecated:
            warnings.warn(f"Task {self.spec.name} is deprecated: {self.spec.deprecated}", FutureWarning,
                          stacklevel=stacklevel)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run in a fresh container and return the value (or raise the task's exception)."""
        from dockertask import testing
        from dockertask.calls import runner

        if self.is_async:  # an awaitable: awaiting it runs the call without blocking the event loop
            return self._awaitable(args, kwargs)  # type: ignore[return-value]
        if testing.running_locally():
            return self.local(*args, **kwargs)

        try:
            result: R = runner.call(self, args, kwargs)
        except KeyboardInterrupt:
            # Ctrl-C lands wherever the host was waiting (deep in the docker SDK: ~40 frames of it); what the
            # user needs is the line of their program, and that the container is gone.
            raise KeyboardInterrupt(f"task {self.spec.name}: its container was killed and removed") from None
        except Exception as exc:
            if _for_the_user(exc):
                raise exc.with_traceback(None)  # noqa: B904 - the cause stays as it is
            raise
        return result

    @functools.cached_property
    def is_async(self) -> bool:
        """An ``async def`` task: a call returns an awaitable (contract: "Composing tasks")."""
        return inspect.iscoroutinefunction(self.function)

    async def _awaitable(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import asyncio

        from dockertask import testing

        if testing.running_locally():  # in this process, as local() runs it: on a loop of its own thread
            return await asyncio.to_thread(self.local, *args, **kwargs)
        # The submit pool runs it (so many awaited at once are bounded by DOCKERTASK_MAX_PARALLEL); the
        # loop only waits for its Future. A cancelled await kills nothing that has started: the call runs
        # to its end, as a submit() whose Future is dropped does.
        future = self.submit(*args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except Exception as exc:
            if _for_the_user(exc):
                raise exc.with_traceback(None)  # noqa: B904 - as __call__: the user's line, not the pool's
            raise

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Start in a container now; the Future holds the value or the exception."""
        import concurrent.futures

        from dockertask import testing
        from dockertask.calls import progress, runner, upstream
        from dockertask.host import lifecycle

        if upstream.present(args, kwargs):  # their values are checked once they are in, in the pool's thread
            self.interface.check_shape(args, kwargs)
        else:
            self.interface.bind(args, kwargs)  # bad input fails here, not inside the Future
        if testing.running_locally():
            done: concurrent.futures.Future[R] = concurrent.futures.Future()
            try:
                done.set_result(self.local(*args, **kwargs))
            except Exception as exc:  # the Future holds it, as a container run's would
                done.set_exception(exc)
            return done
        self.warn_if_deprecated(stacklevel=3)  # in the caller's thread, where it can be seen
        lifecycle.install_signal_handlers()
        # Concurrent calls print concurrently: mark whose line each is ("square#3").
        label = f"{self.spec.name.rsplit('.', 1)[-1]}#{next(self._submits)}"
        handle = upstream.Handle(label)  # the Future names its call to one that receives it as an input
        # In a copy of the caller's context: the group it was made in labels it in the record.
        future = _pool().submit(contextvars.copy_context().run, runner.call, self, args, kwargs, warn=False,
                                output=progress.prefixed(label), since=lifecycle.generation(), handle=handle)
        upstream.mark(future, handle)
        return future

    def __rshift__(self, other: Any) -> Any:
        raise TaskDefinitionError(f"{self.spec.name} >> ...: `>>` orders nodes of a flytekit graph; here a task runs "
                                  "when it is called, in the order the code calls it: remove the `>>`")

    __rrshift__ = __rshift__

    def override(self, **settings: Any) -> Task[P, R]:
        """A copy of this task with some settings changed (@task's keywords; ``environment`` variables are
        merged with the task's): ``heavy = train.override(limits=Resources(mem="16Gi"))``."""
        changed = defaults.merged(self.settings, defaults.checked(settings, f"{self.spec.name}.override"))
        made: Task[P, R] = _make_task(self.function, **{**BUILT_IN, **changed})
        made.settings = changed
        return made

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run in this process: same checks and secrets (from the host providers), no Docker."""
        from dockertask.calls import upstream

        if upstream.present(args, kwargs):
            args, kwargs, _ = upstream.resolve(self.interface, args, kwargs)  # type: ignore[assignment]
        bound = self.interface.bind(args, kwargs)
        self.warn_if_deprecated(stacklevel=3)
        secrets.resolve(self.spec.secret_requests, self.spec.name)
        requested = {(s.group, s.key) for s in self.spec.secret_requests}

        def lookup(group: str, key: str | None) -> str | bytes | None:
            return secrets.lookup(group, key) if (group, key) in requested else None

        token = enter_local(ExecutionContext(task_name=self.spec.name, attempt=1,
                                             secrets=SecretsReader(lookup=lookup)))
        try:
            value = self.function(*bound.args, **bound.kwargs)
            if self.is_async:  # local() is synchronous: the coroutine runs to its end here
                import asyncio

                value = asyncio.run(value)  # type: ignore[arg-type]
        finally:
            leave_local(token)
        checked: R = self.interface.check_output(value)
        return checked


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TaskDefinitionError(f"{name}={value!r}: expected a whole number >= 0")
    if value < 0:
        raise TaskDefinitionError(f"{name}={value!r}: expected a whole number >= 0")
    return value


def _check_environment(environment: Mapping[str, str] | None) -> dict[str, str]:
    if environment is not None and not isinstance(environment, Mapping):
        raise TaskDefinitionError(f"environment={environment!r}: expected a dict of str names to str values")
    env = dict(environment or {})
    for k, v in env.items():
        if not isinstance(k, str) or not k or "=" in k or not isinstance(v, str):
            raise TaskDefinitionError(f"environment[{k!r}]={v!r}: expected str names (no '=') mapped to str values")
        if "\x00" in k or "\x00" in v:
            raise TaskDefinitionError(f"environment[{k!r}]: a NUL character cannot be in an environment variable")
    return env


def _check_secrets(secret_requests: Sequence[Secret] | None) -> tuple[Secret, ...]:
    if secret_requests is not None and (isinstance(secret_requests, (str, bytes, Secret))
                                        or not isinstance(secret_requests, (list, tuple))):
        raise TaskDefinitionError(f"secret_requests={secret_requests!r}: expected a list of dockertask.Secret")
    out = tuple(secret_requests or ())
    for s in out:
        if not isinstance(s, Secret):
            raise TaskDefinitionError(f"secret_requests contains {s!r}: expected dockertask.Secret(group, key)")
    return out


def _make_task(
    fn: Callable[P, R], *, task_config: Any, cache: bool, cache_version: str, retries: int, interruptable: bool,
    deprecated: str, timeout: dt.timedelta | int, container_image: Any, environment: Mapping[str, str] | None,
    requests: Resources | None, limits: Resources | None, secret_requests: Sequence[Secret] | None,
    execution_mode: ExecutionBehavior, reusable: Any = None,
) -> Task[P, R]:
    if not callable(fn):
        raise TaskDefinitionError(f"@task expects a function, got {fn!r}")
    if isinstance(fn, Task):
        raise TaskDefinitionError(f"@task got {fn!r}, which is already a task: decorate its function "
                                  f"({fn.name}.function) to make a task with other settings")
    name = f"{fn.__module__}.{fn.__qualname__}"
    if inspect.isasyncgenfunction(fn):
        raise TaskDefinitionError(f"@task {name}: an async generator cannot be a task (its values would have to "
                                  "come back one by one); return a list from an `async def` instead")
    for label, res in (("requests", requests), ("limits", limits)):
        if res is not None and not isinstance(res, Resources):
            raise TaskDefinitionError(f"{label}={res!r}: expected dockertask.Resources(cpu=..., mem=...)")
    check_request_within_limit(requests, limits)
    if reusable is not None:
        from dockertask.spec.reuse import ReusePolicy

        if not isinstance(reusable, ReusePolicy):
            raise TaskDefinitionError(f"reusable={reusable!r}: expected dockertask.ReusePolicy(replicas=..., "
                                      "idle_ttl=...)")
    options = plugins.options_for(task_config)
    image_spec = None
    if container_image is not None and not isinstance(container_image, str):
        from dockertask.images.imagespec import ImageSpec

        if not isinstance(container_image, ImageSpec):
            raise TaskDefinitionError(f"container_image={container_image!r}: expected a reference, a template or "
                                      "an ImageSpec")
        image_spec = container_image
        container_image = image_spec.image_name()
    elif container_image is not None:
        refs.check_reference(container_image)
    try:
        source_file = inspect.getsourcefile(fn) or ""
        source_text = inspect.getsource(fn)
    except (OSError, TypeError):
        source_file, source_text = "", name
    # Relative bind sources are relative to the file that defines the task (the cwd for one without a file).
    options = plugins.resolve_binds(options, os.path.dirname(os.path.abspath(source_file)) if source_file
                                    else os.getcwd())
    spec = TaskSpec(
        name=name, interface=Interface.from_function(fn, name),
        container_image=container_image or refs.DEFAULT_TEMPLATE,
        cache=bool(cache), cache_version=str(cache_version), retries=_check_int("retries", retries),
        interruptible=bool(interruptable), deprecated=str(deprecated or ""),
        timeout_seconds=_timeout_seconds(timeout), environment=_check_environment(environment),
        requests=requests, limits=limits, secret_requests=_check_secrets(secret_requests),
        task_config=task_config, execution_mode=execution_mode, reusable=reusable, source_file=source_file,
        source_text=source_text,
    )
    return Task(fn, spec, options, image_spec)


# flytekit's defaults: what a task says nothing about, when no Environment or project default says it
BUILT_IN: dict[str, Any] = {
    "task_config": None, "cache": False, "cache_version": "", "retries": 0, "interruptable": False,
    "deprecated": "", "timeout": 0, "container_image": None, "environment": None, "requests": None,
    "limits": None, "secret_requests": None, "execution_mode": ExecutionBehavior.DEFAULT, "reusable": None,
}


@overload
def task(_task_function: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(
    _task_function: None = None, *, task_config: Any = None, cache: bool = False, cache_version: str = "",
    retries: int = 0, interruptable: bool = False, deprecated: str = "", timeout: dt.timedelta | int = 0,
    container_image: Any = None, environment: Mapping[str, str] | None = None, requests: Resources | None = None,
    limits: Resources | None = None, secret_requests: Sequence[Secret] | None = None,
    execution_mode: ExecutionBehavior = ExecutionBehavior.DEFAULT, interruptible: bool | None = None,
    reusable: Any = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(_task_function: Callable[P, R] | None = None,
         **settings: Any) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """flytekit's ``@task``, run in Docker: same parameters, same defaults.

    ``interruptible=`` is accepted as a spelling of ``interruptable=``; ``reusable=ReusePolicy(...)``
    (beyond the seed) runs calls in warm replicas instead of a fresh container each (see ``calls/replicas``).
    What a task does not set comes from ``[tool.dockertask.defaults]`` (see ``defaults``).
    """
    return _decorator(_task_function, defaults.checked(settings, "@task"), {})


def _documented(
    _task_function: Callable[P, R] | None = None, *, task_config: Any = None, cache: bool = False,
    cache_version: str = "", retries: int = 0, interruptable: bool = False, deprecated: str = "",
    timeout: dt.timedelta | int = 0, container_image: Any = None, environment: Mapping[str, str] | None = None,
    requests: Resources | None = None, limits: Resources | None = None,
    secret_requests: Sequence[Secret] | None = None,
    execution_mode: ExecutionBehavior = ExecutionBehavior.DEFAULT, interruptible: bool | None = None,
    reusable: Any = None,
) -> Any: ...


# help(task) and inspect show @task's keywords with flytekit's defaults: **settings is only how the
# implementation tells a keyword given from one left to the Environment and the project.
task.__signature__ = inspect.signature(_documented)  # type: ignore[attr-defined]


def _decorator(fn: Callable[P, R] | None, explicit: dict[str, Any], environment: dict[str, Any],
               project: bool = True) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    if "interruptable" in explicit and explicit.get("interruptable") is None:
        del explicit["interruptable"]  # interruptible=None: not said
    mode = explicit.get("execution_mode", ExecutionBehavior.DEFAULT)
    if not isinstance(mode, ExecutionBehavior):
        raise TaskDefinitionError(f"execution_mode={mode!r}: expected a dockertask.ExecutionBehavior")
    if mode is not ExecutionBehavior.DEFAULT:
        raise TaskDefinitionError(f"execution_mode={mode!r}: dockertask runs tasks with DEFAULT only")

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        # Read at decoration (a file, no engine): the task is what the project said when it was made.
        layered = defaults.merged(defaults.project() if project else {}, environment, explicit)
        made = _make_task(function, **{**BUILT_IN, **layered})
        made.settings = layered
        return made

    if fn is not None:
        return decorate(fn)
    return decorate


def task_without_project_defaults(**settings: Any) -> Callable[[Callable[..., Any]], Task[..., Any]]:
    """@task with only the settings given: the pytest plugin's suite worker, whose container runs a whole
    session, must not take a timeout or retries the project set for its tasks."""
    made: Task[..., Any] | Callable[[Callable[..., Any]], Task[..., Any]] = _decorator(
        None, defaults.checked(settings, "@task"), {}, project=False)
    assert not isinstance(made, Task)
    return made


class Environment:
    """Defaults for a group of tasks (contract: "Composing tasks"), as Flyte 2's ``TaskEnvironment``:

        etl = dockertask.Environment(container_image="etl:2", limits=Resources(mem="2Gi"), retries=2)

        @etl.task                       # every setting of etl
        def load(...): ...

        @etl.task(timeout=60)           # and one more; a task's own setting wins
        def publish(...): ...

    Settings are @task's keywords (checked now); ``environment`` variables are merged with the task's.
    """

    def __init__(self, **settings: Any) -> None:
        self.settings = defaults.checked(settings, "Environment")

    def __repr__(self) -> str:
        return f"dockertask.Environment({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"

    @overload
    def task(self, _task_function: Callable[P, R]) -> Task[P, R]: ...

    @overload
    def task(self, _task_function: None = None, **settings: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, _task_function: Callable[P, R] | None = None,
             **settings: Any) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """``@task`` with this environment's settings under the ones given here."""
        return _decorator(_task_function, defaults.checked(settings, "Environment.task"), dict(self.settings))
