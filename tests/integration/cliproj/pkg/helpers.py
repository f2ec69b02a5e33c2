from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Box:
    w: int
    h: int


def area(b: Box) -> int:
    return b.w * b.h
