"""A task's typed interface: binding arguments, and checking values against annotations.

Checks run on the host: inputs before any container starts, outputs after it returns.
Understood: builtins, ``Any``, ``Optional``/``Union``/``X | Y``, ``Literal``, ``list``, ``set``,
``frozenset``, ``dict``, ``tuple`` (fixed and ``...``), abstract collections, ``NamedTuple``,
dataclasses, ``Annotated``, ``Callable`` and any plain class (by ``isinstance``). An
unannotated parameter is unchecked. ``bool`` is not accepted where ``int`` is expected (it is
almost always a mistake); ``int`` is accepted where ``float`` or ``complex`` is (PEP 484).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from dockertask.errors import TaskInputError, TaskOutputError

_EMPTY = inspect.Parameter.empty


def type_name(tp: Any) -> str:
    if tp is type(None) or tp is None:
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__ if tp.__module__ in ("builtins", "__main__") else f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def mismatch(value: Any, tp: Any, path: str = "") -> tuple[str, str, Any] | None:
    """None when ``value`` fits ``tp``; else (where, expected, the offending value)."""
    return _mismatch(value, tp, path)


def _mismatch(value: Any, tp: Any, path: str) -> tuple[str, str, Any] | None:
    if tp is Any or tp is _EMPTY or isinstance(tp, (typing.TypeVar, str)):
        return None
    if tp is None or tp is type(None):
        return None if value is None else (path, "None", value)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return mismatch(value, args[0], path)
    if origin is typing.Union or origin is types.UnionType:
        if any(mismatch(value, arm, path) is None for arm in args):
            return None
        # One arm of the right outer type (Optional[list[str]] given a list): report inside it,
        # which names the exact element that is wrong.
        outer = [arm for arm in args if _outer_matches(value, arm)]
        return mismatch(value, outer[0], path) if len(outer) == 1 else (path, type_name(tp), value)
    if origin is typing.Literal:
        return None if value in args else (path, type_name(tp), value)
    if origin is typing.ClassVar or origin is typing.Final:
        return mismatch(value, args[0], path) if args else None
    if origin is None:
        return _plain(value, tp, path)
    if origin is collections.abc.Callable:
        return None if callable(value) else (path, type_name(tp), value)
    if not isinstance(origin, type) or not isinstance(value, origin):
        return (path, type_name(tp), value)
    return _container(value, origin, args, tp, path)


def _container(value: Any, origin: type, args: tuple[Any, ...], tp: Any, path: str) -> tuple[str, str, Any] | None:
    """The elements of a tuple, mapping or other collection already known to be an ``origin``."""
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _each(value, args[0], path)
        if args == ((),):
            args = ()
        if args and len(value) != len(args):
            return (path, f"{type_name(tp)} of length {len(args)}", value)
        for i, (item, arm) in enumerate(zip(value, args, strict=True)):
            if (bad := mismatch(item, arm, f"{path}[{i}]")) is not None:
                return bad
        return None
    if issubclass(origin, collections.abc.Mapping) and len(args) == 2:
        for k, v in value.items():
            if (bad := mismatch(k, args[0], f"{path} key {k!r}")) is not None:
                return bad
            if (bad := mismatch(v, args[1], f"{path}[{k!r}]")) is not None:
                return bad
        return None
    if issubclass(origin, collections.abc.Iterable) and len(args) == 1 and not isinstance(value, (str, bytes)):
        return _each(value, args[0], path)
    return None


def _outer_matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and isinstance(value, origin)


def _each(value: Any, tp: Any, path: str) -> tuple[str, str, Any] | None:
    indexable = isinstance(value, collections.abc.Sequence)
    for i, item in enumerate(value):
        if (bad := mismatch(item, tp, f"{path}[{i}]" if indexable else f"{path} item")) is not None:
            return bad
    return None


def _plain(value: Any, tp: Any, path: str) -> tuple[str, str, Any] | None:
    if not isinstance(tp, type):
        return None  # something we do not understand (a NewType, a string...): do not guess
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return None
    if tp is complex and isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    if tp is int and isinstance(value, bool):
        return (path, "int", value)
    if isinstance(value, tp):
        if dataclasses.is_dataclass(tp):
            return _dataclass_fields(value, tp, path)
        return None
    return (path, type_name(tp), value)


def _dataclass_fields(value: Any, tp: type, path: str) -> tuple[str, str, Any] | None:
    try:
        hints = typing.get_type_hints(tp)
    except Exception:
        return None
    for f in dataclasses.fields(tp):
        if f.name in hints and (bad := mismatch(getattr(value, f.name), hints[f.name], f"{path}.{f.name}")):
            return bad
    return None


class Param(NamedTuple):  # internal records are NamedTuples: cheaper to import than dataclasses
    name: str
    annotation: Any  # inspect.Parameter.empty when unannotated
    default: Any  # inspect.Parameter.empty when required
    kind: inspect._ParameterKind
    files: bool = False  # the annotation asks for File/Directory (str and Path are made into them)
    open: bool = False  # unannotated, Any or object: it may hold File/Directory objects too

    @property
    def required(self) -> bool:
        return self.default is _EMPTY


class Interface(NamedTuple):
    """The typed signature of a task function."""

    task_name: str
    signature: inspect.Signature
    params: tuple[Param, ...]
    output: Any  # inspect.Signature.empty when unannotated

    @classmethod
    def from_function(cls, fn: Callable[..., Any], task_name: str) -> Interface:
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:
            # An annotation that cannot be resolved (a forward reference to something not
            # importable here) is left unchecked rather than failing the decoration.
            hints = {}
        from dockertask.files import mentions

        params = []
        for p in sig.parameters.values():
            annotation = hints.get(p.name, p.annotation if not isinstance(p.annotation, str) else _EMPTY)
            params.append(Param(p.name, annotation, p.default, p.kind, mentions(annotation),
                                annotation in (_EMPTY, Any, object)))
        out = hints.get("return", sig.return_annotation)
        if isinstance(out, str):
            out = _EMPTY
        return cls(task_name, sig, tuple(params), out)

    @property
    def may_carry_files(self) -> bool:
        """Can a call's arguments hold File/Directory objects (to be sent as files)?"""
        return any(p.files or p.open for p in self.params)

    def check_shape(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The inputs fit the signature (names, count); their values are not looked at."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskInputError(self._binding_problem(args, kwargs, exc)) from None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        """Map positional arguments to names and check every value; raise TaskInputError."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskInputError(self._binding_problem(args, kwargs, exc)) from None
        bound.apply_defaults()
        by_name = {p.name: p for p in self.params}
        for name, value in bound.arguments.items():
            p = by_name[name]
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                items = [(f"{name}[{k!r}]", v) for k, v in value.items()]
            else:
                items = [(name, value)]
            if p.files and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                from dockertask.files import coerce

                value = bound.arguments[name] = coerce(value, p.annotation)  # a str or Path where File is asked
                items = [(name, value)]
            for where, v in items:
                if p.default is not _EMPTY and v is p.default:
                    continue  # a default is the author's choice, e.g. `x: int = None`
                if (bad := mismatch(v, p.annotation, where)) is not None:
                    path, expected, given = bad
                    raise TaskInputError(
                        f"task {self.task_name}: parameter {path!r} expected {expected}, "
                        f"got {type_name(type(given))} {_short(given)}"
                    )
                if p.files or p.open:
                    self._check_files(where, v)
        return bound

    def _check_files(self, where: str, value: Any) -> None:
        """Every File/Directory in an argument exists and can be read: else a TaskInputError naming the
        parameter and the path, before any container starts."""
        from dockertask.files import check_input, walk

        for path, obj in walk(value, where):
            if (problem := check_input(path, obj)) is not None:
                raise TaskInputError(f"task {self.task_name}: parameter {path!r}: {problem}")

    def _binding_problem(self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: TypeError) -> str:
        names = [p.name for p in self.params]
        accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.params)
        unknown = [k for k in kwargs if k not in names] if not accepts_kwargs else []
        if unknown:
            return (f"task {self.task_name}: unknown parameter {unknown[0]!r} (given {_short(kwargs[unknown[0]])}); "
                    f"expected one of: {', '.join(names) or 'no parameters'}")
        positional = [p for p in self.params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                          inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        filled = {p.name for p in positional[: len(args)]} | set(kwargs)
        missing = [p for p in self.params if p.required and p.name not in filled and p.kind not in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if missing:
            p = missing[0]
            expected = type_name(p.annotation) if p.annotation is not _EMPTY else "a value"
            return f"task {self.task_name}: missing parameter {p.name!r}: expected {expected}, given nothing"
        return f"task {self.task_name}: {exc}"

    def check_output(self, value: Any) -> Any:
        """The value the caller receives (checked against the declared output); as in flytekit, a task whose
        output is a one-field NamedTuple may return the bare value: it comes back wrapped in it."""
        out = self.output
        if (isinstance(out, type) and issubclass(out, tuple) and len(getattr(out, "_fields", ())) == 1
                and not isinstance(value, out)):
            value = out(value)
        if (bad := mismatch(value, self.output, "return value")) is not None:
            path, expected, given = bad
            raise TaskOutputError(
                f"task {self.task_name}: {path} expected {expected}, got {type_name(type(given))} {_short(given)}"
            )
        return value

    def to_dict(self) -> dict[str, Any]:
        inputs = {}
        for p in self.params:
            entry: dict[str, Any] = {"type": None if p.annotation is _EMPTY else type_name(p.annotation)}
            if not p.required:
                entry["default"] = _jsonable(p.default)
            inputs[p.name] = entry
        return {"inputs": inputs, "output": None if self.output is _EMPTY else type_name(self.output)}

    def fingerprint(self) -> str:
        """The signature as text: part of the cache key, so a changed interface misses."""
        return str(self.to_dict())


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
