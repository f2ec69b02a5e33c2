"""``current_context()``: what a running task may ask about its own execution.

``Task.local`` sets it through a ContextVar, so concurrent ``local`` runs in threads never see each
other's context; in a container it is made from the header the bootstrap publishes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from dockertask.errors import SecretNotFoundError

SECRETS_DIR = "/etc/secrets"


def env_var_name(prefix: str, group: str, key: str | None) -> str:
    """``PREFIX_GROUP_KEY`` upper-cased, any other character as ``_`` (shared with the host)."""
    parts = [group] + ([key] if key else [])
    return prefix + "_".join("".join(c if c.isalnum() else "_" for c in p).upper() for p in parts)


@dataclass(frozen=True)
class SecretsReader:
    """Reads secrets the way the container received them: env var first, then file."""

    lookup: Callable[[str, str | None], str | bytes | None] | None = None

    def get(self, group: str, key: str | None = None) -> str:
        """The secret as text; a binary one (not UTF-8) says to use ``get_bytes``."""
        value = self.get_bytes(group, key)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretNotFoundError(f"secret group={group!r} key={key!r} is binary, not UTF-8 text: read it with "
                                      "current_context().secrets.get_bytes(group, key)") from None

    def get_bytes(self, group: str, key: str | None = None) -> bytes:
        """The secret's exact bytes (for keystores, keys and other binary secrets)."""
        value: str | bytes | None
        if self.lookup is not None:  # local runs: ask the host provider chain
            value = self.lookup(group, key)
        else:
            value = os.environ.get(env_var_name("_FSEC_", group, key))
            path = os.path.join(SECRETS_DIR, group, key or group)
            if value is None and os.path.exists(path):
                with open(path, "rb") as f:
                    value = f.read()
        if value is None:
            raise SecretNotFoundError(
                f"secret group={group!r} key={key!r} was not requested by this task "
                "(add it to secret_requests=[Secret(group, key)])"
            )
        return value.encode("utf-8") if isinstance(value, str) else value


@dataclass(frozen=True)
class ExecutionContext:
    """``attempt`` is 1 on the first try; ``in_container`` tells a container run from ``local``."""

    task_name: str = ""
    attempt: int = 1
    run_id: str = ""
    in_container: bool = False
    secrets: SecretsReader = field(default_factory=SecretsReader)
    extra: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[ExecutionContext] = ContextVar("dockertask_context")
_DEFAULT = ExecutionContext()  # frozen (immutable), so sharing it is safe


def current_context() -> ExecutionContext:
    """The context of the task running now (a default one outside any task)."""
    try:
        return _current.get()
    except LookupError:
        pass
    # In a container the bootstrap publishes the call's header as a module of its own (it does not import
    # this one, which costs a task that never asks); every thread of the task sees it.
    call = sys.modules.get("_dockertask_call")
    header = getattr(call, "header", None)
    if not isinstance(header, dict):
        return _DEFAULT
    return ExecutionContext(task_name=header.get("task", ""), attempt=int(header.get("attempt", 1)),
                            run_id=header.get("run_id", ""), in_container=True)


def enter_local(ctx: ExecutionContext) -> Any:
    """Set the context for an in-process run; returns the token to reset it with."""
    return _current.set(ctx)


def leave_local(token: Any) -> None:
    _current.reset(token)
