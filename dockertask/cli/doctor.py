"""``dockertask doctor``: each check says what it found and, when it fails, what to do."""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING

import click

from dockertask.errors import DockerTaskError
from dockertask.images.refs import HOST_PYTHON, build_default_image, default_image_ref

if TYPE_CHECKING:
    from dockertask.backends.swarm import SwarmBackend


def _line(ok: bool, what: str, fix: str = "") -> bool:
    mark = click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red")
    click.echo(f"[{mark}] {what}" + (f"\n       → {fix}" if fix and not ok else ""))
    return ok


def _image_python() -> str:
    from dockertask.tasks import task

    @task
    def python_version() -> str:
        import platform as p

        return p.python_version()

    return python_version()


def run_checks(fix: bool = False) -> int:
    from dockertask.backends import default_backend
    from dockertask.host.owner import is_orphan

    ok = _line(True, f"host Python {platform.python_version()} ({sys.executable})")
    try:
        backend = default_backend()
        info = backend.engine_info()
    except DockerTaskError as exc:
        _line(False, "Docker engine reachable", str(exc))
        return 1
    where = getattr(backend, "location", None)
    at = f" at {where.base_url} (found through {where.how})" if where is not None else ""
    _line(True, f"Docker engine {info.get('ServerVersion')} reachable{at} ({info.get('Driver')}, "
                f"cgroup v{info.get('CgroupVersion', '1')})")
    from dockertask.backends.swarm import SwarmBackend

    if isinstance(backend, SwarmBackend):
        ok &= _swarm_checks(backend)
    ref = default_image_ref()
    present = backend.image_info(ref) is not None
    if not present and fix:
        try:
            build_default_image(backend)
            present = True
        except DockerTaskError as exc:
            _line(False, f"default image {ref} could not be built", str(exc))
            return 1
    ok &= _line(present, f"default image {ref} " + ("present" if present else "missing"),
                "run `dockertask doctor --fix` to build it (first task run builds it too)")
    if present:
        try:
            version = _image_python()
            same = version.rsplit(".", 1)[0] == HOST_PYTHON
            ok &= _line(same, f"default image runs a task: Python {version}" + (
                        " (on a node, its call and result over the callback connection)"
                        if isinstance(backend, SwarmBackend) else ""),
                        f"the image needs Python {HOST_PYTHON}; set DOCKERTASK_IMAGE_DEFAULT to one that has it")
        except DockerTaskError as exc:
            ok &= _line(False, "default image runs a task", f"{type(exc).__name__}: {exc}")
    left = backend.gc(is_orphan, dry_run=True)
    if left and fix:  # what `gc` would do: they belong to processes that no longer exist
        removed = backend.gc(is_orphan)
        _line(True, f"removed {len(removed)} container(s) left by dead dockertask processes")
        gone = {r.id for r in removed}
        left = [c for c in left if c.id not in gone]
    ok &= _line(not left, f"{len(left)} container(s) left by dead dockertask processes",
                "run `dockertask gc` to remove them")
    return 0 if ok else 1


def _swarm_checks(backend: SwarmBackend) -> bool:
    """The cluster: nodes ready, the registry reachable from the manager (push) and every node (pull).
    The callback path is checked by running a task (below)."""
    from dockertask.host.owner import owner_labels

    nodes = backend.nodes()
    down = [f"{name} ({state}, {availability})" for name, state, availability in nodes
            if state != "ready" or availability != "active"]
    ok = _line(not down, f"Swarm manager at {backend.engine._engine()}: {len(nodes)} node(s), "
                         f"{len(nodes) - len(down)} ready and active" + (f"; not: {', '.join(down)}" if down else ""),
               "`docker node ls` on the manager; bring the nodes back or `docker node rm` them")
    ref = default_image_ref()
    if backend.image_info(ref) is None:
        return _line(False, f"default image {ref} is not on the manager's engine",
                     "run `dockertask doctor --fix` to build it there") and ok
    try:
        published = backend.publish(ref)
    except DockerTaskError as exc:
        return _line(False, f"registry {backend.settings.registry} takes the manager's push", str(exc)) and ok
    ok &= _line(True, f"registry {backend.settings.registry} takes the manager's push ({published})")
    answers = backend.probe_pulls(published, {**owner_labels(), "dockertask.run-id": f"doctor-{os.getpid()}"})
    bad = {node: why for node, why in answers.items() if why != "ok"}
    ok &= _line(not bad, f"every node pulls and runs it from {backend.settings.registry} ({len(answers)} node(s))"
                + "".join(f"\n       {node}: {why}" for node, why in bad.items()),
                f"each node's engine must reach {backend.settings.registry} (a plain-HTTP registry must be in its "
                "insecure-registries)")
    return ok
