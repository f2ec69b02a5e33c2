"""Shared task settings (contract: "Composing tasks"): Environment, [tool.dockertask.defaults] and
override(), and which one wins. No engine: what is checked is the spec a task is made with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

import dockertask
from dockertask import Docker, Resources, TaskDefinitionError, task
from dockertask import defaults as shared


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory to work in; its pyproject.toml is what each test writes."""
    monkeypatch.chdir(tmp_path)
    shared.forget()
    yield tmp_path / "pyproject.toml"
    shared.forget()


def _define(**settings: object) -> dockertask.Task:  # type: ignore[type-arg]
    def clean(x: int) -> int:
        return x

    return task(**settings)(clean)  # type: ignore[no-any-return]


def test_the_project_s_defaults_apply_to_a_task_that_does_not_say(project: Path) -> None:
    project.write_text('''
[tool.dockertask.defaults]
image = "ghcr.io/acme/etl:2.1"
limits = { cpu = 2, mem = "4Gi" }
requests = { mem = "1Gi" }
environment = { LOG_LEVEL = "info", REGION = "eu" }
retries = 2
timeout = "30m"
docker = { shm_size = "1g", pids_limit = 512 }
''')
    spec = _define().spec
    assert spec.container_image == "ghcr.io/acme/etl:2.1"
    assert spec.limits == Resources(cpu=2, mem="4Gi") and spec.requests == Resources(mem="1Gi")
    assert spec.environment == {"LOG_LEVEL": "info", "REGION": "eu"}
    assert spec.retries == 2 and spec.timeout_seconds == 1800
    assert spec.task_config == Docker(shm_size="1g", pids_limit=512)
    # The task's own settings win; its environment variables are added to the project's.
    own = _define(retries=0, environment={"REGION": "us", "DEBUG": "1"}, limits=Resources(mem="8Gi")).spec
    assert own.retries == 0 and own.limits == Resources(mem="8Gi")
    assert own.environment == {"LOG_LEVEL": "info", "REGION": "us", "DEBUG": "1"}


@pytest.mark.parametrize(("text", "says"), [
    ('[tool.dockertask.defaults]\nimagee = "x"\n', r"unknown key 'imagee'; expected one of: cache, .*image"),
    ('[tool.dockertask.defaults]\nlimits = { mem = "lots" }\n', r"limits = \{'mem': 'lots'\}: .*mem"),
    ('[tool.dockertask.defaults]\nlimits = "4Gi"\n', r"limits = '4Gi': expected a table"),
    ('[tool.dockertask.defaults]\ndocker = { shm = "1g" }\n', r"docker = \{'shm': '1g'\}: .*shm"),
    ('[tool.dockertask.defaults]\ntimeout = "soon"\n', r"timeout='soon': expected"),
])
def test_a_wrong_project_default_is_refused_naming_the_file_and_key(project: Path, text: str, says: str) -> None:
    project.write_text(text)
    with pytest.raises(TaskDefinitionError, match=says):
        _define()


def test_an_environment_holds_defaults_for_its_tasks_and_a_task_s_own_win(project: Path) -> None:
    project.write_text('[tool.dockertask.defaults]\nretries = 5\nenvironment = { A = "project" }\n')
    etl = dockertask.Environment(container_image="etl:2", limits=Resources(mem="2Gi"), retries=1,
                                 environment={"B": "env"})

    @etl.task
    def load(x: int) -> int:
        return x

    @etl.task(timeout=dt.timedelta(seconds=60), environment={"C": "task"})
    def publish(x: int) -> int:
        return x

    assert load.spec.container_image == "etl:2" and load.spec.retries == 1  # the environment over the project
    assert load.spec.limits == Resources(mem="2Gi") and load.spec.timeout_seconds == 0
    assert load.spec.environment == {"A": "project", "B": "env"}
    assert publish.spec.timeout_seconds == 60 and publish.spec.environment == {"A": "project", "B": "env",
                                                                               "C": "task"}


def test_an_environment_refuses_what_is_not_a_task_setting_by_name() -> None:
    with pytest.raises(TaskDefinitionError, match=r"Environment: unknown setting 'memory'; expected one of: "):
        dockertask.Environment(memory="2Gi")
    with pytest.raises(TaskDefinitionError, match=r"@task: unknown setting 'retry'"):
        task(retry=2)
    etl = dockertask.Environment(retries=1)
    with pytest.raises(TaskDefinitionError, match=r"retries=-1: expected a whole number"):
        etl.task(retries=-1)(lambda: None)


def test_override_returns_a_changed_copy_and_leaves_the_task_alone(project: Path) -> None:
    base = _define(retries=1, limits=Resources(mem="1Gi"), environment={"A": "1"}, cache=True)
    heavy = base.override(limits=Resources(mem="16Gi"), environment={"B": "2"})
    assert heavy is not base and heavy.function is base.function and heavy.name == base.name
    assert heavy.spec.limits == Resources(mem="16Gi") and heavy.spec.retries == 1 and heavy.spec.cache
    assert heavy.spec.environment == {"A": "1", "B": "2"}
    assert base.spec.limits == Resources(mem="1Gi") and base.spec.environment == {"A": "1"}
    assert heavy.override(retries=0).spec.retries == 0 and heavy.override(retries=0).spec.limits == heavy.spec.limits
    with pytest.raises(TaskDefinitionError, match=r"override: unknown setting 'limit'"):
        base.override(limit=Resources(mem="1Gi"))
    with pytest.raises(TaskDefinitionError, match=r"timeout='x'"):
        base.override(timeout="x")


def test_help_shows_flytekit_s_keywords_and_defaults() -> None:
    import inspect

    params = inspect.signature(task).parameters
    assert params["retries"].default == 0 and params["container_image"].default is None


def test_the_suite_worker_takes_none_of_the_project_s_task_defaults(project: Path) -> None:
    """A project timeout of 60 s for its tasks must not end a pytest session's worker container."""
    from dockertask.tasks import task_without_project_defaults

    project.write_text('[tool.dockertask.defaults]\ntimeout = 60\nretries = 2\n')

    def worker() -> None: ...

    spec = task_without_project_defaults(environment={"A": "1"})(worker).spec
    assert spec.timeout_seconds == 0 and spec.retries == 0 and spec.environment == {"A": "1"}
    assert task(worker).spec.timeout_seconds == 60
