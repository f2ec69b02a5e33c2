"""pytest itself, inside a suite container: the container side of ``pytest --dockertask-image``.

The host collected the suite and decided which tests run where; here the same checkout sits at the
same absolute path (it is in the image), so this process imports the test modules and conftests as
pytest imports them on the host, collects the same node ids, and runs the ones it is given, in order,
with pytest's own runtest protocol: fixtures, capture, tmp_path, hooks, markers, assertion rewriting
all happen here, as in a plain ``python -m pytest`` in this image. What goes back is what pytest-xdist's
workers send their controller: each report in pytest's own serializable form, with the start and finish
of each test, and collection reports that failed, which the host turns into its own report.

Messages are JSON lines on the task's stdout, which is the control channel's framed stream (the host
reads them as the call's output lines, live). pytest's fd-level capture redirects fd 1 during tests;
the stream captured here before pytest starts writes frames on a dup of it, so no test's output can
interleave with a message. Lines are bounded on the host (64 KiB): a long message goes in pieces.

Isolation ``process``: each test runs in a child forked after collection (imports done once, no state
carried from one test to the next); its messages come back over a pipe and are relayed here, and a child
that dies without a report becomes a failed report saying how it died. The next test's child is forked
while the current one runs, and a child is reaped after it said it is done, so fork and exit overlap a
test; what remains is the child's copy-on-write faults (about 1,400 a boltons test, 10 ms of its CPU
against 4 ms unforked), which no arrangement here removes.

Stdlib only at import (see runtime/__init__): pytest is imported inside ``run``.
"""

import json
import os
import sys

MARK = "\x1edockertask-pytest "
PIECE = 30000  # characters of a message per line, under the host's 64 KiB line bound
_DONE = b"done\n"  # a forked test's last line: its messages are all sent (no JSON line is this)


SITE = "/opt/dockertask-pytest/site"  # checkout.SITE: where the suite image has the supplied packages


def preload():
    """In a container started ahead of a worker's call: import pytest while it waits (from the image, or
    from the supplied packages, last on sys.path as ``run`` puts them)."""
    if os.path.isdir(SITE) and SITE not in sys.path:
        sys.path.append(SITE)
    import pytest  # noqa: F401 - and with it _pytest's main, python, fixtures, terminal...


