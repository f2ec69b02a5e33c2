"""Stand-in for ``_pytest.assertion.rewrite`` inside an image that has no pytest.

pytest rewrites every ``assert`` of a test module into code that calls helpers of the module it
binds as the global ``@pytest_ar``. A test body that runs in a container carries that rewritten
code (cloudpickle ships the code object as the host compiled it), so the helpers must exist
there too: the plugin's pickler sends the ``@pytest_ar`` reference as this module, which the
runtime zip always carries, whether or not the image has a pytest of its own.

Each helper mirrors pytest's own (pytest 7-9), with stdlib only, so a failing ``assert 2 == 3``
reads the same as it would on the host: the compared values, and ``where`` lines for calls.
"""

from __future__ import annotations

import difflib
import pprint
import reprlib
import types
from collections.abc import Iterable, Sequence

_MAX_REPR = 240


class _SafeRepr(reprlib.Repr):
    """reprlib with pytest's limits, and a repr that raises shown as such instead of raising."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = _MAX_REPR
        self.maxother = _MAX_REPR
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 20

    def repr_instance(self, obj: object, level: int) -> str:
        try:
            text = repr(obj)
        except Exception as exc:  # a broken __repr__ must not hide the assertion
            return f"<[{type(exc).__name__}({exc}) raised in repr()] {type(obj).__name__} object at {id(obj):#x}>"
        if len(text) > _MAX_REPR:
            half = (_MAX_REPR - 3) // 2
            text = text[:half] + "..." + text[-half:]
        return text


_saferepr_impl = _SafeRepr()


def _saferepr(obj: object) -> str:
    if isinstance(obj, types.MethodType):
        return obj.__name__
    try:
        text = _saferepr_impl.repr(obj)
    except Exception as exc:
        text = f"<[{type(exc).__name__} raised in repr()] {type(obj).__name__} object>"
    return text.replace("\n", "\\n")


def _format_assertmsg(obj: object) -> str:
    replaces = [("\n", "\n~"), ("%", "%%")]
    if not isinstance(obj, str):
        obj = _saferepr(obj)
        replaces.append(("\\n", "\n~"))
    for old, new in replaces:
        obj = obj.replace(old, new)
    return obj


def _should_repr_global_name(obj: object) -> bool:
    if callable(obj):
        return False
    try:
        return not hasattr(obj, "__name__")
    except Exception:
        return True


def _format_boolop(explanations: Iterable[str], is_or: bool) -> str:
    explanation = "(" + (" or " if is_or else " and ").join(explanations) + ")"
    return explanation.replace("%", "%%")


def _diff(left: object, right: object) -> list[str]:
    """A short 'Full diff' for == of strings, sequences, sets and dicts (as pytest gives)."""
    if isinstance(left, str) and isinstance(right, str):
        a, b = left.splitlines(keepends=True) or [""], right.splitlines(keepends=True) or [""]
    elif isinstance(left, (list, tuple, dict, set, frozenset)) and type(left) is type(right):
        a = pprint.pformat(left, width=80).splitlines()
        b = pprint.pformat(right, width=80).splitlines()
    else:
        return []
    lines = [line.rstrip("\n") for line in difflib.ndiff(b, a)]
    return ["Full diff:"] + ["  " + line for line in lines if not line.startswith("? ")][:60]


def _reprcompare(op: str, left: object, right: object) -> str | None:
    summary = f"{_saferepr(left)} {op} {_saferepr(right)}"
    extra = _diff(left, right) if op == "==" else []
    if not extra:
        return None
    return "\n~".join([summary, *extra]).replace("%", "%%")


def _failed(result: object) -> bool:
    try:
        return not result
    except Exception:  # e.g. numpy's ambiguous truth value: treat as the failing one
        return True


def _call_reprcompare(ops: Sequence[str], results: Sequence[bool], expls: Sequence[str],
                      each_obj: Sequence[object]) -> str:
    # The first comparison of a chain (a < b < c) that failed, or the last one, as pytest picks.
    i = next((k for k, res in enumerate(results) if _failed(res)), len(results) - 1)
    try:
        custom = _reprcompare(ops[i], each_obj[i], each_obj[i + 1])
    except Exception:
        custom = None
    return custom if custom is not None else expls[i]


def _format_explanation(explanation: str) -> str:
    """pytest's format_explanation: '\\n{' opens a 'where' level, '\\n}' closes it, '\\n~' continues."""
    lines = _split_explanation(explanation)
    result = _format_lines(lines)
    return "\n".join(result)


def _split_explanation(explanation: str) -> list[str]:
    raw_lines = (explanation or "").split("\n")
    lines = [raw_lines[0]]
    for values in raw_lines[1:]:
        if values and values[0] in ["{", "}", "~", ">"]:
            lines.append(values)
        else:
            lines[-1] += "\\n" + values
    return lines


def _format_lines(lines: Sequence[str]) -> list[str]:
    result = list(lines[:1])
    stack = [0]
    stackcnt = [0]
    for line in lines[1:]:
        if line.startswith("{"):
            s = "and   " if stackcnt[-1] else "where "
            stack.append(len(result))
            stackcnt[-1] += 1
            stackcnt.append(0)
            result.append(" +" + "  " * (len(stack) - 1) + s + line[1:])
        elif line.startswith("}"):
            stack.pop()
            stackcnt.pop()
            result[stack[-1]] += line[1:]
        else:
            assert line[0] in ["~", ">"]
            stack[-1] += 1
            indent = len(stack) if line.startswith("~") else len(stack) - 1
            result.append("  " * indent + line[1:])
    assert len(stack) == 1
    return result


def _call_assertion_pass(lineno: int, orig: str, expl: str) -> None:
    return None


def _check_if_assertion_pass_impl() -> bool:
    return False
