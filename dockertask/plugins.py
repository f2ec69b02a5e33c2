"""``task_config`` plugins: a registry from config type to a handler that adds container options.

A handler takes the config object and returns ``ContainerOptions``; the built-in ``Docker``
config is registered the same way a user's would be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from dockertask.errors import TaskDefinitionError


@dataclass(frozen=True)
class ContainerOptions:
    """What a ``task_config`` asks of the task's container, in dockertask's own terms: each backend
    translates these (and refuses, before anything starts, what it cannot enforce).

    ``host_config`` and ``create`` are raw docker SDK kwargs (for ``create_host_config`` and
    ``create_container``) for a plugin that needs an engine setting not named here: only the
    single-engine backend can apply them; the Swarm backend refuses a task that has any.
    """

    environment: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    shm_bytes: int | None = None
    user: str | None = None  # as `docker run --user`: name, uid or uid:gid
    binds: tuple[str, ...] = ()  # "source:target[:mode]"; a named volume's source is its name
    devices: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    platform: str | None = None
    pids_limit: int | None = None  # None: DEFAULT_PIDS_LIMIT, 0: no limit
    host_config: Mapping[str, Any] = field(default_factory=dict)
    create: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effective_pids_limit(self) -> int:
        """How many processes and threads the container may run: 0 for no limit."""
        return DEFAULT_PIDS_LIMIT if self.pids_limit is None else self.pids_limit

    def describe(self) -> dict[str, Any]:
        """The options that are set, for ``dockertask inspect``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
                for k, v in out.items() if v not in (None, (), {})}


# Processes + threads per task container unless Docker(pids_limit=...) says otherwise: room for
# data loaders and BLAS thread pools, not for a runaway fork or thread loop (3,000 processes and
# 10,000 threads were seen from one task before there was a limit).
DEFAULT_PIDS_LIMIT = 4096

Handler = Callable[[Any], ContainerOptions]
_handlers: dict[type, Handler] = {}
_lock = threading.Lock()


def register(config_type: type, handler: Handler) -> None:
    """Make ``task_config=config_type(...)`` valid; ``handler(config)`` gives its container options."""
    if not isinstance(config_type, type):
        raise TaskDefinitionError(f"register(config_type={config_type!r}): expected a class")
    with _lock:
        _handlers[config_type] = handler


def options_for(task_config: Any) -> ContainerOptions:
    """The options of a config object; TypeError (at decoration) for an unregistered type."""
    if task_config is None:
        return ContainerOptions()
    with _lock:
        handler = next((h for t, h in _handlers.items() if isinstance(task_config, t)), None)
        known = ", ".join(sorted(t.__qualname__ for t in _handlers))
    if handler is None:
        raise TaskDefinitionError(
            f"task_config={task_config!r}: {type(task_config).__qualname__} is not a registered plugin config; "
            f"known: {known}; register one with dockertask.plugins.register(ConfigType, handler)"
        )
    return handler(task_config)


