"""Helpers for testing code that calls tasks: shipped as public API, used by the pytest plugin.

- ``run_locally()``: while active, ``t(...)`` and ``t.submit(...)`` of every task run in-process
  (``t.local``): same input/output checks and secrets, no Docker.
- ``TestSecrets``: a private secrets directory for tests; while it is active the host's real
  secrets (``DOCKERTASK_SECRETS_DIR``, ``DOCKERTASK_SECRET_*``) are out of reach.

The pytest plugin exposes both as the fixtures ``dockertask_local`` and ``dockertask_secrets``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dockertask.errors import TaskDefinitionError
from dockertask.spec.context import env_var_name
from dockertask.spec.secrets import Secret

_local = 0
_local_lock = threading.Lock()


def running_locally() -> bool:
    """True inside ``run_locally()`` (checked by every task call)."""
    return _local > 0


@contextmanager
def run_locally() -> Iterator[None]:
    """Run every task call in-process while the block runs (process-wide: submits included)."""
    global _local
    with _local_lock:
        _local += 1
    try:
        yield
    finally:
        with _local_lock:
            _local -= 1


class TestSecrets:
    """Secret values for tests, in a directory of their own: ``secrets.set("db", "password", "pw")``."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def set(self, group: str, key: str | None, value: str) -> Path:
        """Give ``Secret(group, key)`` a value for tasks started while these secrets are active."""
        Secret(group, key)  # the same name rules as a real request
        if not isinstance(value, str):
            raise TaskDefinitionError(f"TestSecrets.set({group!r}, {key!r}, value={value!r}): expected a str value")
        path = self.directory / group / (key or group)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(value)
        path.chmod(0o600)
        return path

    def env_name(self, group: str, key: str | None) -> str:
        """The host variable that would override the file (cleared while these secrets are active)."""
        return env_var_name("DOCKERTASK_SECRET_", group, key)


@contextmanager
def test_secrets(directory: Path) -> Iterator[TestSecrets]:
    """Point the host's secret lookup at ``directory`` and hide every ``DOCKERTASK_SECRET_*`` variable."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DOCKERTASK_SECRET_") or k == "DOCKERTASK_SECRETS_DIR"}
    for k in saved:
        del os.environ[k]
    os.environ["DOCKERTASK_SECRETS_DIR"] = str(directory)
    try:
        yield TestSecrets(directory)
    finally:
        for k in [k for k in os.environ if k.startswith("DOCKERTASK_SECRET_") or k == "DOCKERTASK_SECRETS_DIR"]:
            del os.environ[k]
        os.environ.update(saved)


test_secrets.__test__ = False  # type: ignore[attr-defined]
