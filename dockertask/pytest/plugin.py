"""The ``dockertask`` pytest plugin. Registered through the ``pytest11`` entry point; it does nothing
unless asked: ``--dockertask-image=REF`` runs the whole suite in containers of REF (suite.py), and
``@pytest.mark.dockertask(**task_kwargs)`` runs one test in a container of its own with those settings.

Either way pytest itself runs in the container, on the checkout at the same path (checkout.py), and
imports and runs the test there (runtime/pytestworker.py); its reports come back and are this session's.
Fixtures that drive Docker on the host's behalf (``dockertask_network`` and those using it; for a
marked test, ``dockertask_secrets`` too) are set up here and their values sent in.

Options, markers and state follow pytest's own plugins: one ``pytest_addoption``, one
``pytest_configure``, state on ``config.stash``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
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
    marked: suite.SuiteRun | None = None  # runs the marked tests, each in a container of its own
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


def _task_kwargs(item: pytest.Item) -> dict[str, Any]:
    """The marker's keywords, nearer markers (the function's) over farther ones (class, module)."""
    kwargs: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers(MARKER))):
        if mark.args:
            raise DockerTaskError(f"{item.nodeid}: @pytest.mark.{MARKER} takes keyword arguments only "
                                  f"(those of @dockertask.task), got positional {mark.args!r}")
        kwargs.update(mark.kwargs)
    return kwargs


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """A marked test runs in a container of its own with the marker's settings, as a suite's test runs
    with container isolation: pytest in the container imports and runs it (suite.SuiteRun.run_marked),
    and its reports are this session's. In an xdist worker too: this is each item's protocol."""
    if item.get_closest_marker(MARKER) is None:
        return None
    state = item.config.stash[_STATE]
    if state.marked is None:
        options = suite.Options(image=state.image, isolation="container", workers=1)
        state.marked = suite.SuiteRun(item.session, options, _LOADED_FIRST)
    try:
        kwargs = _task_kwargs(item)
    except DockerTaskError as exc:
        state.marked.fail_alone(item, exc)
        return True
    state.marked.run_marked(item, nextitem, kwargs, _engine_problem(item.config))
    return True


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def dockertask_network(pytestconfig: pytest.Config) -> Iterator[Any]:
    """A throw-away ``testcontainers`` Network for this session (one per xdist worker).

    Join service containers to it (``.with_network(net).with_network_aliases("db")``): marked tests
    that use this fixture, and tasks run with ``task_config=Docker(network=net.name)``, reach them by
    alias. With --dockertask-image, it and the (session-scoped) fixtures that use it run here on the
    host, and the suite's worker containers join the network (suite.SuiteRun._services). On teardown
    every container still attached is removed with the network; after a kill -9,
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
