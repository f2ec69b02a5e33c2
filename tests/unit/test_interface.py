"""Strong interfaces: binding, and type checks on inputs (before any container) and outputs."""

from __future__ import annotations

import dataclasses
import typing
from typing import NamedTuple

import pytest

from dockertask import TaskInputError, TaskOutputError
from dockertask.spec.interface import Interface


class Pair(NamedTuple):
    a: int
    b: str


@dataclasses.dataclass
class Config:
    name: str
    sizes: list[int]


Vector = list[float]


def f(x: int, y: float = 1.0, tags: list[str] | None = None, pair: Pair | None = None,
      cfg: Config | None = None, v: Vector | None = None, m: dict[str, tuple[int, ...]] | None = None,
      any_: typing.Any = None, raw=None) -> int:  # type: ignore[no-untyped-def]
    return x


IFACE = Interface.from_function(f, "mod.f")


def test_positional_arguments_map_to_names() -> None:
    """Positional arguments are bound to their parameter names, defaults filled in."""
    bound = IFACE.bind((1, 2.5), {})
    assert bound.arguments["x"] == 1 and bound.arguments["y"] == 2.5 and bound.arguments["tags"] is None


@pytest.mark.parametrize("kwargs", [
    {"x": 1}, {"x": 1, "y": 2}, {"x": 1, "tags": ["a"]}, {"x": 1, "pair": Pair(1, "b")},
    {"x": 1, "cfg": Config("n", [1, 2])}, {"x": 1, "v": [1.0, 2]}, {"x": 1, "m": {"k": (1, 2, 3)}},
    {"x": 1, "any_": object()}, {"x": 1, "raw": object()},
])
def test_good_inputs_pass(kwargs: dict[str, object]) -> None:
    """Values that fit their annotations (ints for floats included) are accepted."""
    IFACE.bind((), kwargs)


@pytest.mark.parametrize("kwargs,where,expected,given", [
    ({"x": "1"}, "x", "int", "str"),
    ({"x": True}, "x", "int", "bool"),
    ({"x": 1, "tags": ["a", 2]}, "tags[1]", "str", "int"),
    ({"x": 1, "pair": (1, "b")}, "pair", "Pair", "tuple"),
    ({"x": 1, "cfg": Config("n", [1, "2"])}, "cfg.sizes[1]", "int", "str"),
    ({"x": 1, "m": {"k": (1, "2")}}, "m['k'][1]", "int", "str"),
    ({"x": 1, "v": "abc"}, "v", "float", "str"),
])
def test_bad_inputs_name_parameter_expected_and_given(kwargs: dict[str, object], where: str, expected: str,
                                                      given: str) -> None:
    """A wrong type raises TaskInputError (a TypeError) naming the parameter, expected and given."""
    with pytest.raises(TaskInputError) as info:
        IFACE.bind((), kwargs)
    text = str(info.value)
    assert isinstance(info.value, TypeError)
    assert f"parameter {where!r}" in text and expected in text and f"got {given}" in text


def test_missing_argument_is_named() -> None:
    """A missing required argument names the parameter and its type."""
    with pytest.raises(TaskInputError, match="missing parameter 'x': expected int"):
        IFACE.bind((), {"y": 2.0})


def test_unknown_argument_is_named() -> None:
    """An unknown keyword names itself and lists the real parameters."""
    with pytest.raises(TaskInputError, match="unknown parameter 'z'.*expected one of: x, y"):
        IFACE.bind((), {"x": 1, "z": 3})


def test_too_many_positionals_is_input_error() -> None:
    """Too many positional arguments is a TaskInputError too."""
    with pytest.raises(TaskInputError, match="too many positional"):
        IFACE.bind(tuple(range(20)), {})


def test_output_is_checked() -> None:
    """A return value of the wrong type raises TaskOutputError (a TypeError)."""
    IFACE.check_output(3)
    with pytest.raises(TaskOutputError, match="return value expected int, got str") as info:
        IFACE.check_output("3")
    assert isinstance(info.value, TypeError)


def test_unannotated_is_unchecked() -> None:
    """Without annotations, nothing is checked."""
    def g(a, b=2):  # type: ignore[no-untyped-def]
        return a

    iface = Interface.from_function(g, "mod.g")
    iface.bind(("anything",), {"b": object()})
    iface.check_output(object())


def test_interface_to_dict_is_json_ready() -> None:
    """The interface lists inputs with types and defaults, and the output type."""
    d = IFACE.to_dict()
    assert d["inputs"]["x"] == {"type": "int"}
    assert d["inputs"]["y"] == {"type": "float", "default": 1.0}
    assert d["output"] == "int"
