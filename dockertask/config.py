"""Which backend runs tasks, and the Swarm backend's settings.

Read from ``[tool.dockertask]`` (``backend``) and ``[tool.dockertask.swarm]`` (``registry``,
``callback_address``, ``schedule_timeout``) in the nearest pyproject.toml, overridden by
``DOCKERTASK_BACKEND``, ``DOCKERTASK_SWARM_REGISTRY``, ``DOCKERTASK_SWARM_CALLBACK`` and
``DOCKERTASK_SWARM_SCHEDULE_TIMEOUT``, overridden in turn by ``dockertask.configure(...)``: the
most specific word wins (code that calls configure means it).
"""

from __future__ import annotations

import functools
import os
import threading
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from dockertask.errors import TaskDefinitionError

BACKENDS = ("docker", "swarm")
DEFAULT_SCHEDULE_TIMEOUT = 120.0


class Settings(NamedTuple):
    backend: str = "docker"
    registry: str | None = None  # host[:port] the Swarm nodes pull from (and the manager pushes to)
    callback_address: str | None = None  # host[:port] at which task containers reach this process
    schedule_timeout: float = DEFAULT_SCHEDULE_TIMEOUT  # seconds a service may wait for a node


_lock = threading.Lock()
_configured: dict[str, Any] = {}
_generation = 0  # bumped by configure(): the process's default backend is chosen again on its next use


def _fresh_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at the fork


os.register_at_fork(after_in_child=_fresh_lock_in_child)


def generation() -> int:
    """How many times configure() has run: backends.default_backend() connects anew when it changes (so
    this module, below the backends, never has to reach up to them)."""
    return _generation


def configure(*, backend: str | None = None, registry: str | None = None, callback_address: str | None = None,
              schedule_timeout: float | None = None) -> None:
    """Choose the backend (``"docker"`` or ``"swarm"``) and the Swarm settings from Python; ``None``
    leaves a setting as configured elsewhere. Takes effect for calls made after it returns."""
    given = {"backend": backend, "registry": registry, "callback_address": callback_address,
             "schedule_timeout": schedule_timeout}
    checked = _checked({k: v for k, v in given.items() if v is not None}, "configure")
    global _generation
    with _lock:
        _configured.update(checked)
        _generation += 1  # the next call connects to what is configured now


def reset() -> None:
    """Forget what configure() set (tests)."""
    with _lock:
        _configured.clear()


def settings() -> Settings:
    """The settings in force: pyproject, then the environment, then configure()."""
    merged: dict[str, Any] = {}
    merged.update(_checked(_from_pyproject(), "[tool.dockertask] in pyproject.toml"))
    env = {"backend": os.environ.get("DOCKERTASK_BACKEND"), "registry": os.environ.get("DOCKERTASK_SWARM_REGISTRY"),
           "callback_address": os.environ.get("DOCKERTASK_SWARM_CALLBACK"),
           "schedule_timeout": os.environ.get("DOCKERTASK_SWARM_SCHEDULE_TIMEOUT")}
    merged.update(_checked({k: v for k, v in env.items() if v}, "the environment"))
    with _lock:
        merged.update(_configured)
    return Settings(**merged)


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (the working directory)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def tool_table(pyproject: Path) -> dict[str, Any]:
    """``[tool.dockertask]`` of a pyproject.toml; OSError or tomllib.TOMLDecodeError if it cannot be read
    (not UTF-8, not TOML, or ``tool`` / ``tool.dockertask`` not tables: each says which). Parsed once per
    version of the file (backend settings, images, defaults and by_value all read it: ~1.5 ms a parse);
    the table is shared, so it is read, never changed."""
    stat = pyproject.stat()
    return _tool_table(pyproject, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _tool_table(pyproject: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        text = pyproject.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise tomllib.TOMLDecodeError(f"the file is not UTF-8 ({exc})") from None
    tool = tomllib.loads(text).get("tool", {})
    if not isinstance(tool, dict):
        raise tomllib.TOMLDecodeError(f"tool = {tool!r}: expected a table ([tool])")
    table = tool.get("dockertask", {})
    if not isinstance(table, dict):
        raise tomllib.TOMLDecodeError(f"tool.dockertask = {table!r}: expected a table ([tool.dockertask])")
    return table


def _from_pyproject() -> dict[str, Any]:
    path = find_pyproject()
    if path is None:
        return {}
    try:
        table = tool_table(path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskDefinitionError(f"{path}: cannot read [tool.dockertask]: {exc}") from None
    swarm = table.get("swarm", {})
    out: dict[str, Any] = {}
    if "backend" in table:
        out["backend"] = table["backend"]
    if isinstance(swarm, dict):
        out.update({k: swarm[k] for k in ("registry", "callback_address", "schedule_timeout") if k in swarm})
    return out


def _checked(values: dict[str, Any], where: str) -> dict[str, Any]:
    """The values, or a TaskDefinitionError naming the setting, the value and what was expected."""
    out = dict(values)
    if "backend" in out:
        name = str(out["backend"]).strip().lower()
        if name not in BACKENDS:
            raise TaskDefinitionError(f"backend={out['backend']!r} in {where}: expected one of {', '.join(BACKENDS)}")
        out["backend"] = name
    for key in ("registry", "callback_address"):
        if key in out and (not isinstance(out[key], str) or not out[key].strip() or "/" in out[key]):
            raise TaskDefinitionError(f"{key}={out[key]!r} in {where}: expected host or host:port")
    if "schedule_timeout" in out:
        try:
            seconds = float(out["schedule_timeout"])
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 < seconds <= 86400:
            raise TaskDefinitionError(f"schedule_timeout={out['schedule_timeout']!r} in {where}: "
                                      "expected seconds between 0 and 86400")
        out["schedule_timeout"] = seconds
    return out