def run(spec):
    """Run the node ids ``spec['nodeids']`` of the checkout at ``spec['rootdir']``. ``spec``: rootdir, cwd,
    path (entries that make the project importable, first on sys.path), site (packages supplied from the
    host: last on sys.path, so the image's own win), compiled (top-level modules the host used that could
    not be supplied), args (pytest's arguments), nodeids, isolation ('session' or 'process')."""
    import importlib.util

    channel = sys.stdout
    for entry in reversed(spec["path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if spec.get("site") and os.path.isdir(spec["site"]) and spec["site"] not in sys.path:
        sys.path.append(spec["site"])
    probe = spec.get("probe") or {}
    missing = [name for name in spec.get("compiled", [])
               if not _importable(name, probe.get(name, [name]), spec.get("site"))]
    if importlib.util.find_spec("pytest") is None:
        missing.insert(0, "pytest")
    if missing:
        return {"missing": missing}
    os.chdir(spec["cwd"])
    os.environ.setdefault("PYTEST_DOCKERTASK_WORKER", "1")
    import pytest

    worker = _Worker(spec, _Lines(channel))
    worker.channel = channel
    plugins = [worker]
    if spec.get("services") is not None:
        plugins.append(_services_plugin(pytest, spec))
    # pytest's own terminal output stays here (the host's reporter shows the results); its stderr lines
    # (a crash of pytest itself) reach the host as the call's output.
    with open(os.devnull, "w") as quiet:
        sys.stdout = quiet
        try:
            code = pytest.main(list(spec["args"]), plugins=plugins)
        finally:
            sys.stdout = channel
    return {"exit": int(code), "ran": worker.ran, "not_found": worker.not_found}


def _importable(name, modules, site):
    """Whether a package the host used with compiled parts works here: the image's own, or the Python
    files supplied without those parts when the modules the host imported of it import without them (a
    package with a pure-Python fallback, like wrapt)."""
    import importlib
    import importlib.util

    found = importlib.util.find_spec(name)
    if found is None:
        return False
    if not site or not (found.origin or "").startswith(site + os.sep):
        return True
    try:
        for module in [name, *modules]:
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - its extension is needed: the host names it as missing
        return False
    return True


def _services_plugin(pytest, spec):
    """The host set up the fixtures that act on its behalf (those using ``dockertask_network``, and for a
    marked test ``dockertask_secrets``); here each of them is its value from the host, and the network
    fixture a stand-in with the network's name (this container is on that network): nothing here starts
    or stops a service. The plugin's own fixtures are defined, as the host's plugin is not loaded here."""
    import pickle
    import types

    state = {}

    def values():
        if "values" not in state:  # after collection: a value's class may come from a conftest
            state["values"] = pickle.loads(spec["services"])
        return state["values"]

    @pytest.fixture(scope="session", name="dockertask_network")
    def network():
        return types.SimpleNamespace(name=spec.get("network"), id=spec.get("network"))

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(fixturedef, request):
        if fixturedef.argname in values():
            value = values()[fixturedef.argname]
            fixturedef.cached_result = (value, fixturedef.cache_key(request), None)
            return value
        return None

    @pytest.fixture(name="dockertask_secrets")
    def test_secrets():
        return values().get("dockertask_secrets")

    plugin = types.ModuleType("dockertask_services")
    plugin.dockertask_network = network
    plugin.dockertask_secrets = test_secrets
    plugin.pytest_fixture_setup = pytest_fixture_setup
    return plugin


class _Lines:
    """Messages as marked JSON lines, in pieces of at most PIECE characters (a '+' says more follows)."""

    def __init__(self, stream):
        self.stream = stream

    def send(self, message):
        self.send_texts([json.dumps(message, ensure_ascii=True, default=str)])

    def send_texts(self, texts):
        """Messages already in JSON, in one write."""
        lines = []
        for text in texts:
            pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]
            for i, piece in enumerate(pieces):
                lines.append(MARK + ("+" if i < len(pieces) - 1 else "=") + piece + "\n")
        self.stream.write("".join(lines))
        self.stream.flush()


class _Pipe:
    """A forked test's messages: JSON lines to its parent, which relays them (process isolation)."""

    def __init__(self, fd):
        self.fd = fd

    def send(self, message):
        # Before the JSON, what the parent needs to know of it: which phase a report is of, and whether
        # it failed (for -x), so that it relays the text as it is instead of parsing it.
        report = message.get("report") if message.get("t") == "report" else None
        head = "- 0 "
        if report is not None:
            failed = report.get("outcome") == "failed" and "wasxfail" not in report
            head = f"{report.get('when') or '-'} {int(failed)} "
        data = (head + json.dumps(message, ensure_ascii=True, default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


def _pytest_major():
    import pytest

    return int(pytest.__version__.split(".")[0])


class _OnlyFiles:
    """One of -n N workers imports only the test files that hold its tests: N workers each importing the
    whole suite made -n 2 slower than one worker. Directories are still walked and every conftest.py and
    __init__.py still loads, as in a whole run, so hooks and fixtures are those of a whole run; only the
    other workers' test modules are not imported here."""

    def __init__(self, files, major):
        self.files = {os.path.realpath(f) for f in files}
        if major < 7:  # its hook passes a py.path as `path`; 7 and later also pass `collection_path`
            self.pytest_ignore_collect = self._ignore_old

    def pytest_ignore_collect(self, collection_path):
        return self._ignored(str(collection_path))

    def _ignore_old(self, path):
        return self._ignored(str(path))

    def _ignored(self, path):
        if os.path.basename(path) in ("conftest.py", "__init__.py") or os.path.isdir(path):
            return None
        return True if os.path.realpath(path) not in self.files else None


class _Worker:
    """The pytest plugin of the worker: runs the given node ids and sends what the host reports."""

    def __init__(self, spec, out):
        self.spec = spec
        self.out = out
        self.channel = sys.stdout
        self.ran = 0
        self.failed = 0
        self.not_found = []
        self.config = None

    def pytest_addoption(self, parser):
        # The host's options, in an ini file both read: known here (no "unknown option" warning), unused.
        parser.addini("dockertask_image", "the host's: the image this worker runs in")
        parser.addini("dockertask_isolation", "the host's: how this worker isolates tests")

    def pytest_configure(self, config):
        self.config = config
        if config.getoption("capture", None) == "no":
            # -s: a test's prints go to the host as they are made (the terminal reporter, made with the
            # quiet stdout, stays quiet); otherwise capture holds them, and they come in the reports.
            sys.stdout = self.channel
        # The host plugin's markers (it is not loaded here): known, so --strict-markers holds as on the host.
        config.addinivalue_line("markers", "dockertask(**task_kwargs): the host's: a container of its own")
        config.addinivalue_line("markers", "dockertask_host: the host's: runs on the host")
        if self.spec.get("files"):
            config.pluginmanager.register(_OnlyFiles(self.spec["files"], _pytest_major()), "dockertask-only-files")

    def pytest_collectreport(self, report):
        if report.failed or (report.skipped and report.nodeid):
            self.out.send({"t": "collect", "report": self._ser(report)})

    def pytest_runtest_logstart(self, nodeid, location):
        self.out.send({"t": "start", "nodeid": nodeid, "location": list(location)})

    def pytest_runtest_logfinish(self, nodeid, location):
        self.out.send({"t": "finish", "nodeid": nodeid, "location": list(location)})

    def pytest_runtest_logreport(self, report):
        self.out.send({"t": "report", "report": self._ser(report)})

    def pytest_warning_recorded(self, warning_message, when, nodeid, location):
        if when != "runtest":  # the host's own configuration and collection warned of these already
            return
        self.out.send({"t": "warning", "when": when, "nodeid": nodeid,
                       "message": str(warning_message.message),
                       "category": getattr(warning_message.category, "__name__", "Warning"),
                       "filename": warning_message.filename, "lineno": warning_message.lineno})

    def _ser(self, report):
        return self.config.hook.pytest_report_to_serializable(config=self.config, report=report)

    def pytest_runtestloop(self, session):
        # A module that fails to import here (and not on the host) fails its own tests, on the host's side;
        # the others still run, as they would in a pytest run that continues on collection errors.
        by_id = {}
        for item in session.items:
            by_id.setdefault(item.nodeid, item)
        items = []
        for nodeid in self.spec["nodeids"]:
            if nodeid in by_id:
                items.append(by_id[nodeid])
            else:
                self.not_found.append(nodeid)
        self.items = items
        forked = self.spec.get("isolation") == "process"
        if forked:
            import gc

            session.config._tmp_path_factory.getbasetemp()  # one base for every child, made once
            gc.collect()
            gc.freeze()  # what collection made is shared with every child, untouched by its collector
        if forked:
            self._forked_loop(items)
            return True
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            self.ran += 1
            if session.shouldfail or session.shouldstop:
                break
        return True

    # Before pytest's own loop (pluggy reads these options as @pytest.hookimpl would set them).
    pytest_runtestloop.pytest_impl = {"tryfirst": True, "trylast": False, "hookwrapper": False,
                                      "optionalhook": False, "specname": None, "wrapper": False}
    # After the terminal reporter's, which takes sys.stdout as it is then.
    pytest_configure.pytest_impl = dict(pytest_runtestloop.pytest_impl, tryfirst=False, trylast=True)

    def _forked_loop(self, items):
        """Each item in a child of its own, one after another. The child for the next item is forked while
        the current one runs (this process does not change in between, so it is the same child), and a
        child is reaped after it said it is done: its fork and its exit overlap another test."""
        ahead = self._fork_child() if items else None
        ended = []
        for i, item in enumerate(items):
            pid, go, results = ahead
            os.write(go, b"%d\n" % i)
            os.close(go)
            ahead = self._fork_child() if i + 1 < len(items) else None
            seen, done = self._relay(results)
            if done:
                ended.append(pid)
            else:  # no "done": it died; how, its exit status says
                _, status = os.waitpid(pid, 0)
                if "teardown" not in seen:
                    self._died(item, status, seen)
            self.ran += 1
            ended = [p for p in ended if os.waitpid(p, os.WNOHANG)[0] == 0]
            maxfail = item.config.getoption("maxfail", 0)
            if maxfail and self.failed >= maxfail:  # -x: the children's sessions stopped, not this one
                break
        if ahead is not None:
            os.close(ahead[1])  # its turn never comes: it reads nothing and exits
            ended.append(ahead[0])
            os.close(ahead[2])
        for pid in ended:
            os.waitpid(pid, 0)

    def _fork_child(self):
        go_read, go_write = os.pipe()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(go_write)
                os.close(read_fd)
                line = os.read(go_read, 64)
                if not line:  # the worker ended before this child's turn
                    os._exit(0)
                item = self.items[int(line)]
                self.out = _Pipe(write_fd)
                item.config.hook.pytest_runtest_protocol(item=item, nextitem=None)
                os.write(write_fd, _DONE)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(go_read)
        os.close(write_fd)
        return pid, go_write, read_fd

    def _relay(self, read_fd):
        """A child's messages, relayed until it says it is done or its pipe ends: the phases it reported,
        and whether it finished. What the pipe has at once goes on in one write (a test's messages
        usually arrive together)."""
        seen = []
        rest = b""
        try:
            while True:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    return seen, False
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                texts = []
                done = False
                for line in lines:
                    if line + b"\n" == _DONE:
                        done = True
                        break
                    when, failed, text = line.decode().split(" ", 2)
                    if when != "-":
                        seen.append(when)
                    self.failed += failed == "1"
                    texts.append(text)
                if texts:
                    self.out.send_texts(texts)
                if done:
                    return seen, True
        finally:
            os.close(read_fd)

    def _died(self, item, status, seen):
        """The child ended before its teardown report: a failed report for the test, saying how it died."""
        from _pytest.reports import TestReport

        if os.WIFSIGNALED(status):
            how = f"was killed by signal {os.WTERMSIG(status)}"
        else:
            how = f"exited with code {os.WEXITSTATUS(status)}"
        if not seen:
            self.out.send({"t": "start", "nodeid": item.nodeid, "location": list(item.location)})
        report = TestReport(item.nodeid, item.location, {}, "failed",
                            f"the test's process (process isolation) {how} before its report",
                            "call" if "call" not in seen else "teardown")
        self.out.send({"t": "report", "report": self._ser(report)})
        self.out.send({"t": "finish", "nodeid": item.nodeid, "location": list(item.location)})


run.dockertask_preload = ("dockertask.runtime.pytestworker:preload",)  # calls/executors.PRELOAD_ATTRIBUTE
