from __future__ import annotations

from dataclasses import dataclass

SCALE = 10


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class DomainError(Exception):
    """A user-defined exception type that must come back as itself."""


def scaled(x: int) -> int:
    return x * SCALE
