"""The ``dockertask`` pytest plugin: ``@pytest.mark.dockertask(**task_kwargs)`` runs a test body
in a container. Registered through the ``pytest11`` entry point; it does nothing unless a test
carries the marker or asks for one of its fixtures.

How a marked test runs::

    host (pytest)   fixtures run as usual → the test function (pytest's rewritten code) and the
                    fixture values are pickled, project modules by reference (pytest/shipping.py)
                    → a task of the marker's keywords runs testbody.run_test(blob, sources, roots)
    container       the project's sources are importable from a zip; pytest's assertion helpers
                    come from the image, or from _assertrepr when it has no pytest
    host            an exception comes back as its own type; its container traceback becomes host
                    frames (pytest/tracebacks.py), so pytest reports it like any local failure

Options, markers and state follow pytest's own plugins: one ``pytest_addoption``, one
``pytest_configure``, state on ``config.stash``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockertask.errors import DockerTaskError
from dockertask.host import owner
from dockertask.pytest import suite

# The modules loaded before any conftest or test module: the host's, not the suite's (checkout.supply).
_LOADED_FIRST = frozenset(sys.modules)
MARKER = "dockertask"
NETWORK_FIXTURE = suite.NETWORK_FIXTURE
NETWORK_LABEL = "dockertask.network"


@dataclasses.dataclass
class _State:
    """Per-session state: the engine check and the project's sources, each computed once."""

    image: str | None
    engine_problem: str | None = None
    engine_checked: bool = False
    archive: bytes | None = None
    roots: list[str] = dataclasses.field(default_factory=list)
    suite: suite.Options | None = None  # --dockertask-image: the whole suite in containers


_STATE = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dockertask", "dockertask: tests in containers")
    group.addoption("--dockertask-image", metavar="REF", default=None,
                    help="run every collected test in a container of this image (a reference or a "
                         "{{.image.NAME...}} template); @pytest.mark.dockertask_host keeps one on the host")
    group.addoption("--dockertask-isolation", metavar="MODE", default=None, choices=suite.ISOLATIONS,
                    help="with --dockertask-image: session (one container per worker, the default), process (a "
                         "fresh process per test) or container (a fresh container per test)")
    parser.addini("dockertask_image", "run every collected test in a container of this image "
                  "(as --dockertask-image)")
    parser.addini("dockertask_isolation", "session, process or container (as --dockertask-isolation)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**task_kwargs): run the test body in a container; takes @dockertask.task's keywords "
        "(container_image, limits, requests, environment, secret_requests, timeout, retries, task_config...)")
    config.addinivalue_line(
        "markers", f"{suite.HOST_MARKER}: with --dockertask-image, run this test on the host (one that drives "
        "Docker or calls tasks itself)")
    image = config.getoption("dockertask_image") or config.getini("dockertask_image") or None
    state = _State(image=image)
    config.stash[_STATE] = state
    if image is None:
        return
    isolation = config.getoption("dockertask_isolation") or config.getini("dockertask_isolation") or "session"
    if isolation not in suite.ISOLATIONS:
        raise pytest.UsageError(f"dockertask_isolation = {isolation!r}: expected one of "
                                f"{', '.join(suite.ISOLATIONS)}")
    # -n N (pytest-xdist) means N worker containers here, not N host processes: xdist's distribution is
    # turned off (its configure runs last and looks at these), and the count is ours.
    workers = getattr(config.option, "numprocesses", None) or 1
    if hasattr(config.option, "dist"):
        config.option.dist = "no"
        config.option.tx = []
    state.suite = suite.Options(image=image, isolation=isolation, workers=int(workers))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """With --dockertask-image the host only collects: it runs no test module's asserts (the container's
    pytest rewrites them where they run), so it imports them without rewriting: that was two thirds of
    the host's collection of boltons (3.5 s → 1.0 s). Tests kept on the host assert plainly."""
    image = getattr(early_config.known_args_namespace, "dockertask_image", None)
    if not image:
        try:
            image = early_config.getini("dockertask_image")
        except ValueError:
            image = None
    if image:
        from _pytest.assertion.rewrite import AssertionRewritingHook

        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AssertionRewritingHook)]


def pytest_report_header(config: pytest.Config) -> str | None:
    image = config.stash[_STATE].image
    if image is None:
        return None
    from dockertask.images.refs import resolve

    try:
        resolved = resolve(image)
    except DockerTaskError as exc:
        return f"dockertask: --dockertask-image={image}: {exc}"
    return f"dockertask: image {image if resolved == image else f'{image} = {resolved}'}"


