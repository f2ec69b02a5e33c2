"""What runs inside the container: read the call from stdin, run it, send the result back.

Stdlib only, and in old-Python syntax on purpose: it must be able to *say* that the image's
Python is the wrong one before anything newer is imported. The host starts the container as
``python3 -c LOADER`` (see runtime/protocol.LOADER), which reads this file from stdin (as bytecode when the
image's Python matches, else as source) and runs ``main(read_frame)``. Everything else arrives on
stdin too, as length-prefixed frames:

    header (marshal) · runtime zip (cloudpickle + dockertask) · pickled call · secrets (marshal)

Small structured frames are marshal rather than JSON: marshal is built in, json costs ~8 ms.

Nothing is copied in or out through the engine's archive API (about 50 ms a call each way)
and nothing rests on a bind mount, so a remote engine works the same.

The way back is a private control channel: a duplicate of the container's original stdout,
taken before the user's code runs. The user's own fd 1 is redirected into a pipe whose data the
control channel carries as ``O`` frames, so a ``print`` can never be mistaken for the result,
which goes last as one ``R`` frame (its metadata, then the pickle). The user's
stderr is left alone. The container's log driver is off, so none of this is stored anywhere.

The exit code is 0 whenever a result was sent, user exceptions included: a non-zero exit
always means an infrastructure failure (OOM kill, signal, crash).
"""

# _thread, not threading, and _pickle, not pickle: the task's start-up pays for every import here,
# and those two wrappers cost ~6 and ~4 ms that nothing in this file needs.
import _thread
import io  # loaded with the interpreter (sys.stdout is one): importing it costs nothing
import marshal
import os
import struct
import sys

# traceback and tempfile are imported only where needed: every import here is paid by every
# task, before its function runs (tempfile alone costs ~5 ms of interpreter start-up).

SECRETS_DIR = "/etc/secrets"
WATCH_ENV = "DOCKERTASK_WATCH_CALL"  # "1": run the call in a child and report how it died (see main)
_HEAD = struct.Struct(">cQ")
_META_LEN = struct.Struct(">I")


class Channel:
    """Frames to the host over the original stdout; one writer at a time."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = _thread.allocate_lock()
        self.call_id = None  # serve mode: the call this process runs, named on its R and X frames
        self.sent_fd = None  # serve mode: told "R" once the result is out, so the parent knows it went

    def send(self, kind, data):
        with self.lock:
            view = memoryview(_HEAD.pack(kind, len(data)) + data) if len(data) < 65536 else None
            if view is None:
                self._write(memoryview(_HEAD.pack(kind, len(data))))
                view = memoryview(data)
            self._write(view)

    def _write(self, view):
        while len(view):
            n = os.write(self.fd, view)
            view = view[n:]

    def result(self, meta, payload=b""):
        """The R frame: the metadata's length and the metadata (protocol.result_frame_head), then the
        payload, written in turn (a 150 MB result is not copied)."""
        if self.call_id is not None:
            meta["call"] = self.call_id
        meta["usage"] = usage(self.call_id is not None)
        meta = marshal.dumps(meta, 2)
        head = _META_LEN.pack(len(meta)) + meta
        with self.lock:
            self._write(memoryview(_HEAD.pack(b"R", len(head) + len(payload)) + head))
            self._write(memoryview(payload))
        if self.sent_fd is not None:
            os.write(self.sent_fd, b"R")


class Pump(object):
    """Carries whatever the task writes to fd 1 to the host, as it is written, from a thread of its own."""

    def __init__(self, read_fd, channel, kind=b"O"):
        self.read_fd, self.channel, self.kind = read_fd, channel, kind
        self.done = _thread.allocate_lock()
        self.done.acquire()  # released when the pipe is drained: join() waits on it
        _thread.start_new_thread(self.run, ())

    def run(self):
        try:
            while True:
                try:
                    chunk = os.read(self.read_fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.channel.send(self.kind, chunk)
            os.close(self.read_fd)
        finally:
            self.done.release()

    def join(self, timeout):
        if self.done.acquire(True, timeout):
            self.done.release()


def install_secrets(secrets):
    """FILE secrets go to a tmpfs, 0400 in a 0700 directory: readable by the task's user only."""
    for item in secrets:
        if item["mount"] == "env":
            os.environ[item["env_name"]] = item["value"]
            continue
        group_dir = os.path.join(SECRETS_DIR, item["group"])
        if not os.path.isdir(group_dir):
            os.makedirs(group_dir, 0o700)
        path = os.path.join(group_dir, item["key"] or item["group"])
        data = item["value"]
        if not isinstance(data, bytes):
            data = data.encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def format_exc():
    import traceback

    return traceback.format_exc()


