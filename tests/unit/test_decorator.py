"""The decorator: flytekit's parameters, validation at decoration, the spec, no Docker."""

from __future__ import annotations

import inspect
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import dockertask
from dockertask import Docker, Resources, Secret, TaskInputError, task
from dockertask.backends import set_default_backend
from dockertask.tasks import ExecutionBehavior

from ..fakes import ExplodingBackend

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def test_defaults_match_flytekit() -> None:
    """Every seed parameter exists with flytekit's default."""
    params = inspect.signature(task).parameters
    expected = {"task_config": None, "cache": False, "cache_version": "", "retries": 0, "interruptable": False,
                "deprecated": "", "timeout": 0, "container_image": None, "environment": None, "requests": None,
                "limits": None, "secret_requests": None, "execution_mode": ExecutionBehavior.DEFAULT}
    for name, default in expected.items():
        assert params[name].default == default, name


def test_decorating_never_touches_docker() -> None:
    """Decoration and spec access work with an engine that fails on any use."""
    set_default_backend(ExplodingBackend())  # type: ignore[arg-type]
    try:
        @task(retries=1, limits=Resources(cpu=1))
        def f(x: int) -> int:
            return x

        assert f.spec.retries == 1
        json.dumps(f.spec.to_dict())
    finally:
        set_default_backend(None)


def test_spec_is_frozen_and_json_serializable() -> None:
    """t.spec cannot be changed and to_dict() holds everything the contract lists."""
    @task(cache=True, cache_version="2", retries=3, interruptible=True, deprecated="old",
          timeout=timedelta(minutes=5), container_image="alpine:3", environment={"MODE": "fast"},
          requests=Resources(cpu="500m", mem="256Mi"), limits=Resources(cpu="2", mem="1Gi"),
          secret_requests=[Secret("db", "password", Secret.MountType.ENV_VAR)], task_config=Docker(shm_size="1g"))
    def train(x: int, lr: float = 0.1) -> float:
        return lr

    with pytest.raises(AttributeError):
        train.spec.retries = 5  # type: ignore[misc]
    d = json.loads(json.dumps(train.spec.to_dict()))
    assert d["name"] == "tests.unit.test_decorator.test_spec_is_frozen_and_json_serializable.<locals>.train"
    assert d["interface"]["inputs"] == {"x": {"type": "int"}, "lr": {"type": "float", "default": 0.1}}
    assert d["interface"]["output"] == "float"
    assert d["image"] == "alpine:3" and d["timeout_seconds"] == 300
    assert d["requests"] == {"cpu": "500m", "mem": "256Mi"} and d["limits"] == {"cpu": "2", "mem": "1Gi"}
    assert d["environment"] == ["MODE"]  # keys only: values may be sensitive
    assert d["secret_requests"] == [{"group": "db", "key": "password", "mount_requirement": "ENV_VAR"}]
    assert (d["retries"], d["cache"], d["cache_version"], d["interruptible"], d["deprecated"]) == (
        3, True, "2", True, "old")
    assert d["version"]


