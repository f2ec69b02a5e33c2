"""Shared task settings (contract: "Composing tasks"): what a ``@task`` does not say comes from its
``Environment``, then from ``[tool.dockertask.defaults]`` in the nearest ``pyproject.toml``, then from
flytekit's defaults.

    [tool.dockertask.defaults]
    image = "ghcr.io/acme/etl:2.1"        # container_image
    limits = { cpu = 2, mem = "4Gi" }
    requests = { mem = "1Gi" }
    environment = { LOG_LEVEL = "info" }
    retries = 2
    timeout = "30m"                       # or seconds
    docker = { shm_size = "1g", pids_limit = 512 }

Each layer replaces what the one below says, except ``environment``: its variables are merged (a task's
own win), since a project-wide ``LOG_LEVEL`` is not meant to be lost by a task that adds one more.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dockertask import config
from dockertask.errors import TaskDefinitionError

# The keywords of @task (what an Environment, override() and the project's defaults may set).
KEYWORDS = ("task_config", "cache", "cache_version", "retries", "interruptable", "deprecated", "timeout",
            "container_image", "environment", "requests", "limits", "secret_requests", "execution_mode",
            "reusable")
ALIASES = {"interruptible": "interruptable"}  # accepted spellings of a keyword

# [tool.dockertask.defaults] keys: the keywords that have a TOML form, some by a shorter name.
_TOML = {"image": "container_image", "container_image": "container_image", "limits": "limits",
         "requests": "requests", "environment": "environment", "retries": "retries", "timeout": "timeout",
         "docker": "task_config", "cache": "cache", "cache_version": "cache_version",
         "interruptible": "interruptable"}


def checked(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``settings`` with aliases spelled as the keyword; an unknown name is a TaskDefinitionError naming it
    and listing the known ones."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        keyword = ALIASES.get(name, name)
        if keyword not in KEYWORDS:
            raise TaskDefinitionError(f"{where}: unknown setting {name!r}; expected one of: {', '.join(KEYWORDS)}")
        out[keyword] = value
    return out


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """The layers, lowest first, as one: a later one's value replaces, ``environment`` is merged."""
    out: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if name == "environment" and isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
                out[name] = {**out[name], **value}
            else:
                out[name] = value
    return out


_cache: dict[Path, tuple[int, dict[str, Any]]] = {}
_lock = threading.Lock()


def project() -> dict[str, Any]:
    """``[tool.dockertask.defaults]`` of the nearest pyproject.toml as task keywords (read again when
    the file changes)."""
    path = config.find_pyproject()
    if path is None:
        return {}
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    with _lock:
        if path in _cache and _cache[path][0] == stamp:
            return dict(_cache[path][1])
    try:
        table = config.tool_table(path).get("defaults", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskDefinitionError(f"{path}: cannot read [tool.dockertask]: {exc}") from None
    found = _from_toml(table, path)
    with _lock:
        _cache[path] = (stamp, found)
    return dict(found)


def _from_toml(table: Any, path: Path) -> dict[str, Any]:
    where = f"{path}: [tool.dockertask.defaults]"
    if not isinstance(table, dict):
        raise TaskDefinitionError(f"{where} = {table!r}: expected a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _TOML:
            raise TaskDefinitionError(f"{where}: unknown key {key!r}; expected one of: {', '.join(sorted(_TOML))}")
        keyword = _TOML[key]
        try:
            out[keyword] = _value(keyword, value)
        except (TypeError, ValueError) as exc:  # Resources / Docker of a wrong table: say which key
            raise TaskDefinitionError(f"{where}: {key} = {value!r}: {exc}") from None
    return out


def _value(keyword: str, value: Any) -> Any:
    if keyword in ("limits", "requests"):
        from dockertask.spec.resources import Resources

        if not isinstance(value, dict):
            raise ValueError("expected a table such as { cpu = 2, mem = \"4Gi\" }")
        return Resources(**value)
    if keyword == "task_config":
        from dockertask.plugins import Docker

        if not isinstance(value, dict):
            raise ValueError("expected a table of Docker options such as { shm_size = \"1g\" }")
        return Docker(**value)
    if keyword == "timeout":
        return duration(value)
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: Any) -> Any:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` (or a number of seconds) as a timedelta; anything else is
    left for @task to refuse by name."""
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)):
        return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return value


def forget() -> None:
    """Read the project's defaults again (tests that write a pyproject.toml)."""
    with _lock:
        _cache.clear()