def qualname(tp):
    return tp.__module__ + "." + getattr(tp, "__qualname__", tp.__name__)


# -- pickles: cloudpickle's reconstructors without importing cloudpickle ------------------------

RECONSTRUCT = "_dockertask_reconstruct"  # generated into the runtime zip (calls/runtime_zip.reconstruct_source)
_CLOUDPICKLE = ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast", "cloudpickle")


def _pickle():
    try:
        import _pickle as pickle  # the C pickler itself, which is all the pickle module wraps
    except ImportError:
        import pickle
    return pickle


def loads(data, paths=()):
    """cloudpickle.loads, but a name the generated module has resolves there: a call whose pickle
    names only those never imports cloudpickle (~30 ms of the container's start-up). ``paths``: the
    File/Directory objects the call's persistent ids stand for (its unpacked inputs)."""
    pickle = _pickle()
    try:
        fast = __import__(RECONSTRUCT)
    except ImportError:  # a cloudpickle this dockertask cannot copy from: the whole of it, then
        fast = None

    class Loader(pickle.Unpickler):
        def find_class(self, module, name):
            if fast is not None and module in _CLOUDPICKLE and name in fast.NAMES:
                return getattr(fast, name)
            return pickle.Unpickler.find_class(self, module, name)

        def persistent_load(self, pid):
            return paths[pid[1]]

    return Loader(io.BytesIO(data)).load()


def dumps(value, outputs=None):
    """The stdlib pickler first: it refuses (rather than mis-pickles) anything it cannot name by
    reference, such as a class or function made from the host's pickle, and only then is cloudpickle
    imported. (An object's __reduce__ may then run twice; pickling has no business with side effects.)
    With ``outputs`` (a list), every File/Directory in ``value`` is appended to it and pickled as its
    index: the files themselves travel in the archive (send_outputs)."""
    files = sys.modules.get("dockertask.files") if outputs is not None else None
    if files is None:  # nobody imported File or Directory: there can be none in the value
        try:
            return _pickle().dumps(value, protocol=5)  # straight into one bytes object, no buffer to copy
        except Exception:
            pass
    else:
        def persistent_id(obj):
            if isinstance(obj, files._PathValue):
                outputs.append(obj)
                return (files.PERSISTENT_TAG, len(outputs) - 1)
            return None

        try:
            return _dump_with(_pickle().Pickler, value, persistent_id)
        except Exception:
            del outputs[:]
    import cloudpickle
    from cloudpickle import cloudpickle as cp

    fast = sys.modules.get(RECONSTRUCT)
    if fast is not None:
        # A class rebuilt from the host's pickle keeps its tracker id, so that back on the host an instance
        # of it is an instance of the host's own class (not of a copy).
        with cp._DYNAMIC_CLASS_TRACKER_LOCK:
            cp._DYNAMIC_CLASS_TRACKER_BY_CLASS.update(fast._DYNAMIC_CLASS_TRACKER_BY_CLASS)
            cp._DYNAMIC_CLASS_TRACKER_BY_ID.update(fast._DYNAMIC_CLASS_TRACKER_BY_ID)
    if files is None:
        return cloudpickle.dumps(value, protocol=5)
    return _dump_with(cloudpickle.Pickler, value, persistent_id)


def _dump_with(pickler, value, persistent_id):
    """Pickle ``value`` (protocol 5) with a subclass of ``pickler`` that has this persistent_id."""
    class Dumper(pickler):
        pass

    Dumper.persistent_id = staticmethod(persistent_id)
    buf = io.BytesIO()
    Dumper(buf, protocol=5).dump(value)
    return buf.getvalue()


