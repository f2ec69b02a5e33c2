"""A tiny package under test: parses stock lines and values them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    sku: str
    count: int
    price_cents: int


def parse_line(line: str) -> Item:
    """``"sku,count,price"`` → Item; a malformed line raises ValueError naming it."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 3:
        raise ValueError(f"expected sku,count,price: {line!r}")
    sku, count, price = parts
    return Item(sku, int(count), int(price))


def value_cents(items: list[Item]) -> int:
    return sum(i.count * i.price_cents for i in items)
