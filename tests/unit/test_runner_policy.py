"""Failure policy with a fake backend: retries, preemption, timeouts, OOM, crashes, cache."""

from __future__ import annotations

import json
import warnings

import pytest

import dockertask
from dockertask import (
    Resources,
    Secret,
    SecretNotFoundError,
    TaskFailedError,
    TaskInputError,
    TaskInterruptedError,
    TaskOOMError,
    TaskOutputError,
    TaskTimeoutError,
    task,
)
from dockertask.backends.base import ContainerOutcome
from dockertask.backends.engine_config import create_kwargs, host_config
from dockertask.calls.runner import MAX_PREEMPTIONS
from dockertask.errors import RemoteTraceback
from dockertask.runtime import protocol

from ..fakes import FakeBackend, _frames, crashed, ok, oom, preempted, raised, timed_out


def _header(job) -> dict:  # type: ignore[no-untyped-def]
    """The header frame the job sends (after the bootstrap's three frames)."""
    return protocol.decode_meta(_frames(job.stdin_data)[3])  # type: ignore[no-any-return]


@task(retries=2)
def flaky(x: int) -> int:
    return x


def test_success_runs_one_container(fake: FakeBackend) -> None:
    """A successful call starts exactly one container and returns its value."""
    fake.outcomes = [ok(5)]
    assert flaky(5) == 5
    assert len(fake.jobs) == 1 and _header(fake.jobs[0])["attempt"] == 1


@pytest.mark.parametrize("failure", [raised(ValueError("x")), timed_out(), oom(), crashed(139)],
                         ids=["exception", "timeout", "oom", "crash"])