def receive_inputs(read_frame, inputs, run_dir):
    """The call's File/Directory inputs: one tar stream of ``<i>/<name>`` after the secrets, unpacked
    under run_dir/in; the objects the call's persistent ids stand for, in order."""
    if not inputs:
        return ()
    from dockertask import files

    dest = os.path.join(run_dir, "in")
    stream = files.FrameStream(read_frame)
    try:
        files.unpack_trusted(stream, dest)
    finally:
        stream.drain()  # whatever happened, the frames after it must not be read as something else
    return [files.KINDS[kind](os.path.join(dest, str(i), name)) for i, (kind, name) in enumerate(inputs)]


def send_outputs(channel, outputs):
    """The returned File/Directory objects as one tar stream of ``<i>/<name>`` in T frames (the R frame
    follows and names them); a missing one, or one of the wrong kind, is a ValueError naming it."""
    from dockertask import files

    items = []
    for i, obj in enumerate(outputs):
        path = obj.path
        if obj.kind == "f" and not os.path.isfile(path) or obj.kind == "d" and not os.path.isdir(path):
            raise ValueError("returned %r, but there is no such %s in the container"
                             % (obj, "file" if obj.kind == "f" else "directory"))
        items.append(("%d/%s" % (i, obj.name), path))
    for piece in files.tar_pieces(items):
        channel.send(b"T", piece)
    return [[obj.kind, obj.name] for obj in outputs]


def publish_context(header):
    """What current_context() reads in the container: a module of its own, so that neither this bootstrap
    nor a task that never asks pays for importing dockertask.spec.context."""
    module = type(sys)("_dockertask_call")
    module.header = header
    sys.modules["_dockertask_call"] = module


def drain_call(read_frame, header):
    """Read, and drop, the frames the host sends after the header, before a refusal is sent: a container
    that exits while its stdin is still being written loses its output on Podman (the attach write fails
    with "connection reset by peer" and the refusal never arrives)."""
    read_frame()  # the runtime zip; a replica (serve mode) gets nothing more until its first call
    if header.get("mode") == "serve":
        return
    read_frame()  # the pickled call
    read_frame()  # the secrets
    if header.get("inputs"):
        while read_frame():  # the inputs' tar stream, ended by an empty frame
            pass


def main(read_frame):
    channel = Channel(os.dup(1))  # dup'ed fds are not inherited by the task's subprocesses
    header = marshal.loads(read_frame())
    have = "%d.%d" % sys.version_info[:2]
    if header["python"] != have:
        drain_call(read_frame, header)
        channel.result({"status": "python_version", "image_python": sys.version.split()[0],
                        "host_python": header["python"]})
        return 0
    run_dir = os.path.join(os.environ.get("TMPDIR") or "/tmp", "dockertask-%d" % os.getpid())
    try:
        os.mkdir(run_dir, 0o700)
    except OSError:  # /tmp not writable (read-only root, odd USER): let tempfile find a place
        import tempfile

        run_dir = tempfile.mkdtemp(prefix="dockertask-")
    runtime = os.path.join(run_dir, "runtime.zip")
    with open(runtime, "wb") as f:
        f.write(read_frame())
    sys.path.insert(0, runtime)
    if header.get("mode") == "ahead":
        # Started ahead of its call (a spare): load what every call needs now, then wait for the call's own
        # header; the rest is as for any call.
        import cloudpickle  # noqa: F401

        for name in header.get("preload") or ():
            preload(name)
        header = marshal.loads(read_frame())
    if header.get("mode") == "serve":
        return serve(read_frame, channel, run_dir)
    pickled_call = read_frame()
    secrets = marshal.loads(read_frame())
    try:  # before the redirection below, which gives fd 0 to /dev/null
        paths = receive_inputs(read_frame, header.get("inputs"), run_dir)
    except BaseException as exc:  # reported below, as serve's child does, as a load error of the call
        paths = exc
    # Where the engine cannot tell an OOM kill (Podman never sets State.OOMKilled, Swarm's manager never
    # reports it) the backend asks for the call to run in a child process, so that this one is still there
    # to say so. Docker reports it itself, and there the fork's ~4 ms is not spent.
    pid = 0
    if os.environ.get(WATCH_ENV) == "1":
        before = oom_kills()
        pid = os.fork()
    if pid:
        del pickled_call, secrets, paths
        # Nothing of this process needs tearing down (it wrote only to the channel, unbuffered): skipping
        # the interpreter's finalization saves the call a few ms.
        os._exit(watch_call(channel, pid, before))
    pump = redirect_stdout(channel)
    try:
        if isinstance(paths, BaseException):
            raise paths
        install_secrets(secrets)
        del secrets
        publish_context(header)
        func, args, kwargs = loads(pickled_call, paths)
        del pickled_call
    except BaseException as exc:  # anything here means the call could not even be loaded
        return report_load_error(channel, pump, exc)
    # The call's process ends through sys.exit, as it did before it was forked: non-daemon threads joined,
    # atexit handlers run, and files the task left open flushed (a bind mount keeps them). Skipping that
    # with os._exit would save ~4 ms of copy-on-write faults, and could lose a task's last writes.
    return run_and_report(channel, pump, func, args, kwargs)