def _in_container(item: pytest.Item) -> bool:
    """With --dockertask-image: whether the suite's workers run this test (not the host)."""
    return item.get_closest_marker(suite.HOST_MARKER) is None and item.get_closest_marker(MARKER) is None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    options = session.config.stash[_STATE].suite
    if options is None or session.config.option.collectonly:
        return
    inside = sum(1 for item in session.items if _in_container(item))
    own = sum(1 for item in session.items if item.get_closest_marker(MARKER) is not None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        workers = f", {options.workers} workers" if options.workers > 1 else ""
        marked = f", {own} in containers of their own (@pytest.mark.{MARKER})" if own else ""
        reporter.write_line(f"dockertask: {inside} tests run in containers of {options.image} (isolation "
                            f"{options.isolation}{workers}){marked}, {len(session.items) - inside - own} on the host")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """With --dockertask-image: the container tests go to the suite's workers (suite.py), then the rest
    (marked dockertask_host, or marked dockertask: a container of its own) run here as usual."""
    options = session.config.stash[_STATE].suite
    if options is None or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} "
                                  "during collection")
    inside = [item for item in session.items if _in_container(item)]
    here = [item for item in session.items if not _in_container(item)]
    problem = _engine_problem(session.config) if inside else None
    suite.SuiteRun(session, options, _LOADED_FIRST).run(inside, problem)
    for i, item in enumerate(here):
        if session.shouldfail or session.shouldstop:
            break
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=here[i + 1] if i + 1 < len(here) else None)
    if session.shouldfail:
        raise session.Failed(session.shouldfail)
    if session.shouldstop:
        raise session.Interrupted(session.shouldstop)
    return True


def _engine_problem(config: pytest.Config) -> str | None:
    state = config.stash[_STATE]
    if not state.engine_checked:
        state.engine_checked = True
        from dockertask.backends import default_backend

        try:
            default_backend().engine_info()
        except DockerTaskError as exc:
            state.engine_problem = str(exc)
    return state.engine_problem


def _require_engine(config: pytest.Config) -> None:
    """Skip (or, with DOCKERTASK_REQUIRE_ENGINE=1, fail) when no engine answers; checked once."""
    problem = _engine_problem(config)
    if problem is not None:
        reason = f"dockertask: no Docker engine: {problem}"
        if os.environ.get("DOCKERTASK_REQUIRE_ENGINE") == "1":
            pytest.fail(reason + " (DOCKERTASK_REQUIRE_ENGINE=1)", pytrace=False)
        pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is not None:
        _require_engine(item.config)


def _task_kwargs(item: pytest.Function) -> dict[str, Any]:
    """The marker's keywords, nearer markers (the function's) over farther ones (class, module)."""
    kwargs: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers(MARKER))):
        if mark.args:
            raise DockerTaskError(f"{item.nodeid}: @pytest.mark.{MARKER} takes keyword arguments only "
                                  f"(those of @dockertask.task), got positional {mark.args!r}")
        kwargs.update(mark.kwargs)
    state = item.config.stash[_STATE]
    if state.image is not None and "container_image" not in kwargs:
        kwargs["container_image"] = state.image
    if NETWORK_FIXTURE in item.fixturenames:
        network: Any = item.funcargs[NETWORK_FIXTURE]
        kwargs["task_config"] = _on_network(kwargs.get("task_config"), network.name, item.nodeid)
    return kwargs


def _on_network(task_config: Any, network: str, nodeid: str) -> Any:
    from dockertask.plugins import Docker

    if task_config is None:
        return Docker(network=network)
    if isinstance(task_config, Docker):
        if task_config.network not in (None, network):
            raise DockerTaskError(f"{nodeid}: uses {NETWORK_FIXTURE} but its task_config asks for network "
                                  f"{task_config.network!r}; drop one of the two")
        return dataclasses.replace(task_config, network=network)
    raise DockerTaskError(f"{nodeid}: uses {NETWORK_FIXTURE}, which needs task_config=Docker(...) or none, "
                          f"not {type(task_config).__qualname__}")


def _make_task(item: pytest.Function, kwargs: dict[str, Any]) -> Any:
    from dockertask import tasks
    from dockertask.runtime import testbody

    try:
        made = tasks.task(**kwargs)(testbody.run_test)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise DockerTaskError(f"{item.nodeid}: @pytest.mark.{MARKER}: {exc}; it takes @dockertask.task's "
                                  "keywords") from None
        raise
    # Named after the test, so labels, errors and output say which test a container belongs to.
    function = item.obj
    name = f"{function.__module__}.{getattr(function, '__qualname__', item.name)}"
    return tasks.Task(made.function, dataclasses.replace(made.spec, name=name), made.container_options,
                      made.image_spec)


