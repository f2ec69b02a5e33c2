"""Containers made ahead of time for isolated calls ("spares").

A fresh container per call pays create, attach, the engine's start (~240 ms, most of the floor) and
Python's start-up before it can run the call. Once a task's configuration has been called twice in this
process, each further call of it has a spare made in the background for the call after it: created,
attached, started, and sent the bootstrap and the runtime zip (envelope.ahead_pieces), so its Python
waits on stdin for a call's header. It holds no argument, secret or file, and has run nothing of anyone's.
The next call with exactly the same configuration (image, command, environment, labels other than the run
id, host config and options) claims it, takes its run id (so ``dockertask.run-id`` stays the call's own),
and sends only the call (Envelope.stdin_pieces(..., ahead=True)). A spare is claimed once and then is the
call's container: removed after that one call like any other. ``DOCKERTASK_PRECREATE=created`` makes
them created and attached only, not started (a backend without ``prepare_ahead`` does the same).

On Swarm a service cannot be created now and started later: its spare is started and connected, its
bootstrap waiting for the call (see SwarmBackend.prepare), and only for jobs without requests.

Unclaimed spares are removed after IDLE_SECONDS, at exit (after Ctrl-C/SIGTERM too: both end in
``SystemExit``/``KeyboardInterrupt``), and by ``dockertask gc`` after a ``kill -9``: they carry the
usual owner labels. ``DOCKERTASK_PRECREATE=0`` turns them off.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import json
import logging
import os
import queue
import threading
import time
from typing import Any, NamedTuple

from dockertask.backends.base import Backend, ContainerJob, StdinPieces
from dockertask.calls import envelope
from dockertask.host import lifecycle

log = logging.getLogger("dockertask")

IDLE_SECONDS = 30.0
MAX_PER_KEY = 8  # at most one waiting per call in flight, and never more than this
LABEL_RUN_ID = "dockertask.run-id"


def enabled() -> bool:
    return os.environ.get("DOCKERTASK_PRECREATE", "1") != "0"


def start_ahead() -> bool:
    """Spares are started and their runtime loaded ahead (``DOCKERTASK_PRECREATE=created``: only created)."""
    return os.environ.get("DOCKERTASK_PRECREATE", "1") != "created"


def is_started(spare: Spare) -> bool:
    return bool(getattr(spare.prepared, "started", False))


class Spare(NamedTuple):
    backend: Backend
    key: str
    run_id: str
    prepared: Any  # the backend's handle (Backend.prepare)
    made: float


class Claim(NamedTuple):
    """A call counted in flight for its configuration (``slot``), with the spare it got, if any; given
    back to ``finished`` when the call is over."""

    slot: tuple[int, str]
    spare: Spare | None


def key_of(job: ContainerJob) -> str:
    """Everything a container is created with, but the run id: two jobs with one key can share a spare."""
    labels = {k: v for k, v in job.labels.items() if k != LABEL_RUN_ID}
    return json.dumps([job.image, job.command, sorted(job.environment.items()), sorted(labels.items()),
                       repr(job.resources), repr(job.options)])


class Spares:
    """The spares of one process: who made them, who may claim them, and their removal."""

    def __init__(self) -> None:
        self._fresh()

    def _fresh(self) -> None:
        self._cond = threading.Condition()
        self._idle: dict[tuple[int, str], list[Spare]] = collections.defaultdict(list)
        self._seen: collections.Counter[tuple[int, str]] = collections.Counter()
        self._in_flight: collections.Counter[tuple[int, str]] = collections.Counter()
        self._making: collections.Counter[tuple[int, str]] = collections.Counter()
        self._failed: set[tuple[int, str]] = set()
        self._orders: queue.Queue[tuple[Backend, ContainerJob, tuple[int, str]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def claim(self, backend: Backend, job: ContainerJob) -> Claim | None:
        """The call of ``job`` begins: the spare made for its configuration, if one waits, and one ordered
        for the call after it. None when spares are off (or the backend makes none)."""
        if not enabled() or not getattr(backend, "makes_spares", hasattr(backend, "prepare")):
            return None
        slot = (id(backend), key_of(job))
        with self._cond:
            if self._closed:
                return None
            self._seen[slot] += 1
            self._in_flight[slot] += 1
            spare = self._idle[slot].pop(0) if self._idle[slot] else None
            # From the second call of a configuration on, keep one spare per call in flight.
            wanted = min(self._in_flight[slot], MAX_PER_KEY)
            if (self._seen[slot] >= 2 and slot not in self._failed
                    and len(self._idle[slot]) + self._making[slot] < wanted):
                self._making[slot] += 1
                self._orders.put((backend, job, slot))
                self._start_maker()
        return Claim(slot, spare)

    def finished(self, claim: Claim) -> None:
        """The call that made ``claim`` is over."""
        with self._cond:
            self._in_flight[claim.slot] -= 1

    def _start_maker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._make_forever, name="dockertask-spares", daemon=True)
            self._thread.start()

    def _make_forever(self) -> None:
        while True:
            try:
                order = self._orders.get(timeout=1.0)
            except queue.Empty:
                self._expire(time.monotonic())
                continue
            if order is None:
                return
            self._make(*order)
            self._expire(time.monotonic())

    def _make(self, backend: Backend, job: ContainerJob, slot: tuple[int, str]) -> None:
        run_id = os.urandom(8).hex()
        template = dataclasses.replace(job, stdin=StdinPieces(()), labels={**job.labels, LABEL_RUN_ID: run_id})
        prepared = None
        failed = False
        with self._cond:
            closed = self._closed
        if not closed:
            try:
                ahead = getattr(backend, "prepare_ahead", None)
                if ahead is not None and start_ahead():
                    prepared = ahead(template, envelope.ahead_pieces(job.preload))
                else:
                    prepared = backend.prepare(template)
            except Exception as exc:  # the call itself will meet (and report) whatever this is; stop trying
                log.debug("dockertask: could not pre-create a container: %s", exc)
                failed = True
        with self._cond:
            if not failed and prepared is not None and not self._closed:
                self._idle[slot].append(Spare(backend, slot[1], run_id, prepared, time.monotonic()))
                prepared = None
        if prepared is not None:  # made while the process was shutting down: gone before shutdown returns
            backend.discard(prepared)
        with self._cond:
            self._making[slot] -= 1
            if failed:
                self._failed.add(slot)
            self._cond.notify_all()

    def _expire(self, now: float, everything: bool = False) -> None:
        old: list[Spare] = []
        with self._cond:
            for spares in self._idle.values():
                keep: list[Spare] = []
                for spare in spares:
                    (keep if not everything and now - spare.made < IDLE_SECONDS else old).append(spare)
                spares[:] = keep
        if everything:  # shutting down: all at once, bounded in total
            lifecycle.in_parallel([functools.partial(s.backend.discard, s.prepared) for s in old], "spare container(s)")
            return
        for spare in old:
            spare.backend.discard(spare.prepared)

    def shutdown(self) -> None:
        """Remove every unclaimed spare; none is made after this (at exit; tests call it too)."""
        with self._cond:
            self._closed = True
            while sum(self._making.values()) > 0:  # one being made now is removed as soon as it exists
                if not self._cond.wait(timeout=30):
                    break
        self._orders.put(None)
        self._expire(0, everything=True)

    def reset(self) -> None:
        """Shut down, then accept spares again (tests)."""
        self.shutdown()
        with self._cond:
            self._closed = False
            self._seen.clear()
            self._in_flight.clear()
            self._failed.clear()
            self._thread = None
            self._orders = queue.Queue()

    def idle_count(self) -> int:
        with self._cond:
            return sum(len(v) for v in self._idle.values())


SPARES = Spares()
atexit.register(SPARES.shutdown)
# A forked child starts with no spare: the parent's containers are the parent's to claim and remove (a
# child's exit removed them), and the maker thread did not survive the fork.
def _fresh_in_child() -> None:
    SPARES._fresh()
    lifecycle.at_multiprocessing_exit(SPARES.shutdown)  # the child's own spares go when it ends


os.register_at_fork(after_in_child=_fresh_in_child)
