import pytest

from inventory import Item


@pytest.fixture
def stock_lines() -> list[str]:
    return ["apple, 3, 50", "pear, 2, 75"]


@pytest.fixture
def stock(stock_lines: list[str]) -> list[Item]:
    from inventory import parse_line

    return [parse_line(line) for line in stock_lines]
