"""The host's side of ``pytest --dockertask-image=REF``: a whole suite in containers, reported here.

As pytest-xdist's controller does: the host collects (so ``-k``, ``-m``, ``--lf``, ``--deselect`` and
plugins choose as usual), then hands the selected node ids to workers and feeds every report they send
back to its own hooks (``pytest_runtest_logstart/logreport/logfinish``, ``pytest_collectreport``,
``pytest_warning_recorded``): the terminal report, ``-x``, ``--lf``'s cache, ``--junitxml`` and the exit
code are the host's, made from the container's outcomes.

A worker is one isolated task call (calls/executors: its container, labels, limits, Ctrl-C and gc are
every task's) of ``runtime/pytestworker.run`` on the suite image (checkout.py), which runs pytest there.
Its messages arrive as the call's output lines, live; a queue brings them to this thread, the only one
that calls pytest's hooks.

Isolation: ``session`` (one container per worker, tests share its process as in a plain run),
``process`` (the worker forks each test from its collected state), ``container`` (a container per
test). ``-n N`` runs N workers; a worker gets whole files, in collection order, so module and class
fixtures are set up as often as in a plain run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sys
from pathlib import Path
from typing import Any, Literal

import pytest

from dockertask.errors import DockerTaskError

ISOLATIONS = ("session", "process", "container")
HOST_MARKER = "dockertask_host"
NETWORK_FIXTURE = "dockertask_network"
SECRETS_FIXTURE = "dockertask_secrets"
# Host options that are the host's business, with whether each takes a value: the worker is given the
# rest of the command line (paths, -x/--maxfail, -p, -o, -W, --tb, --import-mode, -s...).
_HOST_ONLY = {
    "--dockertask-image": True, "--dockertask-isolation": True, "-n": True, "--numprocesses": True,
    "--dist": True, "--maxprocesses": True, "--tx": True, "--rsyncdir": True, "--junitxml": True,
    "--junit-xml": True, "--junitprefix": True, "--junit-prefix": True, "--lfnf": True,
    "--last-failed-no-failures": True, "--basetemp": True, "--html": True, "--durations": True,
    "--durations-min": True, "--lf": False, "--last-failed": False, "--ff": False, "--failed-first": False,
    "--nf": False, "--new-first": False, "--sw": False, "--stepwise": False, "--sw-skip": False,
    "--stepwise-skip": False, "--cache-clear": False, "--pdb": False, "--trace": False, "--looponfail": False,
    "-f": False, "--co": False, "--collect-only": False, "--collectonly": False, "--cache-show": False,
}
_MARK = "\x1edockertask-pytest "


@dataclasses.dataclass
class Options:
    image: str | None  # None: the default image (marked tests without --dockertask-image)
    isolation: str
    workers: int


def worker_args(args: list[str]) -> list[str]:
    """The host's command line without what only the host does (see _HOST_ONLY)."""
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        name, eq, _ = arg.partition("=")
        if name in _HOST_ONLY:
            skip_value = _HOST_ONLY[name] and not eq
            continue
        if arg.startswith("-n") and arg[2:].isdigit() or arg in ("-nauto", "-nlogical"):
            continue
        kept.append(arg)
    return kept


def split(items: list[pytest.Item], workers: int, isolation: str) -> list[list[pytest.Item]]:
    """Items into groups, one a worker: whole files, in order, balanced by count; a test each for
    ``container`` isolation."""
    if isolation == "container":
        return [[item] for item in items]
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    groups: list[list[pytest.Item]] = [[] for _ in range(max(1, min(workers, len(files))))]
    for members in sorted(files.values(), key=len, reverse=True):
        min(groups, key=len).extend(members)
    order = {id(item): i for i, item in enumerate(items)}
    for group in groups:
        group.sort(key=lambda item: order[id(item)])
    return [g for g in groups if g]


def _path_arg(config: pytest.Config, nodeid: str) -> str:
    """A node id (rootdir-relative) as a command-line path that selects that test alone."""
    _, sep, rest = nodeid.partition("::")
    return _file_of(config, nodeid) + sep + rest


