"""A scripted stand-in for the Docker backend, for policy tests (no engine needed).

Each ``run`` pops the next scripted outcome; ``jobs`` records what the runner asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cloudpickle

from dockertask.backends.base import ContainerJob, ContainerOutcome, ImageInfo, OutputSink
from dockertask.runtime import protocol


def ok(value: Any) -> ContainerOutcome:
    return ContainerOutcome("c", 0, result=protocol.result_frame_head({"status": "ok"}) + cloudpickle.dumps(value))


def raised(exc: BaseException, tb: str = "Traceback (most recent call last):\n  ...\n") -> ContainerOutcome:
    meta = {"status": "error", "type": type(exc).__qualname__, "message": str(exc), "traceback": tb}
    return ContainerOutcome("c", 0, result=protocol.result_frame_head(meta) + cloudpickle.dumps(exc))


def crashed(code: int, tail: str = "Segmentation fault") -> ContainerOutcome:
    return ContainerOutcome("c", code, logs_tail=tail)


def timed_out() -> ContainerOutcome:
    return ContainerOutcome("c", 137, timed_out=True)


def oom() -> ContainerOutcome:
    return ContainerOutcome("c", 137, oom_killed=True)


def preempted() -> ContainerOutcome:
    return ContainerOutcome("c", 137)


class FakeBackend:
    def __init__(self, *outcomes: ContainerOutcome | Callable[[ContainerJob], ContainerOutcome]) -> None:
        self.outcomes = list(outcomes)
        self.jobs: list[ContainerJob] = []
        self.images_present: set[str] | None = None  # None: every image exists

    def run(self, job: ContainerJob, on_output: OutputSink) -> ContainerOutcome:
        if self.images_present is not None and job.image not in self.images_present:
            from dockertask.errors import ImageNotFoundError

            raise ImageNotFoundError(f"no image {job.image}")  # as the engine's create refuses it
        self.jobs.append(job)
        if not self.outcomes:
            raise AssertionError("the runner started more containers than the test scripted")
        nxt = self.outcomes.pop(0)
        return nxt(job) if callable(nxt) else nxt

    def image_info(self, ref: str) -> ImageInfo | None:
        if self.images_present is None or ref in self.images_present:
            return ImageInfo(ref=ref, id="sha256:0", labels={})
        return None

    def pull(self, ref: str) -> bool:
        return False

    def build(self, *a: Any, **k: Any) -> None:
        raise AssertionError("no build expected")

    def import_rootfs(self, *a: Any, **k: Any) -> None:
        raise AssertionError("no import expected")

    def images(self, label: str) -> list[ImageInfo]:
        return []

    def kill_all(self, container_ids: list[str]) -> None:
        pass

    def gc(self, is_orphan: Any, dry_run: bool = False) -> list[Any]:
        return []

    def remove_network(self, name: str) -> None:
        pass

    def open_worker(self, job: ContainerJob, on_output: OutputSink) -> Any:
        raise AssertionError("no reusable replica expected")

    def gc_networks(self, is_orphan: Any, dry_run: bool = False) -> list[str]:
        return []

    def engine_info(self) -> dict[str, Any]:
        return {}


class SpareBackend(FakeBackend):
    """A FakeBackend that can prepare containers ahead of time: records what was prepared, run and
    discarded; every run answers ``ok(value)``."""

    def __init__(self, value: Any = 1) -> None:
        super().__init__()
        import itertools
        import threading

        self.value = value
        self.prepared: list[Any] = []
        self.discarded: list[Any] = []
        self.ran: list[tuple[ContainerJob, Any]] = []
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def prepare(self, job: ContainerJob) -> Any:
        with self.lock:
            handle = (f"spare-{next(self._ids)}", dict(job.labels))
            self.prepared.append(handle)
        return handle

    def discard(self, prepared: Any) -> None:
        with self.lock:
            self.discarded.append(prepared)

    def run(self, job: ContainerJob, on_output: OutputSink, prepared: Any = None) -> ContainerOutcome:
        with self.lock:
            self.jobs.append(job)
            self.ran.append((job, prepared))
        return ok(self.value)


class ExplodingBackend(FakeBackend):
    """Fails the test if anything reaches the engine."""

    def run(self, job: ContainerJob, on_output: OutputSink) -> ContainerOutcome:
        raise AssertionError("a container was started")

    def image_info(self, ref: str) -> ImageInfo | None:
        raise AssertionError("the engine was asked about an image")


def _frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        n, _, data = data.partition(b"\n")
        out.append(data[:int(n)])
        data = data[int(n):]
    return out


class InProcessBackend(FakeBackend):
    """Runs each job's pickled call in this process (thread-safe): map and submit policy without an engine.

    Tracks how many run at once; ``delay(args, named_arguments)`` may slow some calls down; each
    call's ``say`` argument, if any, is written to the output sink as a line. The call sees the
    attempt number of its job, as in a container."""

    def __init__(self, delay: Callable[[tuple[Any, ...], dict[str, Any]], float] | None = None) -> None:
        super().__init__()
        import threading

        self.delay = delay
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def run(self, job: ContainerJob, on_output: OutputSink) -> ContainerOutcome:
        import time

        with self.lock:
            self.jobs.append(job)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        import inspect

        from dockertask.spec.context import ExecutionContext, enter_local, leave_local

        frames = _frames(job.stdin_data)
        header = protocol.decode_meta(frames[3])
        token = enter_local(ExecutionContext(task_name=header.get("task", ""), attempt=int(header["attempt"]),
                                             run_id=header.get("run_id", ""), in_container=True))
        try:
            func, args, kwargs = cloudpickle.loads(frames[5])
            named = dict(inspect.signature(func).bind(*args, **kwargs).arguments)
            if self.delay is not None:
                time.sleep(self.delay(args, named))
            if "say" in named:
                on_output("stdout", str(named["say"]))
            try:
                value = func(*args, **kwargs)
                if inspect.iscoroutine(value):  # an async task: as the bootstrap does, run it to its end
                    import asyncio

                    value = asyncio.run(value)
                return ok(value)
            except Exception as exc:
                return raised(exc)
        finally:
            leave_local(token)
            with self.lock:
                self.running -= 1