def watch_call(channel, pid, before):
    """Wait for the call's process; pass on the signals a stop sends (the init signals only us). A call
    that ends normally has sent its R frame (or exits without one, which the host reports); one killed
    by a signal gets an X frame saying which, and whether the cgroup's OOM killer fired meanwhile."""
    import _signal  # not `signal`: that wrapper imports enum, which every task would pay for

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except OSError:
            pass

    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        _signal.signal(getattr(_signal, name), forward)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    report_death(channel, status, before)
    return 128 + os.WTERMSIG(status)


def report_death(channel, status, before, call_id=None, rusage=None):
    """An X frame: how a call's process ended without its result (exit code or signal), and whether the
    cgroup's OOM killer fired since ``before`` (its count then); in serve mode, which call it was, and
    what its process used (``rusage`` from wait4: the cgroup serves every call of a replica)."""
    report = {"exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
              "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
              "oom": oom_kills() > before,
              "usage": usage() if rusage is None else dict(usage(True), **process_usage(rusage))}
    if call_id is not None:
        report["call"] = call_id
    channel.send(b"X", marshal.dumps(report, 2))


def preload(name):
    """Call a runtime function ("module:function") named by the host for a container started ahead: what
    its next call would load first, loaded while it waits. A failure is the call's to meet, not this."""
    import importlib

    module, _, function = name.partition(":")
    try:
        getattr(importlib.import_module(module), function)()
    except Exception:  # noqa: BLE001 - the call will load it again, and report what is wrong
        pass


class FramedStdout(io.RawIOBase):
    """A raw binary stream whose writes go to the host as O (or E) frames at once (see redirect_stdout). A
    process the task forks writes to the fd instead: one writer of frames per channel, so none interleave."""

    def __init__(self, channel, kind=b"O", fd=1):
        io.RawIOBase.__init__(self)
        self.channel, self.kind, self.fd, self.pid = channel, kind, fd, os.getpid()

    def write(self, data):
        data = bytes(data)
        if os.getpid() != self.pid:
            return os.write(self.fd, data)
        for start in range(0, len(data), 65536):
            self.channel.send(self.kind, data[start:start + 65536])
        return len(data)

    def writable(self):
        return True

    def fileno(self):
        return self.fd  # what subprocess and C code write to: the pipe


class Pumps(object):
    def __init__(self, pumps):
        self.pumps = pumps

    def join(self, timeout):
        import time

        deadline = time.time() + timeout
        for pump in self.pumps:
            pump.join(max(0.0, deadline - time.time()))


def redirect_stdout(channel, frame_stderr=False):
    """The task gets an empty stdin and a stdout whose bytes go to the host as O frames; with
    ``frame_stderr`` (a replica's call) its stderr goes as E frames on the same channel, so the host knows
    whose call each line is (two pipes the engine multiplexes keep no order between them)."""
    devnull = os.open(os.devnull, os.O_RDONLY)  # the task must not read our protocol (or block on it)
    os.dup2(devnull, 0)
    os.close(devnull)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 1)
    os.close(write_fd)
    pump = Pump(read_fd, channel)
    # Python's stdout is framed as it is written, in this thread: a line the task flushed is on its way to
    # the host before a crash can lose it (os._exit, a signal), as stderr's always was. fd 1 stays the pipe
    # for what does not go through sys.stdout (C code, subprocesses), pumped as before.
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(FramedStdout(channel), 65536),
                                  encoding=sys.stdout.encoding, errors=sys.stdout.errors, line_buffering=True)
    if not frame_stderr:
        # Line buffering: the host sees each line when it is printed, without -u's write per fragment.
        sys.stderr.reconfigure(line_buffering=True)
        return Pumps([pump])
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    err_pump = Pump(read_fd, channel, b"E")
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(FramedStdout(channel, b"E", 2), 65536),
                                  encoding=sys.stderr.encoding, errors="backslashreplace", line_buffering=True)
    return Pumps([pump, err_pump])


