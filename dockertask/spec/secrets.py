"""Secrets: what a task asks for, where the host finds the values, how the container gets them.

On the host a value comes from a chain of providers (env ``DOCKERTASK_SECRET_<GROUP>_<KEY>``,
then the file ``$DOCKERTASK_SECRETS_DIR/<group>/<key>``); a vault-style provider is one more
object with a ``get`` method, added with ``register_provider``, and the runner never changes.
Values reach the container on its stdin, after start: never in its config (``docker inspect``),
an image layer, or the log stream. The bootstrap writes FILE secrets to a tmpfs.
"""

from __future__ import annotations

import enum
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from dockertask.errors import SecretNotFoundError, TaskDefinitionError
from dockertask.spec.context import env_var_name

SECRETS_MOUNT = "/etc/secrets"
# tmpfs options: world-writable root (sticky) so a non-root USER can create its group dir,
# which the bootstrap makes 0700 with files 0400: readable by the task's user only.
# What one call's secrets may weigh: they travel on stdin and sit in a tmpfs (RAM) in the container.
MAX_SECRETS_BYTES = 64 * 2**20
SecretValue = str | bytes  # bytes when the value is not UTF-8 text (a keystore, a key file)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class MountType(enum.Enum):
    ANY = "any"
    ENV_VAR = "env_var"
    FILE = "file"


@dataclass(frozen=True)
class Secret:
    """A secret the task needs: ``Secret("db", "password")``; FILE unless told otherwise."""

    group: str
    key: str | None = None
    mount_requirement: MountType = MountType.FILE
    MountType: ClassVar[type[MountType]] = MountType

    def __post_init__(self) -> None:
        for field_name, value in (("group", self.group), ("key", self.key)):
            if value is None and field_name == "key":
                continue
            if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
                raise TaskDefinitionError(f"Secret.{field_name}={value!r}: expected letters, digits, '_', '-' or '.'")
        if not isinstance(self.mount_requirement, MountType):
            raise TaskDefinitionError(f"Secret.mount_requirement={self.mount_requirement!r}: "
                                      "expected a Secret.MountType")

    @property
    def env_name(self) -> str:
        """The variable the task sees for an ENV_VAR secret."""
        return env_var_name("_FSEC_", self.group, self.key)

    @property
    def path(self) -> str:
        """The file the task sees for a FILE (or ANY) secret."""
        return f"{SECRETS_MOUNT}/{self.group}/{self.key or self.group}"

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "key": self.key, "mount_requirement": self.mount_requirement.name}


class SecretProvider(Protocol):
    def get(self, group: str, key: str | None) -> SecretValue | None:
        """The value (str, or bytes for binary secrets), or None when this provider does not have it."""
        ...


class EnvProvider:
    """``DOCKERTASK_SECRET_<GROUP>_<KEY>``, upper-cased, other characters as ``_``."""

    def get(self, group: str, key: str | None) -> str | None:
        name = env_var_name("DOCKERTASK_SECRET_", group, key)
        value = os.environ.get(name)
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes the locale could not decode: they cannot be sent as text
                raise TaskDefinitionError(f"{name}: its value is not valid UTF-8; write a binary secret to a "
                                          "file under DOCKERTASK_SECRETS_DIR instead") from None
        return value


class DirectoryProvider:
    """``$DOCKERTASK_SECRETS_DIR/<group>/<key>`` (default ``~/.dockertask/secrets``)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = directory

    @property
    def directory(self) -> Path:
        d = self._directory or os.environ.get("DOCKERTASK_SECRETS_DIR") or Path.home() / ".dockertask" / "secrets"
        return Path(d)

    def get(self, group: str, key: str | None) -> SecretValue | None:
        path = self.directory / group / (key or group)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise SecretNotFoundError(f"secret group={group!r} key={key!r}: {path} is a directory; expected a "
                                      "file holding the value") from None
        except OSError as exc:
            raise SecretNotFoundError(f"secret group={group!r} key={key!r}: {path} cannot be read: "
                                      f"{exc.strerror or exc}") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data  # a binary secret: the task reads it with secrets.get_bytes or from its file


_providers: list[SecretProvider] = [EnvProvider(), DirectoryProvider()]
_providers_lock = threading.Lock()


def register_provider(provider: SecretProvider, *, first: bool = True) -> None:
    """Add a provider to the chain (by default ahead of the built-in ones)."""
    with _providers_lock:
        _providers.insert(0, provider) if first else _providers.append(provider)


def lookup(group: str, key: str | None) -> SecretValue | None:
    with _providers_lock:
        chain = list(_providers)
    for provider in chain:
        value = provider.get(group, key)
        if value is not None:
            return value
    return None


def resolve(requests: tuple[Secret, ...], task_name: str) -> dict[Secret, SecretValue]:
    """Every requested value, or SecretNotFoundError (naming group and key) before anything starts."""
    values: dict[Secret, SecretValue] = {}
    for s in requests:
        value = lookup(s.group, s.key)
        if value is None:
            raise SecretNotFoundError(
                f"task {task_name}: secret group={s.group!r} key={s.key!r} not found on the host; "
                f"set {env_var_name('DOCKERTASK_SECRET_', s.group, s.key)} or write it to "
                f"{DirectoryProvider().directory / s.group / (s.key or s.group)}"
            )
        if s.mount_requirement is MountType.ENV_VAR and (isinstance(value, bytes) or "\x00" in value):
            raise SecretNotFoundError(
                f"task {task_name}: secret group={s.group!r} key={s.key!r} is binary (or holds a NUL) and cannot be "
                "an environment variable; request it as a FILE secret (the default) and read it with "
                "current_context().secrets.get_bytes(...)")
        values[s] = value
    total = sum(_size(v) for v in values.values())
    if total > MAX_SECRETS_BYTES:
        biggest = max(values, key=lambda k: _size(values[k]))
        raise SecretNotFoundError(
            f"task {task_name}: its secrets are too large for the container ({total:,} bytes, the limit is "
            f"{MAX_SECRETS_BYTES >> 20} MiB); the largest is group={biggest.group!r} key={biggest.key!r} "
            f"({_size(values[biggest]):,} bytes): pass data that big as an argument instead")
    return values


def _size(value: SecretValue) -> int:
    return len(value) if isinstance(value, bytes) else len(value.encode())


def tmpfs_mib(values: dict[Secret, SecretValue]) -> int:
    """The size of a secrets tmpfs that holds these values, in MiB (4 at least)."""
    need = sum(_size(v) + 4096 for v in values.values())  # a block per file, for the metadata
    return max(4, -(-need // 2**20) + 1)


def tmpfs_of(mib: int) -> dict[str, str]:
    """The secrets tmpfs of ``mib`` MiB (a limit, not an allocation)."""
    return {SECRETS_MOUNT: f"rw,noexec,nosuid,nodev,size={mib}m,mode=1777"}


def to_frame(values: dict[Secret, SecretValue]) -> bytes:
    """The secrets frame the bootstrap reads from stdin (a binary value travels as bytes)."""
    from dockertask.runtime.protocol import encode_meta

    return encode_meta([{"group": s.group, "key": s.key, "env_name": s.env_name, "value": v,
                         "mount": "env" if s.mount_requirement is MountType.ENV_VAR else "file"}
                        for s, v in values.items()])
