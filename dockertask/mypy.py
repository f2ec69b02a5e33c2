"""A mypy plugin: a ``str`` or ``os.PathLike`` is accepted where a task's parameter is ``File`` or
``Directory``, as dockertask accepts it at run time (contract: "Files and directories").

    [tool.mypy]
    plugins = ["dockertask.mypy"]

    count_lines(data="inputs/big.csv")      # no longer "incompatible type str; expected File"

A task's call signature is its function's (a ParamSpec), and no standard typing can say "this parameter,
and a str too", so the widening is made where mypy builds the signature of ``Task.__call__``, ``submit``
and ``local``. Pyright has no plugins: there, pass ``File("inputs/big.csv")``.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.plugin import MethodSigContext, Plugin
from mypy.types import CallableType, Instance, ProperType, Type, UnionType, get_proper_type

_PATH_TYPES = ("dockertask.files.File", "dockertask.files.Directory")
_METHODS = ("dockertask.tasks.Task.__call__", "dockertask.tasks.Task.submit", "dockertask.tasks.Task.local")


def _widen(ctx: MethodSigContext) -> CallableType:
    signature = ctx.default_signature
    widened = []
    for arg in signature.arg_types:
        proper: ProperType = get_proper_type(arg)
        if isinstance(proper, Instance) and proper.type.fullname in _PATH_TYPES:
            text = ctx.api.named_generic_type("builtins.str", [])
            pathlike = ctx.api.named_generic_type("os.PathLike", [text])
            widened.append(UnionType.make_union([arg, text, pathlike]))
        else:
            widened.append(arg)
    changed: list[Type] = widened
    return signature.copy_modified(arg_types=changed)


class DockertaskPlugin(Plugin):
    def get_method_signature_hook(self, fullname: str) -> Callable[[MethodSigContext], CallableType] | None:
        return _widen if fullname in _METHODS else None


def plugin(version: str) -> type[Plugin]:
    return DockertaskPlugin
