"""A host process that forks (multiprocessing's default on Linux, issue 17 D): each process has its own
engine connection, submit pool, spares and replicas, and a child's exit touches only what it made."""

from __future__ import annotations

import atexit
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest

from dockertask import ReusePolicy, task
from dockertask.calls import replicas, spares


@pytest.fixture(autouse=True)
def nothing_after() -> Iterator[None]:
    yield
    replicas.shutdown()
    spares.SPARES.reset()


@task(reusable=ReusePolicy(replicas=1))
def whoami(tag: str) -> tuple[str, str]:
    import socket

    return tag, socket.gethostname()


@task
def inc(x: int) -> int:
    return x + 1


def _child_calls(queue: Any) -> None:
    try:
        results = [whoami("child"), inc(1), inc.submit(2).result(timeout=60)]
        results.append([inc(i) for i in range(4)])
        queue.put(("ok", results))
    except BaseException as exc:  # the parent reports it
        queue.put(("error", repr(exc)))


def test_a_forked_child_calls_on_its_own_and_the_parents_replica_stays_the_parents() -> None:
    """With a replica, a submit pool and spares alive in the parent, a multiprocessing child's calls run
    (its submit starts, its reused call gets its own replica and its own result), the parent's calls made
    meanwhile are right, and the parent's replica is the same container afterwards (D13-D15)."""
    _, parent_host = whoami("parent")
    assert inc.submit(0).result(timeout=60) == 1  # the parent's pool, with its threads
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_calls, args=(queue,))
    child.start()
    try:
        parent_meanwhile = [inc(i) for i in range(4)]
        status, got = queue.get(timeout=120)
    finally:
        child.join(30)
        if child.is_alive():  # hung (a submit that never starts): it must not outlive the test
            child.kill()
            child.join(10)
    assert status == "ok", got
    (tag, child_host), one, two, many = got
    assert tag == "child" and child_host != parent_host
    assert (one, two, many) == (2, 3, [1, 2, 3, 4])
    assert parent_meanwhile == [1, 2, 3, 4]
    assert whoami("parent") == ("parent", parent_host)


def test_a_forked_child_that_exits_normally_leaves_the_parents_replicas_and_spares() -> None:
    """A child that ends through atexit (a plain os.fork child returning) removes nothing of the
    parent's: the parent's next reused call is in the same container, its spare still waits (D16)."""
    _, host = whoami("parent")
    for i in range(3):  # from the second call of a configuration on, a spare waits for the next
        inc(i)
    deadline = __import__("time").monotonic() + 30
    while not spares.SPARES.idle_count() and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    idle = spares.SPARES.idle_count()
    assert idle >= 1
    pid = os.fork()
    if pid == 0:  # the child: exit as a program does, through its exit handlers
        try:
            atexit._run_exitfuncs()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert spares.SPARES.idle_count() == idle
    assert whoami("parent") == ("parent", host)