def test_every_container_failure_is_retried_in_a_fresh_container(fake: FakeBackend, failure) -> None:  # type: ignore[no-untyped-def]
    """Exception, timeout, OOM and crash are each retried; each attempt is a new job, numbered."""
    fake.outcomes = [failure, failure, ok(1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert flaky(1) == 1
    assert [_header(j)["attempt"] for j in fake.jobs] == [1, 2, 3]
    assert len({_header(j)["run_id"] for j in fake.jobs}) == 1


def test_last_error_is_raised_after_retries(fake: FakeBackend) -> None:
    """After retries+1 attempts the last attempt's error is raised, as its own type."""
    fake.outcomes = [raised(ValueError("one")), raised(ValueError("two")), raised(KeyError("three"))]
    with pytest.raises(KeyError, match="three") as info:
        flaky(1)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert len(fake.jobs) == 3


def test_retries_are_logged_with_reason(fake: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    """Each retry is logged on the host with the attempt and the reason."""
    fake.outcomes = [raised(ValueError("first failure")), ok(1)]
    with caplog.at_level("WARNING", logger="dockertask"):
        flaky(1)
    assert "attempt 1 failed: ValueError: first failure" in caplog.text and "retry 1/2" in caplog.text


def test_host_side_input_errors_are_never_retried(fake: FakeBackend) -> None:
    """A bad argument raises before any container starts."""
    with pytest.raises(TaskInputError):
        flaky("one")  # type: ignore[arg-type]
    assert fake.jobs == []


def test_wrong_output_is_not_retried(fake: FakeBackend) -> None:
    """A return value of the wrong type is TaskOutputError, without another attempt."""
    fake.outcomes = [ok("not an int")]
    with pytest.raises(TaskOutputError):
        flaky(1)
    assert len(fake.jobs) == 1


@task(timeout=3)
def limited() -> None: ...


def test_timeout_error_names_task_and_limit(fake: FakeBackend) -> None:
    """TaskTimeoutError is a TimeoutError naming the task and its limit."""
    fake.outcomes = [timed_out()]
    with pytest.raises(TaskTimeoutError, match=r"limited exceeded its timeout of 3s"):
        limited()


@task(limits=Resources(mem="256Mi"))
def hungry() -> None: ...


def test_oom_error_names_the_limit(fake: FakeBackend) -> None:
    """TaskOOMError names the memory limit in the user's units."""
    fake.outcomes = [oom()]
    with pytest.raises(TaskOOMError, match="memory limit of 256Mi"):
        hungry()


def test_crash_without_result_shows_exit_code_and_output(fake: FakeBackend) -> None:
    """A container that dies without a result is TaskFailedError with its exit code and last output."""
    fake.outcomes = [crashed(139, "Segmentation fault (core dumped)")]
    with pytest.raises(TaskFailedError, match="exited with code 139") as info:
        limited()
    assert info.value.exit_code == 139 and "Segmentation fault" in str(info.value)


@task(interruptable=True, retries=1)
def spot(x: int) -> int:
    return x


def test_preemption_reruns_without_using_retries(fake: FakeBackend) -> None:
    """An interruptible task stopped from outside is re-run; retries stay untouched."""
    fake.outcomes = [preempted(), preempted(), raised(ValueError("real")), ok(3)]
    assert spot(3) == 3
    assert len(fake.jobs) == 4
    assert all(j.labels.get("dockertask.interruptible") == "true" for j in fake.jobs[:3])


def test_preemptions_are_bounded_and_the_last_attempt_is_not_interruptible(fake: FakeBackend) -> None:
    """After MAX_PREEMPTIONS the task runs as a normal (non-interruptible) one, which uses retries."""
    fake.outcomes = [preempted()] * (MAX_PREEMPTIONS + 2)
    with pytest.raises(TaskInterruptedError):
        spot(1)
    assert len(fake.jobs) == MAX_PREEMPTIONS + 2  # preemptions, then 1 try + 1 retry
    tail = fake.jobs[MAX_PREEMPTIONS:]
    assert all("dockertask.interruptible" not in j.labels for j in tail)
    assert all(not j.resources.interruptible for j in tail)
    assert all(host_config(j).get("oom_score_adj") is None for j in tail)


def test_non_interruptible_external_kill_uses_retries(fake: FakeBackend) -> None:
    """A normal task killed from outside is a failure like any other."""
    fake.outcomes = [preempted(), preempted(), preempted()]
    with pytest.raises(TaskInterruptedError, match="stopped from outside"):
        flaky(1)
    assert len(fake.jobs) == 3


@task(deprecated="use flaky")
def old() -> int:
    return 1


def test_deprecated_warns_on_every_call(fake: FakeBackend) -> None:
    """Each call, submit and local run of a deprecated task warns FutureWarning, pointing at the caller."""
    fake.outcomes = [ok(1), ok(1), ok(1)]
    match = r"Task tests\.unit\.test_runner_policy\.old is deprecated: use flaky"
    for run in (old, old, lambda: old.submit().result(), old.local):
        with pytest.warns(FutureWarning, match=match) as record:
            run()
        assert record[0].filename == __file__


@task(secret_requests=[Secret("db", "password")])
def needs_secret() -> None: ...


def test_missing_secret_fails_before_any_container(fake: FakeBackend) -> None:
    """SecretNotFoundError names group and key, and no container is started."""
    with pytest.raises(SecretNotFoundError, match="group='db' key='password'"):
        needs_secret()
    assert fake.jobs == []


def test_secret_values_travel_on_stdin_not_in_the_job_config(fake: FakeBackend,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The value is in the stdin stream only: not in env, labels, command or host config."""
    monkeypatch.setenv("DOCKERTASK_SECRET_DB_PASSWORD", "s3cr3t-value")
    fake.outcomes = [ok(None)]
    needs_secret()
    job = fake.jobs[0]
    assert b"s3cr3t-value" in job.stdin_data
    visible = json.dumps([job.environment, job.labels, job.command, host_config(job), create_kwargs(job)],
                         default=str)
    assert "s3cr3t-value" not in visible
    assert host_config(job)["tmpfs"] == {"/etc/secrets": "rw,noexec,nosuid,nodev,size=4m,mode=1777"}


@task(cache=True, cache_version="1")
def cached(x: int, opts: dict[str, int] | None = None) -> int:
    return x


def test_cache_hit_starts_no_container(fake: FakeBackend) -> None:
    """The second identical call is answered from the cache."""
    fake.outcomes = [ok(10)]
    assert cached(1, {"a": 1, "b": 2}) == 10
    assert cached(1, {"b": 2, "a": 1}) == 10  # dict order does not matter
    assert len(fake.jobs) == 1


def test_failures_are_not_cached(fake: FakeBackend) -> None:
    """A failed call leaves no entry: the next call runs again."""
    fake.outcomes = [raised(ValueError("no")), ok(2)]
    with pytest.raises(ValueError):
        cached(2)
    assert cached(2) == 2
    assert len(fake.jobs) == 2


def test_concurrent_identical_calls_run_once(fake: FakeBackend) -> None:
    """Two threads making the same cached call at once start one container between them."""
    import threading
    import time as _time

    def slow_ok(job):  # type: ignore[no-untyped-def]
        _time.sleep(0.5)
        return ok(49)

    fake.outcomes = [slow_ok, slow_ok]
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(cached(7))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [49, 49]
    assert len(fake.jobs) == 1


def test_different_inputs_miss(fake: FakeBackend) -> None:
    """Different inputs (including 1 vs True-like values) are different keys."""
    fake.outcomes = [ok(1), ok(2)]
    assert cached(1) == 1
    assert cached(2) == 2


@task
def exits() -> None:
    raise SystemExit(3)


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["sys.exit", "KeyboardInterrupt"])
def test_a_task_that_exits_fails_with_task_failed_error_not_ending_the_host(fake: FakeBackend,
                                                                          exc: BaseException) -> None:
    """sys.exit(3) (or a KeyboardInterrupt raised) inside a task is a TaskFailedError, never the host's own exit."""
    fake.outcomes.append(raised(exc))
    with pytest.raises(TaskFailedError, match=type(exc).__name__) as info:
        exits()
    if isinstance(exc, SystemExit):
        assert info.value.exit_code == 3 and "sys.exit(3)" in str(info.value)


def test_every_container_carries_the_labels_of_dockertask_labels(fake: FakeBackend) -> None:
    """DOCKERTASK_LABELS adds labels to every container (a CI job finds its own); this suite sets one."""
    from ..conftest import SESSION, SESSION_LABEL

    fake.outcomes.append(ok(2))
    assert flaky(2) == 2
    assert fake.jobs[0].labels[SESSION_LABEL] == SESSION


@pytest.mark.parametrize("raw, expected", [("", {}), ("team=ml, ci.job=12", {"team": "ml", "ci.job": "12"}),
                                          ("dockertask.user.x=1", {"dockertask.user.x": "1"})])
def test_dockertask_labels_parse(raw: str, expected: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """key=value pairs, comma-separated."""
    from dockertask.host import owner

    monkeypatch.setenv("DOCKERTASK_LABELS", raw)
    assert owner.extra_labels() == expected


@pytest.mark.parametrize("raw", ["novalue", "dockertask.run-id=x", "=x"])
def test_dockertask_labels_that_would_clash_are_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed pair, or one in dockertask's own namespace, is a clear error."""
    from dockertask import TaskDefinitionError
    from dockertask.host import owner

    monkeypatch.setenv("DOCKERTASK_LABELS", raw)
    with pytest.raises(TaskDefinitionError, match="DOCKERTASK_LABELS"):
        owner.extra_labels()


@pytest.mark.parametrize("outcome", [
    crashed(127, ""), crashed(1, "ERROR (catatonit:6): failed to exec pid1: No such file or directory"),
    ContainerOutcome("c", 1, logs_tail="Error: write unixpacket @->/proc/self/fd/13/attach: write: broken pipe",
                     no_python=True)], ids=["tini", "catatonit", "words-lost"])
def test_an_image_without_python_is_named_whatever_init_said_so(fake: FakeBackend, outcome: ContainerOutcome) -> None:
    """tini's exit 127 and Podman catatonit's 'failed to exec pid1' both mean python3 is missing, as does the
    backend's look at the container's PATH when those words were lost (CI saw Podman's attach end with its own
    'broken pipe' instead): not retried."""
    from dockertask import PythonVersionError

    fake.outcomes = [outcome]
    with pytest.raises(PythonVersionError, match="has no Python"):
        flaky(1)
    assert len(fake.jobs) == 1


class BadInput(dockertask.NonRecoverableError):
    pass


def test_an_error_derived_from_non_recoverable_error_is_not_retried(fake: FakeBackend) -> None:
    """retries=2, but the task said another attempt cannot help: one container, its error raised."""
    fake.outcomes = [raised(BadInput("the file is not a CSV")), ok(1), ok(1)]
    with pytest.raises(BadInput, match="not a CSV"):
        flaky(1)
    assert len(fake.jobs) == 1
    fake.outcomes = [raised(ValueError("transient")), ok(7)]
    assert flaky(1) == 7 and len(fake.jobs) == 3  # any other error is retried as before