def report_load_error(channel, pump, exc, failure=None):
    finish(pump)
    meta = {"status": "load_error", "type": qualname(type(exc)), "message": str(exc), "traceback": format_exc()}
    if failure is not None and failure.setup:  # the replica's setup raised it: its traceback, its name
        meta.update(traceback=failure.tb, setup=failure.setup)
    channel.result(meta)
    return 0


def run_and_report(channel, pump, func, args, kwargs):
    """Run the call and send its R frame; 0 once it is sent (user exceptions included)."""
    try:
        value = func(*args, **kwargs)
        import types

        if type(value) is types.CoroutineType:  # an async task: its coroutine runs here, to its end
            import asyncio

            value = asyncio.run(value)
    except BaseException as exc:  # user code may raise anything, SystemExit included
        tb = format_exc()
        meta = {"status": "error", "type": qualname(type(exc)), "message": str(exc), "traceback": tb}
        try:
            data = dumps(exc)
        except Exception as perr:  # not picklable: its type, message and traceback still go back
            meta["pickle_error"] = repr(perr)
            data = b""
        finish(pump)
        channel.result(meta, data)
        return 0
    if type(value) is bytes:  # sent as it is: no pickled second copy in a memory-limited container
        finish(pump)
        channel.result({"status": "ok", "raw": "bytes"}, value)
        return 0
    outputs = []
    try:
        data = dumps(value, outputs)
    except Exception as exc:
        finish(pump)
        channel.result({"status": "error", "type": qualname(type(exc)),
                        "message": "the return value could not be pickled: %s" % (exc,),
                        "traceback": format_exc()})
        return 0
    finish(pump)
    meta = {"status": "ok"}
    if outputs:
        try:
            meta["outputs"] = send_outputs(channel, outputs)
        except Exception as exc:  # a returned path that is not there (or unreadable): say which
            channel.result({"status": "output_error", "message": str(exc), "traceback": format_exc()})
            return 0
    channel.result(meta, data)
    return 0


# -- reuse mode: one warm container, a fresh process per call ----------------------------------

class LoadFailure(object):
    def __init__(self, exc, tb, setup=None):
        self.exc, self.tb, self.setup = exc, tb, setup  # setup: the name of the ReusePolicy setup that raised


def set_up(channel, data):
    """Load (function, setup) and run setup() in this, the serve process; the function, or a LoadFailure
    that each of its calls reports (the setup's own exception and traceback). What setup prints goes to
    the host as a call's output would; this process's own streams are put back after it."""
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    streams = sys.stdout, sys.stderr
    pump = redirect_stdout(channel, frame_stderr=True)
    setup = None
    try:
        func, setup = loads(data)
        setup()
    except BaseException as exc:
        name = "%s.%s" % (getattr(setup, "__module__", "?"), getattr(setup, "__qualname__", "setup"))
        return LoadFailure(exc, format_exc(), setup=name if setup is not None else None)
    finally:
        finish(pump)
        sys.stdout, sys.stderr = streams
        for fd, copy in enumerate(saved):
            os.dup2(copy, fd)
            os.close(copy)
    import gc

    gc.collect()
    gc.freeze()  # what setup made stays out of every child's collections: its pages stay shared
    return func


