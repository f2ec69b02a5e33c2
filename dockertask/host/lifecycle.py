"""Live containers of this process, and what happens to them when the host is interrupted.

A task's own ``finally`` removes its container on every outcome, including a KeyboardInterrupt
in the thread that waits for it. Two cases need more: tasks waited on by worker threads
(``submit``), which never see the main thread's KeyboardInterrupt, and SIGTERM, whose default
action ends the process without running any ``finally``. So, installed lazily from the main
thread on the first run, SIGINT and SIGTERM handlers mark the process as interrupted and kill
every live container from a helper thread (never from inside the handler: that could re-enter
the HTTP connection pool the interrupted code was using). The waiting threads then see their
container exit, remove it, and give up without retrying. Handlers a user installed are chained.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_live: dict[str, Callable[[list[str]], None]] = {}
_lock = threading.Lock()
_generation = 0  # how many times SIGINT/SIGTERM arrived: work made before the latest one stops
_installed = False


def _forget_in_child() -> None:
    """A forked child (multiprocessing's default on Linux) starts with no container of its own: a Ctrl-C in
    it must not kill the parent's, and a lock a parent thread held at the fork is not held here."""
    global _lock
    _lock = threading.Lock()
    _live.clear()


os.register_at_fork(after_in_child=_forget_in_child)


EXIT_BUDGET = 10.0  # seconds a process's exit may spend removing what it made (a wedged engine answers never)


def in_parallel(jobs: list[Callable[[], None]], what: str, budget: float | None = None) -> None:
    """Run each job (a removal) in a thread of its own and wait for them all, ``budget`` seconds at most in
    total: at exit, a wedged engine must cost seconds once, not a minute per container one after another.
    What did not finish is said, with what removes it later."""
    import sys
    import time

    budget = EXIT_BUDGET if budget is None else budget

    def quietly(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # each removal records its own failure (abandoned) where it can
            pass

    threads = [threading.Thread(target=quietly, args=(job,), name="dockertask-exit", daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + budget
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = sum(thread.is_alive() for thread in threads)
    if left:
        sys.stderr.write(f"dockertask: {left} {what} not removed within {budget:g} s: the engine is not answering; "
                         "`dockertask gc` removes them once it is back\n")


def at_multiprocessing_exit(cleanup: Callable[[], None]) -> None:
    """In a forked child (call it from an after-fork hook): run ``cleanup`` when the child ends, if it is a
    multiprocessing worker. Those end with os._exit after their own finalizers, so the atexit handlers
    that remove a process's replicas and spares never run there; the finalizer registry is also cleared
    when such a worker starts, so the finalizer is registered from multiprocessing's own after-fork step."""
    import sys

    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None:
        return
    holder = _Cleanup(cleanup)
    _cleanups.append(holder)  # the registry holds it weakly
    mp_util.register_after_fork(holder, lambda h: mp_util.Finalize(None, h.cleanup, exitpriority=10))


class _Cleanup:
    def __init__(self, cleanup: Callable[[], None]) -> None:
        self.cleanup = cleanup


_cleanups: list[_Cleanup] = []


def add(container_id: str, killer: Callable[[list[str]], None]) -> None:
    with _lock:
        _live[container_id] = killer


def discard(container_id: str) -> None:
    with _lock:
        _live.pop(container_id, None)


def generation() -> int:
    """The interrupt count now: a call, submit or map records it when it is made."""
    return _generation


def interrupted(since: int = 0) -> bool:
    """True when SIGINT or SIGTERM arrived after generation ``since``: the work made then must not start
    (or retry). Work made after a Ctrl-C that the program caught runs normally (a notebook goes on)."""
    return _generation > since


def note_interrupt() -> None:
    """Record an interrupt and kill every live container (what the signal handler does)."""
    global _generation
    _generation += 1
    threading.Thread(target=kill_live, name="dockertask-kill", daemon=False).start()


def kill_live() -> None:
    with _lock:
        items = list(_live.items())
    for cid, killer in items:
        try:
            killer([cid])
        except Exception:  # best effort: the owner's finally still removes it
            pass


def _on_signal(previous: Any, signum: int, frame: FrameType | None) -> None:
    note_interrupt()
    if callable(previous):
        previous(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        # SIGTERM's default is to die at once; exit through SystemExit instead so every
        # `finally` (container removal) runs, with the exit status a shell expects.
        raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Install once, from the main thread only (Python allows nothing else)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN:
            continue
        if previous is signal.default_int_handler or previous is signal.SIG_DFL or previous is None:
            previous = None
        signal.signal(signum, functools.partial(_on_signal, previous))
