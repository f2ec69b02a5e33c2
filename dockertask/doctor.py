"""``dockertask doctor``: each check says what it found and, when it fails, what to do."""

from __future__ import annotations

import platform
import sys

import click

from .errors import DockerTaskError
from .images import HOST_PYTHON, build_default_image, default_image_ref


def _line(ok: bool, what: str, fix: str = "") -> bool:
    mark = click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red")
    click.echo(f"[{mark}] {what}" + (f"\n       → {fix}" if fix and not ok else ""))
    return ok


def _image_python() -> str:
    from .tasks import task

    @task
    def python_version() -> str:
        import platform as p

        return p.python_version()

    return python_version()


def run_checks(fix: bool = False) -> int:
    from .backends import default_backend
    from .hostproc import is_orphan

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
            ok &= _line(same, f"default image runs a task: Python {version}",
                        f"the image needs Python {HOST_PYTHON}; set DOCKERTASK_IMAGE_DEFAULT to one that has it")
        except DockerTaskError as exc:
            ok &= _line(False, "default image runs a task", f"{type(exc).__name__}: {exc}")
    left = backend.gc(is_orphan, dry_run=True)
    if left and fix:  # what `gc` would do: they belong to processes that no longer exist
        removed = backend.gc(is_orphan)
        _line(True, f"removed {len(removed)} container(s) left by dead dockertask processes")
        left = [c for c in left if c not in removed]
    ok &= _line(not left, f"{len(left)} container(s) left by dead dockertask processes",
                "run `dockertask gc` to remove them")
    return 0 if ok else 1