def serve(read_frame, channel, run_dir):
    """Reusable replica: functions are loaded once (``load`` frames); each ``call`` runs in a child
    forked from this pristine process, so no module state, global or open file carries from one call
    to the next. One call at a time; a child that dies without its R frame is reported as an X frame
    (exit code, signal, and whether the cgroup's OOM killer fired)."""
    _pickle()  # loads' in every child: imported once here, before forking
    import resource  # noqa: F401  # usage()'s, in every child's R frame
    import shutil  # clear_secrets' after every call
    import traceback  # noqa: F401  # imported once here rather than in a failing child

    try:
        __import__(RECONSTRUCT)
    except ImportError:
        pass

    set_dumpable(0)  # no call may open this process's memory (/proc/<pid>/mem) or its fds
    keep = ancestors()  # the processes a sweep spares: this one, the init, and (Swarm) the connector
    unmasked = guard_stop_signals(keep)
    functions = {}
    channel.send(b"W", b"ready")
    while True:
        try:
            op = read_frame()
        except (ValueError, OSError):  # the host closed the channel: this replica is done
            return 0
        if op == b"load":
            fid = read_frame().decode("utf-8")
            data = read_frame()
            try:
                functions[fid] = loads(data)
            except BaseException as exc:
                functions[fid] = LoadFailure(exc, format_exc())
            del data
            continue
        if op == b"setup":  # the function and its ReusePolicy setup, run here: every call forks from its state
            fid = read_frame().decode("utf-8")
            data = read_frame()
            functions[fid] = set_up(channel, data)
            del data
            failed = functions[fid]
            channel.send(b"S", fid.encode("utf-8") + b"\n" + (failed.tb[-100000:].encode("utf-8", "replace")
                                                             if isinstance(failed, LoadFailure) else b"ok"))
            continue
        meta = marshal.loads(read_frame())
        call = read_frame()
        secrets = marshal.loads(read_frame())
        call_dir = os.path.join(run_dir, "call")
        try:
            paths = receive_inputs(read_frame, meta.get("inputs"), call_dir)
        except BaseException as exc:  # the child reports it, as a load error of its call
            paths = exc
        call_id = meta.get("call")  # named by the host (protocol.call_id); echoed on A, R and X frames
        channel.send(b"A", (call_id or "").encode("utf-8"))  # taken: a replica that cannot say so is replaced
        before = oom_kills()
        sent_r, sent_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the call's own process
            code = 70
            try:
                os.close(sent_r)
                channel.call_id, channel.sent_fd = call_id, sent_w
                set_dumpable(1)  # the task's own process is as it would be anywhere
                restore_signals(unmasked)
                code = run_child(channel, meta, functions.get(meta["fid"]), call, secrets, paths)
            finally:
                os._exit(code)
        os.close(sent_w)
        del call, secrets, paths
        _, status, rusage = os.wait4(pid, 0)
        os.set_blocking(sent_r, False)  # a process the call left may hold the pipe open: never wait on it
        try:
            sent = os.read(sent_r, 1) == b"R"
        except OSError:
            sent = False
        os.close(sent_r)
        # Everything the call started dies with it (a process in its own session, a fork bomb): none may
        # read the next call's secrets or inputs, or write on this channel while it runs.
        clean = sweep(keep)
        clear_secrets()
        shutil.rmtree(call_dir, ignore_errors=True)  # this call's input files: the next sees only its own
        if not sent:  # died, or ended (os._exit(0) too) without its result
            report_death(channel, status, before, call_id, rusage)
        if not clean:  # processes outran the sweep: end this replica; the host starts another
            return 0


STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


def guard_stop_signals(outside):
    """A stop from outside reaches the serve process from its init (docker stop, Ctrl-C on the host), which
    ends the replica as before; the same signal from a call (its pid is not among ``outside``) is ignored:
    a call must not end every later call of its replica. The signals are blocked here and read with their
    sender by a thread of their own; returns the mask to give back to each call's process."""
    import signal
    import threading

    signals = {getattr(signal, name) for name in STOP_SIGNALS}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    def watch():
        while True:
            info = signal.sigwaitinfo(signals)
            if info.si_pid in outside or info.si_pid == 0:  # the init forwards a stop; 0: the kernel's own
                signal.signal(info.si_signo, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [info.si_signo])
                os.kill(os.getpid(), info.si_signo)

    threading.Thread(target=watch, name="dockertask-stop-guard", daemon=True).start()
    return before


def restore_signals(mask):
    """In a call's process: the signal mask the serve process had before it guarded itself."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def set_dumpable(flag):
    """prctl(PR_SET_DUMPABLE): a process that is not dumpable cannot have its memory or fds opened through
    /proc by another process of the same user (without CAP_SYS_PTRACE, which containers lack)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, flag, 0, 0, 0)
    except Exception:  # no libc to be found (a static image): nothing to gain, nothing lost
        pass


