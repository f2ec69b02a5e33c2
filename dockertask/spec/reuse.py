"""``ReusePolicy``: how many warm replicas a task keeps, and for how long (the pool is calls/replicas.py)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dockertask.errors import TaskDefinitionError


@dataclass(frozen=True)
class ReusePolicy:
    """Keep up to ``replicas`` warm containers for this task; remove each after ``idle_ttl`` unused.

    ``setup``: a function run once in each replica, in the process every call is forked from, before the
    task's first call there: what it leaves in its module (a model loaded into a global) is in every call,
    copy-on-write, and nothing a call changes reaches the next. It travels with the task's function (they
    share their module's globals in the replica), and its failure fails each call with its exception."""

    replicas: int = 1
    idle_ttl: dt.timedelta | int | float = dt.timedelta(minutes=5)
    setup: Callable[[], Any] | None = None
    idle_seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or not 1 <= self.replicas <= 256:
            raise TaskDefinitionError(f"ReusePolicy(replicas={self.replicas!r}): expected a whole number from 1 "
                                      "to 256")
        ttl = self.idle_ttl.total_seconds() if isinstance(self.idle_ttl, dt.timedelta) else self.idle_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or not 0 < ttl <= 86400:
            raise TaskDefinitionError(f"ReusePolicy(idle_ttl={self.idle_ttl!r}): expected a duration over 0 and "
                                      "at most a day")
        object.__setattr__(self, "idle_seconds", float(ttl))
        if self.setup is not None and not callable(self.setup):
            raise TaskDefinitionError(f"ReusePolicy(setup={self.setup!r}): expected a function taking no "
                                      "arguments, or None")

    @property
    def setup_name(self) -> str | None:
        """The setup function's qualified name (what the pool's key and the spec show of it)."""
        if self.setup is None:
            return None
        return f"{getattr(self.setup, '__module__', '?')}.{getattr(self.setup, '__qualname__', repr(self.setup))}"

    def to_dict(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "idle_ttl_seconds": self.idle_seconds, "setup": self.setup_name}