def _project(config: pytest.Config) -> tuple[bytes, list[str]]:
    state = config.stash[_STATE]
    if state.archive is None:
        from dockertask.pytest.shipping import project_archive, project_roots

        rootdir = Path(os.path.realpath(config.rootpath))
        state.roots = project_roots(rootdir)
        state.archive = project_archive(rootdir)
    return state.archive, state.roots


def _source_files(item: pytest.Function, rootdir: Path) -> list[str]:
    """Host files the container's by-value code can come from: the test's own first, then the project's."""
    import sys

    from dockertask.pytest.shipping import _real

    first = _real(str(item.path))
    files = [first]
    prefix = str(rootdir) + os.sep
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and file.endswith(".py"):
            real = _real(file)
            if real.startswith(prefix) and real not in files:
                files.append(real)
    return files


def run_in_container(item: pytest.Function) -> None:
    """Run ``item``'s body in a container; its failure is raised with the container's frames."""
    __tracebackhide__ = True
    import tempfile

    from dockertask.errors import RemoteTraceback
    from dockertask.files import File
    from dockertask.pytest.shipping import pack_test
    from dockertask.pytest.tracebacks import relocate

    rootdir = Path(os.path.realpath(item.config.rootpath))
    try:
        test_task = _make_task(item, _task_kwargs(item))
        archive, roots = _project(item.config)
        fixtures = {arg: item.funcargs[arg] for arg in item._fixtureinfo.argnames}
        with tempfile.NamedTemporaryFile(prefix="dockertask-test-", suffix=".pickle") as blob:
            pack_test(item.obj, fixtures, rootdir, roots, item.nodeid, blob)
            blob.flush()
            test_task(File(blob.name), archive, roots)
    except DockerTaskError as exc:  # timeout, OOM, image, engine, bad marker: dockertask's word, no frames of ours
        raise exc.with_traceback(None)  # noqa: B904 - its own message is the whole story
    except Exception as exc:
        if not isinstance(exc.__cause__, RemoteTraceback):
            raise  # not the test's failure: a fault of ours, shown with every frame
        if not relocate(exc, rootdir, _source_files(item, rootdir)):
            # Nothing of the project's in its traceback: the container's text (its __cause__) is the story.
            exc.with_traceback(None)
        raise exc from exc.__cause__


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker(MARKER) is None:
        return None
    __tracebackhide__ = True
    run_in_container(pyfuncitem)
    return True


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def dockertask_network(pytestconfig: pytest.Config) -> Iterator[Any]:
    """A throw-away ``testcontainers`` Network for this session (one per xdist worker).

    Join service containers to it (``.with_network(net).with_network_aliases("db")``): marked tests
    that use this fixture, and tasks run with ``task_config=Docker(network=net.name)``, reach them by
    alias. With --dockertask-image, it and the (session-scoped) fixtures that use it run here on the
    host, and the suite's worker containers join the network (suite.SuiteRun._services). On teardown every container still attached is removed with the network; after a kill -9,
    ``dockertask gc`` does the same. Ryuk is turned off when its image is not on the engine.
    """
    _require_engine(pytestconfig)
    try:
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.network import Network
    except ModuleNotFoundError:
        pytest.fail(f"{NETWORK_FIXTURE} needs testcontainers: pip install 'dockertask[testing]'", pytrace=False)
    from dockertask.backends import default_backend

    backend = default_backend()
    ryuk_image = testcontainers_config.ryuk_image
    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ and backend.image_info(ryuk_image) is None:
        # Its reaper cannot be pulled here; our label-based cleanup stands in for it (see docstring).
        testcontainers_config.ryuk_disabled = True
    network = Network(docker_network_kw={"labels": {NETWORK_LABEL: "pytest", **owner.owner_labels()}})
    network.create()
    try:
        yield network
    finally:
        backend.remove_network(network.name)


@pytest.fixture
def dockertask_local() -> Iterator[None]:
    """Every task called during the test runs in-process (``t.local``): no Docker needed."""
    from dockertask.testing import run_locally

    with run_locally():
        yield


@pytest.fixture
def dockertask_secrets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Secrets for the test only: ``dockertask_secrets.set("db", "password", "pw")``; the host's real
    secrets directory and ``DOCKERTASK_SECRET_*`` variables are out of reach meanwhile."""
    from dockertask.testing import test_secrets

    with test_secrets(tmp_path_factory.mktemp("dockertask-secrets")) as secrets:
        yield secrets