def _proc_stat(pid):
    """(state, ppid) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return fields[0], int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def ancestors():
    """This process and every process above it (the init; on Swarm the connector that started us)."""
    keep = set()
    pid = os.getpid()
    while pid > 0 and pid not in keep:
        keep.add(pid)
        stat = _proc_stat(pid)
        pid = stat[1] if stat else 0
    return keep


def sweep(keep, rounds=200):
    """SIGKILL every process of the container but ``keep``, until none is left (zombies aside: the init reaps
    them); False when some still appear after ``rounds`` passes (a fork bomb outrunning us)."""
    import time

    for i in range(rounds):
        left = []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in keep:
                stat = _proc_stat(int(name))
                if stat is not None and stat[0] != b"Z":
                    left.append(int(name))
        if not left:
            return True
        for pid in left:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        if i:
            time.sleep(0.001)
    return False


def run_child(channel, meta, func, call, secrets, paths):
    pump = redirect_stdout(channel, frame_stderr=True)
    try:
        if isinstance(paths, BaseException):
            raise paths
        install_secrets(secrets)
        publish_context(meta)
        if isinstance(func, LoadFailure):
            raise func.exc
        if func is None:
            raise RuntimeError("function %r was never loaded into this replica" % meta.get("fid"))
        args, kwargs = loads(call, paths)
    except BaseException as exc:
        return report_load_error(channel, pump, exc, func if isinstance(func, LoadFailure) else None)
    return run_and_report(channel, pump, func, args, kwargs)


def usage(process=False):
    """Peak memory (bytes) and CPU seconds, as measured, for the run record: of this container's cgroup (v1
    or v2) at the end of its call, or with ``process`` (a replica, whose cgroup serves every call) of this
    call's process and the children it waited for. What cannot be read is left out, never guessed."""
    found = {"node": os.environ["DOCKERTASK_NODE"]} if os.environ.get("DOCKERTASK_NODE") else {}
    if not process:
        for key, path, scale in (("peak", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes", 1),
                                 ("peak", "/sys/fs/cgroup/memory.peak", 1),
                                 ("cpu", "/sys/fs/cgroup/cpuacct/cpuacct.usage", 1e-9),
                                 ("cpu", "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", 1e-9)):
            if key not in found:
                try:
                    with open(path) as f:
                        found[key] = int(f.read()) * scale
                except (OSError, ValueError):
                    pass
        if "cpu" not in found:
            try:
                with open("/sys/fs/cgroup/cpu.stat") as f:
                    for line in f:
                        if line.startswith("usage_usec "):
                            found["cpu"] = int(line.split()[1]) / 1e6
            except (OSError, ValueError):
                pass
        if "peak" in found or "cpu" in found:
            found["source"] = "cgroup"
            return found
    import resource

    found.update(process_usage(resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
    return found


def process_usage(own, children=None):
    """From getrusage (``own`` and ``children``) or, for a reaped call, wait4's one rusage (``own`` alone)."""
    peak, cpu = own.ru_maxrss, own.ru_utime + own.ru_stime
    if children is not None:
        peak, cpu = max(peak, children.ru_maxrss), cpu + children.ru_utime + children.ru_stime
    return {"peak": peak * 1024, "cpu": cpu, "source": "process"}  # ru_maxrss: kB on Linux


def oom_kills():
    """How many times the kernel's OOM killer fired in this container's memory cgroup (v2 or v1)."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def clear_secrets():
    """Remove what the last call's secrets left on the tmpfs: the next call sees only its own."""
    import shutil

    try:
        names = os.listdir(SECRETS_DIR)
    except OSError:
        return
    for name in names:
        path = os.path.join(SECRETS_DIR, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def finish(pump):
    """Send the task's last output before the result: close our end of the pipes, drain them."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    if len(pump.pumps) > 1:  # stderr framed too (a replica's call)
        os.dup2(devnull, 2)
    os.close(devnull)
    # A subprocess the task left running may hold the pipe open: do not wait for it forever.
    pump.join(2.0)
