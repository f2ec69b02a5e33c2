"""``ReusePolicy``: how many warm replicas a task keeps, and for how long (the pool is calls/replicas.py)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from dockertask.errors import TaskDefinitionError


@dataclass(frozen=True)
class ReusePolicy:
    """Keep up to ``replicas`` warm containers for this task; remove each after ``idle_ttl`` unused."""

    replicas: int = 1
    idle_ttl: dt.timedelta | int | float = dt.timedelta(minutes=5)
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

    def to_dict(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "idle_ttl_seconds": self.idle_seconds}