def _file_of(config: pytest.Config, nodeid: str) -> str:
    """The file that holds the node id's test, as an absolute path."""
    return os.path.join(str(config.rootpath), nodeid.partition("::")[0])


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """What JSON made lists of and pytest reads as tuples: a report's location, a skip's (path, line,
    reason) and each captured section (execnet, which xdist uses, keeps tuples)."""
    for key in ("location", "longrepr"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    if isinstance(data.get("sections"), list):
        data["sections"] = [tuple(s) if isinstance(s, list) else s for s in data["sections"]]
    return data


def _service_fixtures(name2fixturedefs: dict[str, Any], roots: tuple[str, ...] = (NETWORK_FIXTURE,)) -> set[str]:
    """The names in a test's fixture closure that are, or depend on, one of ``roots``: fixtures that act
    on the host's behalf (start services on its engine, set its tasks' secrets)."""
    memo: dict[str, bool] = {}

    def uses(name: str, seen: frozenset[str]) -> bool:
        if name in roots:
            return True
        if name not in memo:
            defs: Any = name2fixturedefs.get(name) or ()
            memo[name] = bool(defs) and name not in seen and any(
                uses(arg, seen | {name}) for arg in defs[-1].argnames)
        return memo[name]

    return {name for name in name2fixturedefs if uses(name, frozenset())}


def _host_value(item: pytest.Item, name: str) -> Any:
    """A host fixture's value for ``item``, set up here, as the containers get it: the network by name."""
    value = item._request.getfixturevalue(name)  # type: ignore[attr-defined]
    return getattr(value, "name", value) if name == NETWORK_FIXTURE else value


def _named(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


class _HostFixtureError(Exception):
    """A host fixture of a marked test failed (or its value cannot be sent): the test's error."""


def _picklable(value: Any) -> bool:
    import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception:  # noqa: BLE001 - any failure: this is the value that cannot go
        return False
    return True


def _on_network(task_config: Any, network: str) -> Any:
    from dockertask.plugins import Docker

    if task_config is None:
        return Docker(network=network)
    if isinstance(task_config, Docker):
        if task_config.network not in (None, network):
            raise DockerTaskError(f"the test uses {NETWORK_FIXTURE} but its task_config asks for network "
                                  f"{task_config.network!r}; drop one of the two")
        return dataclasses.replace(task_config, network=network)
    raise DockerTaskError(f"the test uses {NETWORK_FIXTURE}, which needs task_config=Docker(...) or none, "
                          f"not {type(task_config).__qualname__}")


class _Worker:
    """One worker call's messages, put together from their pieces."""

    def __init__(self, index: int, items: list[pytest.Item], inbox: queue.Queue[Any]) -> None:
        self.index = index
        self.items = items
        self.inbox = inbox
        self.partial = ""
        self.live = False  # -s: what the tests print is shown as it comes
        self.stderr: list[str] = []
        self.finished: set[str] = set()

    def sink(self, stream: str, line: str) -> None:
        if stream == "stdout" and line.startswith(_MARK):
            body = line[len(_MARK):].rstrip("\r\n")
            self.partial += body[1:]
            if body[:1] == "=":
                text, self.partial = self.partial, ""
                self.inbox.put(("message", self.index, text))
            return
        if self.live:
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
            sys.stdout.flush()
        self.stderr.append(line.rstrip("\n"))
        del self.stderr[:-40]


class SuiteRun:
    """Runs the session's container tests; ``run`` is called from pytest_runtestloop."""

    def __init__(self, session: pytest.Session, options: Options, loaded_first: frozenset[str]) -> None:
        self.loaded_first = loaded_first
        self.session = session
        self.config = session.config
        self.options = options
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.collect_failures: list[str] = []  # node ids of modules/classes the container could not collect
        self.stopped = False
        self.images: dict[str, str | DockerTaskError] = {}  # base image -> its suite image, or why none
        self.supplied: Any = None  # checkout.Supply, computed once

    # -- hooks on the host, from the workers' messages ----------------------------------------------

    def _handle(self, worker: _Worker, text: str) -> None:
        message = json.loads(text)
        kind = message.get("t")
        hook = self.config.hook
        if self.stopped and kind in ("start", "report", "finish"):
            return
        if kind == "start":
            hook.pytest_runtest_logstart(nodeid=message["nodeid"], location=tuple(message["location"]))
        elif kind == "report":
            report = hook.pytest_report_from_serializable(config=self.config, data=_tuples(message["report"]))
            hook.pytest_runtest_logreport(report=report)
        elif kind == "finish":
            worker.finished.add(message["nodeid"])
            hook.pytest_runtest_logfinish(nodeid=message["nodeid"], location=tuple(message["location"]))
            self._check_stop()
        elif kind == "collect":
            report = hook.pytest_report_from_serializable(config=self.config, data=_tuples(message["report"]))
            self.collect_failures.append(report.nodeid)
            hook.pytest_collectreport(report=report)
        elif kind == "warning":
            self._warning(message)

    def _warning(self, message: dict[str, Any]) -> None:
        import builtins
        import warnings

        category = getattr(builtins, str(message.get("category")), None)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        warning = warnings.WarningMessage(message=category(message.get("message", "")), category=category,
                                          filename=message.get("filename") or "?", lineno=message.get("lineno") or 0)
        self.config.hook.pytest_warning_recorded.call_historic(kwargs={
            "warning_message": warning, "when": message.get("when", "runtest"), "nodeid": message.get("nodeid", ""),
            "location": None})

    def _check_stop(self) -> None:
        if self.session.shouldfail or self.session.shouldstop:
            self.stopped = True

    def _fail(self, item: pytest.Item, why: str) -> None:
        """A host-made report for a test the container did not report on (its worker died, or it was not
        collected there)."""
        self._host_report(item, "failed", why, "call")
        self._check_stop()

    def _skip(self, item: pytest.Item, why: str) -> None:
        path, lineno, _ = item.location
        self._host_report(item, "skipped", (str(path), (lineno or 0) + 1, why))

    def _host_report(self, item: pytest.Item, outcome: Any, longrepr: Any,
                     when: Literal["setup", "call"] = "setup") -> None:
        """A test's whole report made here: start, the report in its phase (a failed setup is an error, a
        failed call a failure, as pytest counts them), finish."""
        from _pytest.reports import TestReport

        hook = self.config.hook
        hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        phases: list[tuple[Literal["setup", "call", "teardown"], Any, Any]] = [(when, outcome, longrepr)]
        if when == "call":
            phases = [("setup", "passed", None), *phases, ("teardown", "passed", None)]
        for phase, result, text in phases:
            hook.pytest_runtest_logreport(report=TestReport(item.nodeid, item.location, {}, result, text, phase))
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    # -- the run ------------------------------------------------------------------------------------

    def run(self, items: list[pytest.Item], engine_problem: str | None) -> None:
        if not items:
            return
        if engine_problem is not None:
            reason = f"dockertask: no Docker engine: {engine_problem}"
            if os.environ.get("DOCKERTASK_REQUIRE_ENGINE") == "1":
                for item in items:  # an error at its setup, as a fixture that cannot be had
                    self._host_report(item, "failed", reason + " (DOCKERTASK_REQUIRE_ENGINE=1)")
                    self._check_stop()
                return
            for item in items:
                self._skip(item, reason)
            return
        items, services, network = self._services(items)
        if not items:
            return
        try:
            task, spec = self._prepare(network)
        except DockerTaskError as exc:
            # Once, for the session: a build that failed is not tried again for every test.
            raise self.session.Interrupted(f"dockertask: {exc}") from None
        if services is not None:
            spec["services"], spec["network"] = services, network
        groups = split(items, self.options.workers, self.options.isolation)
        workers = [_Worker(i, g, self.inbox) for i, g in enumerate(groups)]
        self._run_workers(task, spec, workers)

    def _services(self, items: list[pytest.Item]) -> tuple[list[pytest.Item], bytes | None, str | None]:
        """Service fixtures, set up here: a fixture that uses ``dockertask_network`` (or that fixture
        itself) drives Docker, which a container test cannot, so it runs on the host once for the session,
        and the workers join the network and get its value (pickled; their own copy of the fixture is not
        run). Returns the tests still to run (those whose service failed were reported as errors), the
        pickled values and the network's name."""
        needs: dict[str, list[pytest.Item]] = {}
        for item in items:
            info = getattr(item, "_fixtureinfo", None)
            if info is None:
                continue
            for name in _service_fixtures(info.name2fixturedefs):
                needs.setdefault(name, []).append(item)
        if not needs:
            return items, None, None
        setupstate = self.session._setupstate
        if self.session not in setupstate.stack:  # the session's own finalizers tear the services down
            setupstate.setup(self.session)  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        failed: dict[int, Any] = {}
        for name, users in needs.items():
            first = users[0]
            fixturedef = first._fixtureinfo.name2fixturedefs[name][-1]  # type: ignore[attr-defined]
            try:
                if fixturedef.scope != "session":
                    raise DockerTaskError(
                        f"fixture {name!r} uses {NETWORK_FIXTURE}, so with --dockertask-image it is set up on the "
                        f"host, once, for the tests in containers: it must be scope='session' (it is "
                        f"{fixturedef.scope!r})")
                values[name] = _host_value(first, name)
            except Exception as exc:  # noqa: BLE001 - the tests that need it fail with it, as pytest would
                why = f"dockertask: service fixture {name!r}, set up on the host: {type(exc).__name__}: {exc}"
                for user in users:
                    failed.setdefault(id(user), why)
        for item in items:
            if id(item) in failed:
                self._host_report(item, "failed", failed[id(item)])
                self._check_stop()
        return [item for item in items if id(item) not in failed], self._pickled(values), values.get(NETWORK_FIXTURE)

    def _prepare(self, network: str | None = None, kwargs: dict[str, Any] | None = None,
                 name: str | None = None) -> tuple[Any, dict[str, Any]]:
        """The worker task and its spec: ``kwargs`` are @task's keywords (a marker's), on a suite image of
        their container_image (made once per image a session)."""
        from dockertask import tasks
        from dockertask.backends import default_backend
        from dockertask.calls import executors
        from dockertask.images import refs
        from dockertask.pytest import checkout
        from dockertask.runtime import pytestworker

        kwargs = dict(kwargs or {})
        kwargs.setdefault("container_image", self.options.image)
        if network is not None:  # the service fixtures' containers answer by alias there
            kwargs["task_config"] = _on_network(kwargs.get("task_config"), network)
        # A whole-suite worker takes none of the project's task defaults (a 30-minute timeout meant for its
        # tasks would end the session); a marked test is a task with settings, and takes them as one does.
        make = tasks.task if name is not None else tasks.task_without_project_defaults
        try:
            made = make(**kwargs)(pytestworker.run)
        except TypeError as exc:
            if "unexpected keyword" not in str(exc):
                raise
            raise DockerTaskError(f"@pytest.mark.dockertask: {exc}; it takes @dockertask.task's keywords") from None
        rootdir = Path(os.path.realpath(self.config.rootpath))
        base = refs.resolve(made.spec.container_image)
        if base not in self.images:
            try:
                backend = default_backend()
                if made.image_spec is not None:
                    from dockertask.images.imagespec import build

                    build(made.image_spec, backend)
                else:
                    executors.ensure_image(backend, base)
                self.images[base] = checkout.suite_image(backend, base, rootdir, self._supplied(rootdir))
            except DockerTaskError as exc:
                self.images[base] = exc  # once a session: a build that failed is not tried for every test
        image = self.images[base]
        if isinstance(image, DockerTaskError):
            raise image
        supplied = self._supplied(rootdir)
        args = worker_args(list(self.config.invocation_params.args))
        extra = ["-p", "no:dockertask", "-p", "no:xdist", "--rootdir", str(rootdir)]
        if self.config.inipath is not None:
            extra += ["-c", str(self.config.inipath)]
        # The command line without its paths (what pytest took as paths: config.args), for single tests.
        paths = set(self.config.args)
        options = [a for a in args if a not in paths] + extra
        args += extra
        cwd = str(self.config.invocation_params.dir)
        # `python -m pytest` puts the working directory first on sys.path, the `pytest` script does not.
        path = ([cwd] if {"", cwd} & set(sys.path) else []) + supplied.path
        spec = {"rootdir": str(rootdir), "cwd": cwd, "path": path, "site": checkout.SITE,
                "compiled": supplied.compiled, "probe": supplied.probe, "args": args, "options": options,
                "isolation": "process" if self.options.isolation == "process" else "session"}
        made = make(**{**kwargs, "container_image": image})(pytestworker.run)
        # Named after the suite (or the test), so labels and `dockertask gc` say whose container it is.
        task = tasks.Task(made.function, dataclasses.replace(made.spec, name=name or f"pytest:{rootdir.name}"),
                          made.container_options, made.image_spec)
        return task, spec

    def _supplied(self, rootdir: Path) -> Any:
        from dockertask.pytest import checkout

        if self.supplied is None:
            plugins = tuple(getattr(plugin, "__name__", "").split(".")[0]
                            for plugin, _ in self.config.pluginmanager.list_plugin_distinfo())
            self.supplied = checkout.supply(rootdir, self.loaded_first, plugins)
        return self.supplied

    # -- marked tests: each in a container of its own ------------------------------------------------

    def fail_alone(self, item: pytest.Item, exc: DockerTaskError) -> None:
        self._fail(item, _named(exc))

    def run_marked(self, item: pytest.Item, nextitem: pytest.Item | None, kwargs: dict[str, Any],
                   engine_problem: str | None) -> None:
        """One marked test, in a container of its own with the marker's settings (``kwargs``): its
        host fixtures (services, test secrets) set up here, as pytest would, torn down after it."""
        if engine_problem is not None:
            self.run([item], engine_problem)
            return
        try:
            blob, network = self._host_fixtures(item)
            function = getattr(item, "obj", None)
            name = f"{function.__module__}.{getattr(function, '__qualname__', item.name)}" if function else item.name
            task, spec = self._prepare(network, kwargs, name=name)
        except DockerTaskError as exc:
            self.fail_alone(item, exc)
        except _HostFixtureError as exc:
            self._host_report(item, "failed", str(exc))
            self._check_stop()
        else:
            spec["services"], spec["network"] = blob, network
            self._run_workers(task, spec, [_Worker(0, [item], self.inbox)])
        finally:
            self.session._setupstate.teardown_exact(nextitem)

    def _host_fixtures(self, item: pytest.Item) -> tuple[bytes | None, str | None]:
        """A marked test's fixtures that act on the host's behalf, set up for it as pytest's setup would
        (its collectors entered, not set up: their own setup is the container's), of any scope."""
        info = getattr(item, "_fixtureinfo", None)
        names = _service_fixtures(info.name2fixturedefs, (NETWORK_FIXTURE, SECRETS_FIXTURE)) if info else set()
        if not names:
            return None, None
        setupstate = self.session._setupstate
        for node in item.listchain():
            if node not in setupstate.stack:
                setupstate.stack[node] = ([node.teardown], None)
        values: dict[str, Any] = {}
        for fixture in sorted(names):
            try:
                values[fixture] = _host_value(item, fixture)
            except Exception as exc:  # noqa: BLE001 - the test's error, as pytest would report it
                raise _HostFixtureError(f"dockertask: fixture {fixture!r}, set up on the host: "
                                        f"{type(exc).__name__}: {exc}") from None
        # One test's fixtures: a value that cannot be sent fails that test, not the session.
        return self._pickled(values, _HostFixtureError), values.get(NETWORK_FIXTURE)

    def _pickled(self, values: dict[str, Any], error: type[BaseException] | None = None) -> bytes:
        """The fixtures' values for the containers; one that cannot be pickled is ``error`` (the session's
        Interrupted for what every worker shares), naming the fixture and what to return instead."""
        import cloudpickle

        sent = {k: v for k, v in values.items() if k != NETWORK_FIXTURE}
        try:
            return cloudpickle.dumps(sent)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - which fixture, and what to return instead
            culprit = next((k for k, v in sorted(sent.items()) if not _picklable(v)), "?")
            raise (error or self.session.Interrupted)(
                f"dockertask: fixture {culprit!r}'s value, set up on the host, cannot be sent to the containers "
                f"({type(exc).__name__}: {exc}): return what a test needs to reach the service (a URL, host and "
                "port by alias)") from None

    def _run_workers(self, task: Any, spec: dict[str, Any], workers: list[_Worker]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from dockertask.calls import runner

        def one(worker: _Worker) -> None:
            try:
                if self.stopped:
                    self.inbox.put(("done", worker.index, {"skipped": True}))
                    return
                job = dict(spec, nodeids=[item.nodeid for item in worker.items])
                if self.options.isolation == "container":
                    # A container for one test collects that test alone (its node id as the path), not the
                    # whole suite: the suite's collection each time was most of a test's cost.
                    job["args"] = [*spec["options"], _path_arg(self.config, worker.items[0].nodeid)]
                elif len(workers) > 1:  # one of -n N: it imports only the test files of its own tests
                    job["files"] = sorted({_file_of(self.config, item.nodeid) for item in worker.items})
                result = runner.call(task, (job,), {}, warn=False, output=worker.sink)
                self.inbox.put(("done", worker.index, result))
            except BaseException as exc:  # noqa: BLE001 - every end of a worker is reported on this thread
                self.inbox.put(("done", worker.index, exc))

        from dockertask.host import lifecycle

        # Ctrl-C kills the worker containers (the calls run on threads, where no handler can be installed).
        lifecycle.install_signal_handlers()
        for worker in workers:
            worker.live = self.config.getoption("capture", None) == "no"
        parallel = max(1, self.options.workers)
        pending = len(workers)
        missing: list[str] = []
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="dockertask-pytest") as pool:
            for worker in workers:
                pool.submit(one, worker)
            while pending:
                kind, index, payload = self.inbox.get()
                worker = workers[index]
                if kind == "message":
                    self._handle(worker, payload)
                    continue
                pending -= 1
                missing += self._done(worker, payload)
        if missing:
            raise self.session.Interrupted(
                "dockertask: the image lacks " + ", ".join(sorted(set(missing))) + ", which the session uses and "
                "which cannot be supplied from the host (compiled or platform-bound): install it in the image")

    def _done(self, worker: _Worker, result: Any) -> list[str]:
        """A worker ended: tests it never reported on are failed, with why; the modules the image lacks."""
        if isinstance(result, dict) and result.get("missing"):
            return list(result["missing"])
        if isinstance(result, dict) and result.get("skipped"):
            return []
        if self.stopped:
            return []
        if isinstance(result, BaseException):
            if isinstance(result, KeyboardInterrupt):
                raise result
            tail = "\n".join(worker.stderr[-20:])
            why = f"{_named(result)}\n(its container ended before reporting this test)"
            why += f"\n{tail}" if tail else ""
        else:
            why = "it was not collected in the container (same node id, in the image)"
        for item in worker.items:
            if item.nodeid in worker.finished:
                continue
            if any(item.nodeid.startswith(prefix + "::") or item.nodeid == prefix or not prefix
                   for prefix in self.collect_failures):
                continue  # its module's collection error in the container was reported: that is its outcome
            self._fail(item, why)
        return []
