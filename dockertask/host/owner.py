"""Who owns a container: this host's name, and a process identity that survives pid reuse."""

from __future__ import annotations

import functools
import os
import socket


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot (Linux /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its closing paren.
    return stat[stat.rindex(")") + 2:].split()[19]


def extra_labels() -> dict[str, str]:
    """``DOCKERTASK_LABELS="team=ml,ci.job=1234"``: labels for every container dockertask creates (so a CI
    job, or a test session, can find exactly its own)."""
    from dockertask.errors import TaskDefinitionError

    raw = os.environ.get("DOCKERTASK_LABELS", "").strip()
    labels = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.strip().startswith("dockertask.") and not key.strip().startswith(
                "dockertask.user."):
            raise TaskDefinitionError(f"DOCKERTASK_LABELS={raw!r}: expected comma-separated key=value pairs, "
                                      "keys outside dockertask.* (dockertask.user.* is allowed)")
        labels[key.strip()] = value.strip()
    return labels


@functools.lru_cache(maxsize=1)
def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    labels = {**extra_labels(), "dockertask.host": socket.gethostname(), "dockertask.host-pid": str(pid)}
    start = _start_ticks(pid)
    if start is not None:
        labels["dockertask.host-pid-start"] = start
    return labels


# A forked child labels what it makes with its own pid: gc must tell its containers from the parent's.
os.register_at_fork(after_in_child=owner_labels.cache_clear)


def alive(pid: int) -> bool:
    """True while a process with this pid exists on this host (owned by us or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    return True


def is_orphan(labels: dict[str, str], *, all_hosts: bool = False) -> bool:
    """True when the process that started the container is gone (same host only, unless all_hosts)."""
    if labels.get("dockertask.host") != socket.gethostname():
        return all_hosts
    try:
        pid = int(labels.get("dockertask.host-pid", ""))
    except ValueError:
        return True
    if not alive(pid):
        return True
    started = labels.get("dockertask.host-pid-start")
    return started is not None and _start_ticks(pid) not in (None, started)