@dataclass(frozen=True)
class Docker:
    """Extra options for the task's container, as ``docker run`` would take them.

    ``pids_limit``: how many processes and threads the task may run at once (default
    ``DEFAULT_PIDS_LIMIT``, 0 for no limit): a fork bomb or a thread leak stops there.
    ``volumes``: ``{"/host/path": "/container/path"}``, ``{"/host": {"bind": "/c", "mode": "ro"}}``
    or ``["/host:/container:ro"]``. A relative host path (``./data``, ``../shared``, ``data/raw``)
    is the directory relative to the file that defines the task, not to the current directory; a
    named volume is written ``volume:NAME``; a bare name (``data``) could be either, and is refused.
    ``user``: as ``docker run --user``; ``"host"`` runs the task as this process's uid:gid, so the
    files it writes through a bind mount belong to you, not to root.
    ``devices``: ``["/dev/fuse"]`` or ``"/dev/x:/dev/y:rwm"``.
    """

    network: str | None = None
    shm_size: str | int | None = None
    user: str | None = None
    volumes: Mapping[str, Any] | Sequence[str] | None = None
    devices: Sequence[str] | None = None
    cap_add: Sequence[str] | None = None
    platform: str | None = None
    pids_limit: int | None = None  # processes + threads; None: DEFAULT_PIDS_LIMIT, 0: no limit

    def __post_init__(self) -> None:
        if self.pids_limit is not None and (isinstance(self.pids_limit, bool) or not isinstance(self.pids_limit, int)
                                            or self.pids_limit < 0):
            raise TaskDefinitionError(f"Docker(pids_limit={self.pids_limit!r}): expected a whole number of "
                                      "processes and threads >= 1, or 0 for no limit")
        for name in ("devices", "cap_add"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise TaskDefinitionError(f"Docker({name}={value!r}): expected a list of strings")
        if self.volumes is not None and not isinstance(self.volumes, (Mapping, list, tuple)):
            raise TaskDefinitionError(f"Docker(volumes={self.volumes!r}): expected a dict or a list of "
                                      "'host:container[:mode]'")
        if self.volumes is not None:
            parse_volumes(self.volumes)  # every spec is understood (or refused) when decorating
        if self.user is not None and (not isinstance(self.user, str) or not self.user.strip()):
            raise TaskDefinitionError(f"Docker(user={self.user!r}): expected a user name, uid[:gid], or 'host'")


def _docker_options(cfg: Docker) -> ContainerOptions:
    user = cfg.user
    if user == "host":
        import os

        user = f"{os.getuid()}:{os.getgid()}"
    return ContainerOptions(
        network=cfg.network, shm_bytes=_shm_bytes(cfg.shm_size), user=user,
        binds=tuple(bind.spec() for bind in parse_volumes(cfg.volumes)) if cfg.volumes else (),
        devices=tuple(cfg.devices or ()), cap_add=tuple(cfg.cap_add or ()), platform=cfg.platform,
        pids_limit=cfg.pids_limit,
    )


def _shm_bytes(size: str | int | None) -> int | None:
    """Docker(shm_size=...) in bytes: a number, or docker's "64m" / "1g" (a TaskDefinitionError otherwise)."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    units = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    text = str(size).strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in "bkmg" else (text, "")
    if isinstance(size, str) and number.isdigit() and int(number) > 0:
        return int(number) * units[unit]
    raise TaskDefinitionError(f"Docker(shm_size={size!r}): expected bytes, or a size like '64m' or '1g'")


register(Docker, _docker_options)

RELATIVE = "rel:"  # marks a bind source still relative to the defining file (resolved by resolve_binds)
_MODES = frozenset({"ro", "rw", "z", "Z", "ro,z", "ro,Z", "rw,z", "rw,Z", "z,ro", "Z,ro", "z,rw", "Z,rw"})


@dataclass(frozen=True)
class Bind:
    source: str  # an absolute host path, RELATIVE + a relative one, or a volume name
    target: str
    mode: str = ""
    volume: bool = False

    def spec(self) -> str:
        return f"{self.source}:{self.target}" + (f":{self.mode}" if self.mode else "")


def parse_volumes(volumes: Mapping[str, Any] | Sequence[str]) -> list[Bind]:
    """Docker(volumes=...) as binds, or a TaskDefinitionError naming the spec and what would be meant."""
    import os

    entries: list[tuple[str, Any, str]] = []
    if isinstance(volumes, Mapping):
        for source, where in volumes.items():
            if isinstance(where, Mapping):
                entries.append((str(source), where.get("bind"), str(where.get("mode", ""))))
            else:
                entries.append((str(source), where, ""))
    else:
        for item in volumes:
            if not isinstance(item, str):
                raise TaskDefinitionError(f"Docker(volumes=[{item!r}]): expected 'host:container[:mode]'")
            rest = item[len("volume:"):] if item.startswith("volume:") else item
            parts = rest.split(":")
            if len(parts) not in (2, 3):
                raise TaskDefinitionError(f"Docker(volumes=[{item!r}]): expected 'host:container[:mode]' "
                                          "(or 'volume:NAME:container[:mode]')")
            entries.append((item[:len(item) - len(rest)] + parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
    binds = []
    for source, target, mode in entries:
        shown = f"Docker(volumes=...): {source!r} -> {target!r}"
        if not isinstance(target, str) or not target.startswith("/"):
            raise TaskDefinitionError(f"{shown}: the container path must be absolute, e.g. '/data'")
        if mode and mode not in _MODES:
            raise TaskDefinitionError(f"{shown}: mode {mode!r} is not one of ro, rw (optionally with z or Z)")
        if source.startswith("volume:"):
            name = source[len("volume:"):]
            if not name or not (name[0].isalnum() and all(c.isalnum() or c in "_.-" for c in name)):
                raise TaskDefinitionError(f"{shown}: {name!r} is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
            binds.append(Bind(name, target, mode, volume=True))
        elif source.startswith("~"):
            binds.append(Bind(os.path.expanduser(source), target, mode))
        elif source.startswith("/"):
            binds.append(Bind(os.path.normpath(source), target, mode))
        elif source in (".", "..") or source.startswith(("./", "../")) or "/" in source:
            binds.append(Bind(RELATIVE + source, target, mode))
        else:
            raise TaskDefinitionError(
                f"{shown}: {source!r} could be the directory {source} next to the task's file or a named volume; "
                f"write './{source}' for the directory, or 'volume:{source}' for the named volume")
    return binds


def resolve_binds(options: ContainerOptions, base_dir: str) -> ContainerOptions:
    """The options with every relative bind source made absolute against ``base_dir`` (the directory of
    the file that defines the task)."""
    import os

    if not any(b.startswith(RELATIVE) for b in options.binds):
        return options
    resolved = []
    for b in options.binds:
        if b.startswith(RELATIVE):
            source, _, rest = b[len(RELATIVE):].partition(":")
            b = f"{os.path.normpath(os.path.join(base_dir, source))}:{rest}"
        resolved.append(b)
    return replace(options, binds=tuple(resolved))