def test_version_is_the_git_commit_with_dirty_suffix(tmp_path: Path) -> None:
    """In a git tree the version is HEAD, with -dirty when tracked files changed."""
    src = tmp_path / "proj" / "mod.py"
    src.parent.mkdir()
    src.write_text("def f():\n    return 1\n")
    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(src.parent), *a], check=True, capture_output=True, text=True)

    run("init", "-q")
    run("-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
    run("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    head = run("rev-parse", "HEAD").stdout.strip()
    from dockertask.tasks import _version_cache, task_version

    assert task_version(str(src), "") == head
    src.write_text("def f():\n    return 2\n")
    _version_cache.clear()
    assert task_version(str(src), "") == head + "-dirty"


def test_version_falls_back_to_source_hash(tmp_path: Path) -> None:
    """Outside git the version is a hash of the function's source."""
    from dockertask.tasks import task_version

    a, b = task_version("", "def f(): return 1"), task_version("", "def f(): return 2")
    assert a.startswith("src-") and a != b


@pytest.mark.parametrize("kwargs,err,match", [
    ({"task_config": object()}, TypeError, "not a registered plugin config"),
    ({"timeout": -1}, ValueError, "timeout=-1"),
    ({"timeout": "5m"}, TypeError, "timeout='5m'"),
    ({"retries": -1}, ValueError, "retries=-1"),
    ({"retries": 1.5}, TypeError, "retries=1.5"),
    ({"requests": {"cpu": 1}}, TypeError, "requests="),
    ({"environment": {"A": 1}}, TypeError, "environment"),
    ({"secret_requests": ["db"]}, TypeError, "secret_requests"),
    ({"container_image": 42}, TypeError, "container_image=42"),
    ({"execution_mode": ExecutionBehavior.DYNAMIC}, ValueError, "DEFAULT only"),
])
def test_bad_decorator_arguments_raise_at_decoration(kwargs: dict, err: type, match: str) -> None:  # type: ignore[type-arg]
    """Bad arguments fail when decorating, naming the parameter and value."""
    with pytest.raises(err, match=match):
        @task(**kwargs)
        def f() -> None: ...


def test_registered_plugin_config_is_accepted() -> None:
    """A config type registered with plugins.register becomes valid task_config."""
    from dockertask import plugins

    class MyCfg:
        pass

    plugins.register(MyCfg, lambda c: plugins.ContainerOptions(environment={"FROM_PLUGIN": "1"}))

    @task(task_config=MyCfg())
    def f() -> None: ...

    assert f.container_options.environment == {"FROM_PLUGIN": "1"}


def test_public_api_is_curated() -> None:
    """Every name in __all__ resolves, and the errors share one root."""
    for name in dockertask.__all__:
        assert getattr(dockertask, name) is not None
    for name in dockertask.__all__:
        obj = getattr(dockertask, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, dockertask.DockerTaskError)


def test_unreachable_engine_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine: DockerUnavailableError that tells the user how to start one."""
    from dockertask.backends.docker import DockerBackend

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(dockertask.DockerUnavailableError, match="dockerd|systemctl start docker"):
        DockerBackend()


def test_an_async_generator_is_refused_at_decoration_with_what_to_do() -> None:
    """An async generator's values would have to come back one at a time: refused, saying what to do."""

    async def stream(x: int):  # type: ignore[no-untyped-def]
        yield x

    with pytest.raises(TypeError, match=r"async generator cannot be a task.*return a list from an `async def`"):
        task(stream)


def test_the_package_ships_type_information_for_users_type_checkers(tmp_path: Path) -> None:
    """mypy on a user file sees a task's real signature and types (py.typed is shipped), not Any."""
    import subprocess
    import sys

    user = tmp_path / "flow.py"
    user.write_text(
        "from functools import partial\n"
        "from dockertask import Environment, map_task, task\n"
        "@task\n"
        "def add(x: int, y: int = 1) -> int:\n"
        "    return x + y\n"
        "env = Environment(retries=1)\n"
        "@env.task(timeout=5)\n"
        "async def fetch(x: int) -> str:\n"
        "    return str(x)\n"
        "reveal_type(add(1))\n"
        "reveal_type(add.submit(1))\n"
        "reveal_type(add.local(1, y=2))\n"
        "reveal_type(map_task(add)(x=[1, 2]))\n"
        "reveal_type(map_task(partial(add, y=2))(x=[1, 2]))\n"
        "reveal_type(fetch(1))\n"
        "reveal_type(add.override(retries=2))\n"
        "add('one')\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    import re

    revealed = re.findall(r'Revealed type is "([^"]+)"', out.stdout)
    assert [r.replace("builtins.", "") for r in revealed] == [
        "int", "concurrent.futures._base.Future[int]", "int", "list[int]", "list[int]",
        "typing.Coroutine[Any, Any, str]", "dockertask.tasks.Task[[x: int, y: int =], int]"], out.stdout
    assert 'Argument 1 to "__call__" of "Task" has incompatible type "str"; expected "int"' in out.stdout, out.stdout
    assert "Untyped decorator" not in out.stdout and "import-untyped" not in out.stdout, out.stdout


def test_the_mypy_plugin_lets_a_path_stand_where_a_file_is_annotated(tmp_path: Path) -> None:
    """With plugins = ["dockertask.mypy"], count_lines(data="inputs/big.csv") type-checks (it runs); an int
    there is still refused."""
    import subprocess
    import sys

    user = tmp_path / "flow.py"
    user.write_text(
        "import pathlib\n"
        "from dockertask import File, task\n"
        "@task\n"
        "def count_lines(data: File) -> int:\n"
        "    with open(data) as fh:\n"
        "        return sum(1 for _ in fh)\n"
        "count_lines(data='inputs/big.csv')\n"
        "count_lines.submit(pathlib.Path('inputs/big.csv'))\n"
        "count_lines(data=3)\n")
    (tmp_path / "mypy.ini").write_text("[mypy]\nplugins = dockertask.mypy\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "flow.py:9:" in errors[0] and '"int"' in errors[0], out.stdout


@pytest.mark.parametrize("kwargs, match", [
    ({"timeout": float("nan")}, "timeout=nan: expected a finite duration"),
    ({"timeout": float("inf")}, "timeout=inf"),
    ({"timeout": 1e300}, "timeout=1e\\+300"),
    ({"timeout": __import__("datetime").timedelta.max}, "timeout=datetime.timedelta"),
    ({"environment": {"A": "b\x00c"}}, "NUL"),
    ({"container_image": "Bad Image"}, "not an image reference"),
    ({"container_image": "../../etc"}, "not an image reference"),
    ({"container_image": "x" * 10_000}, "10000 characters"),
    ({"container_image": "{{.image.default.fqn}"}, "braces"),
    ({"container_image": "app@sha256:abc"}, "not an image reference"),
])
def test_values_that_cannot_work_are_refused_at_decoration(kwargs: dict[str, Any], match: str) -> None:
    """Numbers, images and environment that would fail every call raise a ValueError naming them when decorated."""
    with pytest.raises(ValueError, match=match):
        task(**kwargs)(lambda x: x)


@pytest.mark.parametrize("ref", ["python:3.11-slim", "localhost:5000/team/app:1.2", "a/b/c",
                                 "registry.example.com/x@sha256:" + "0" * 64,
                                 "{{ .image.default.fqn }}:{{.image.default.version}}"])
def test_real_image_references_and_templates_are_accepted(ref: str) -> None:
    """What Docker accepts as a reference (or a well-formed template) decorates fine."""
    assert task(container_image=ref)(lambda x: x).spec.container_image == ref


def test_an_argument_that_cannot_be_pickled_is_a_task_input_error_naming_it(fake: Any) -> None:
    """A lock or a 10,000-deep list: TaskInputError naming the argument, and no container started."""
    import threading

    deep: list[Any] = []
    cur = deep
    for _ in range(10_000):
        cur.append([])
        cur = cur[0]
    unchecked = task(lambda x: x)
    for value, kind in ((threading.Lock(), "lock"), (deep, "list")):
        with pytest.raises(TaskInputError, match=rf"argument 0 \({kind}\) cannot be sent"):
            unchecked(value)
    assert fake.jobs == []


def test_decorating_a_task_again_is_refused() -> None:
    """@task on a Task would silently keep the inner task's settings: refuse it and say what to decorate."""
    inner = task(lambda x: x)
    with pytest.raises(TypeError, match="already a task"):
        task(timeout=5)(inner)


@pytest.mark.parametrize("kwargs", [{"replicas": 0}, {"replicas": True}, {"replicas": 1.5},
                                    {"idle_ttl": 0}, {"idle_ttl": float("nan")}, {"idle_ttl": timedelta(days=2)}])
def test_a_reuse_policy_that_cannot_work_is_refused(kwargs: dict[str, Any]) -> None:
    """ReusePolicy(replicas >= 1, 0 < idle_ttl <= a day) or a TaskDefinitionError naming the field."""
    from dockertask import ReusePolicy, TaskDefinitionError

    with pytest.raises(TaskDefinitionError, match=f"ReusePolicy\\({next(iter(kwargs))}="):
        ReusePolicy(**kwargs)


def test_reusable_is_part_of_the_spec_and_must_be_a_policy() -> None:
    """@task(reusable=ReusePolicy(...)) shows in the spec; anything else is refused at decoration."""
    from dockertask import ReusePolicy

    t = task(reusable=ReusePolicy(replicas=2, idle_ttl=timedelta(minutes=5)))(lambda x: x)
    assert t.spec.to_dict()["reusable"] == {"replicas": 2, "idle_ttl_seconds": 300.0, "setup": None}
    with pytest.raises(TypeError, match="expected dockertask.ReusePolicy"):
        task(reusable=2)(lambda x: x)


def test_a_reuse_policy_s_setup_must_be_a_function_and_tells_replicas_apart() -> None:
    """ReusePolicy(setup=...) takes a function; two tasks with different setups never share a replica."""
    from dockertask import ReusePolicy
    from dockertask.calls import replicas

    with pytest.raises(TypeError, match=r"ReusePolicy\(setup='model.bin'\): expected a function"):
        ReusePolicy(setup="model.bin")  # type: ignore[arg-type]

    def one() -> None: ...

    def other() -> None: ...

    def job() -> Any:
        from dockertask.backends.base import ContainerJob, StdinPieces

        return ContainerJob(image="img", command=[], stdin=StdinPieces(()))

    keys = {replicas._key(task(reusable=ReusePolicy(setup=s))(lambda: None), job()) for s in (one, other, None)}
    assert len(keys) == 3
    assert ReusePolicy(setup=one).to_dict()["setup"].endswith("one")


def test_a_missing_module_s_hint_names_the_distribution_that_provides_it() -> None:
    """`_pytest` is pytest's: the hint says packages=['pytest'], not packages=['_pytest']."""
    from dockertask.calls.outcomes import _image_hint

    hint = _image_hint("img:1", "_pytest")
    assert "packages=['pytest']" in hint and "'_pytest']" not in hint
