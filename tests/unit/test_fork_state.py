"""What a forked child inherits of dockertask's process state (issue 17, D): nothing that is the parent's."""

from __future__ import annotations

import json
import os
from typing import Any

from dockertask import backends, tasks
from dockertask.backends import set_default_backend
from dockertask.calls import replicas, spares
from dockertask.host import lifecycle, owner


def _in_child(check: Any) -> Any:
    """Run ``check()`` in a forked child; its JSON answer."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, json.dumps(check()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        answer = f.read()
    os.waitpid(pid, 0)
    return json.loads(answer)


def test_a_forked_child_has_no_engine_connection_pool_or_containers_of_its_parent(fake: Any) -> None:
    """The engine client (whose sockets the parent reads), the submit pool (whose threads did not fork),
    the live containers, replicas and spares, and the owner labels' pid are all the child's own."""
    set_default_backend(fake)
    assert backends.default_backend() is fake
    tasks._pool()  # the parent's submit pool exists
    lifecycle.add("parents-container", lambda ids: None)
    owner.owner_labels()
    try:
        got = _in_child(lambda: {
            "backend": backends._default is None,
            "pool": tasks._executor is None,
            "live": sorted(lifecycle._live),
            "pid": owner.owner_labels()["dockertask.host-pid"] == str(os.getpid()),
            "pools": len(replicas._pools),
            "spares": spares.SPARES.idle_count(),
        })
    finally:
        lifecycle.discard("parents-container")
    assert got == {"backend": True, "pool": True, "live": [], "pid": True, "pools": 0, "spares": 0}
    assert backends.default_backend() is fake  # the parent's are untouched
