"""Tasks the CLI tests run as `dockertask run .../pkg/flows.py:TASK` (imports a sibling module)."""

from __future__ import annotations

from dataclasses import dataclass

from dockertask import File, Resources, task
from pkg.helpers import Box, area


@task
def total(boxes: list[Box], scale: float = 1.0, labels: dict[str, int] | None = None) -> dict[str, float]:
    """Sum the areas of some boxes."""
    print("computing", len(boxes))
    return {"area": sum(area(b) for b in boxes) * scale, "labels": float(len(labels or {}))}


@task
def explode(msg: str) -> None:
    raise ValueError(msg)


@task(cache=True, cache_version="7")
def cached_square(x: int) -> int:
    return x * x


@task
def describe(loud: bool = False, name: str | None = None) -> str:
    text = name or "nobody"
    return text.upper() if loud else text


@dataclass
class CleanConfig:
    threshold: float = 0.5
    name: str = "raw"


@task(limits=Resources(mem="256m"))
def clean(raw: File, cfg: CleanConfig) -> str:
    with open(raw) as f:
        return f"{cfg.name}:{cfg.threshold}:{f.read().strip()}"
