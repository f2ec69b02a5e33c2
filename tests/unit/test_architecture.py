"""The package's shape: no import cycles, subpackages in layers, and a runtime that needs only the stdlib.

docs/architecture.md says the same in prose; these tests keep it true as code moves.

What counts as an import here: every ``import`` statement the interpreter can execute, at module level or
inside a function (a deferred import is still a dependency: it only changes *when* the cycle bites).
Imports under ``if TYPE_CHECKING:`` do not count: they never run, and a signature that names a higher
layer's type (the runner's ``task: Task``) creates no load-order dependency. Counting them would force
``Any`` into annotations for no behaviour at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dockertask

PACKAGE = Path(dockertask.__file__).parent

# Which parts of the package each part may import, lowest first. A part is a subpackage (``calls``) or a
# top-level module (``tasks``); ``dockertask`` itself (the lazy public names) may be imported by anyone.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "host": {"errors"},
    "tarformat": set(),  # the tar format of file streams (a container imports it with files)
    "files": {"tarformat"},
    "runtime": {"files"},  # files lazily, in the container (see test_runtime_needs_only_the_stdlib)
    "plugins": {"errors"},
    "spec": {"errors", "files", "runtime", "host", "plugins"},
    "images": {"errors", "config", "host", "runtime", "spec"},
    "runs": {"errors", "host"},  # the record: below the runner, which writes it, and the CLI, which reads it
    "backends": {"errors", "config", "host", "files", "runtime", "plugins", "spec", "images"},
    "calls": {"errors", "config", "host", "files", "runtime", "plugins", "spec", "images", "backends", "runs"},
    "testing": {"errors", "spec"},
    "defaults": {"errors", "config", "plugins", "spec"},  # [tool.dockertask.defaults], and how layers merge
    "tasks": {"errors", "config", "host", "files", "runtime", "plugins", "spec", "images", "backends", "calls",
              "testing", "defaults"},
    "fanout": {"errors", "host", "calls", "tasks", "config", "runs"},
    "workflows": {"errors", "spec", "runs", "defaults"},  # flytekit's @workflow/@dynamic: a body run in a Run
    "mypy": set(),  # the mypy plugin: mypy loads it, nothing of dockertask does
    "pytest": {"errors", "config", "host", "tarformat", "files", "runtime", "plugins", "spec", "images",
               "backends", "calls", "testing", "tasks", "fanout"},
    "cli": {"errors", "config", "host", "files", "runtime", "plugins", "spec", "images", "backends", "calls",
            "testing", "tasks", "fanout", "runs"},
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports when it runs (see the module docstring)."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.orelse:
                    visit_statement(stmt)
                continue
            visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        else:
            visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m not in ("dockertask", name)}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each one import cycle or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dockertask"


def test_the_package_has_no_import_cycles() -> None:
    """No module imports, directly or through others, a module that imports it."""
    assert _cycles(_graph()) == []


def test_the_walker_finds_a_cycle_and_skips_type_only_imports() -> None:
    """The cycle finder is not vacuous: a two-module loop is found, a chain is not."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    graph = _graph()
    # The runner names Task only in annotations (TYPE_CHECKING): no edge; tasks.py calls the runner: an edge.
    assert "dockertask.tasks" not in graph["dockertask.calls.runner"]
    assert "dockertask.calls.runner" in graph["dockertask.tasks"]


# The few imports that reach up, each deferred to the one function that needs it, and why.
UPWARD = {
    # ImageSpec.build() is the user's button (contract: "Images"): it builds on the process's default
    # backend, which lives above images; nothing in backends imports imagespec, so no cycle follows.
    ("dockertask.images.imagespec", "dockertask.backends"),
}


def test_every_part_imports_only_the_layers_below_it() -> None:
    """Each subpackage or top-level module imports only what LAYERS (and docs/architecture.md) allow."""
    wrong = []
    for module, imported in _graph().items():
        part = _part(module)
        if part == "dockertask":
            continue
        assert part in LAYERS, f"{module}: a new part of the package; place it in LAYERS and the architecture doc"
        for other in imported:
            target = _part(other)
            if target != part and target not in LAYERS[part] and (module, other) not in UPWARD:
                wrong.append(f"{module} imports {other}")
    assert wrong == []


def test_the_top_level_names_its_jobs() -> None:
    """The package's top level stays small: public modules and one folder per concern."""
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.startswith("."))
    assert entries == sorted([
        "__init__.py", "__main__.py", "py.typed", "errors.py", "config.py", "tasks.py", "fanout.py", "files.py",
        "plugins.py", "testing.py", "defaults.py", "workflows.py", "mypy.py", "tarformat.py",
        "runtime", "spec", "host", "calls", "images", "backends", "pytest", "cli", "runs",
    ])


STDLIB_CHECK = """
import importlib, sys
sys.path.insert(0, {root!r})
names = {names!r}
for name in names:
    importlib.import_module(name)
top = [m.split('.')[0] for m in sys.modules]
foreign = sorted(m for m in top if m not in sys.stdlib_module_names and m not in ('dockertask', '__main__'))
ours = sorted(m for m in sys.modules if m.startswith('dockertask.') and not m.startswith('dockertask.runtime'))
print(foreign, ours)
"""


def test_the_runtime_needs_only_the_stdlib() -> None:
    """Every module of dockertask/runtime imports with no site-packages (python -S -I), pulling in nothing
    but the stdlib and the runtime itself: it runs in images that have only a Python."""
    names = sorted(n for n in _modules() if n.startswith("dockertask.runtime"))
    assert "dockertask.runtime.bootstrap" in names and "dockertask.runtime.protocol" in names
    code = STDLIB_CHECK.format(root=str(PACKAGE.parent), names=names)
    out = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] []"


def test_the_runtime_defers_what_the_zip_brings() -> None:
    """Beyond the stdlib, runtime modules import only what the runtime zip carries (cloudpickle,
    dockertask.files), and only inside functions: in the container, once the zip is on sys.path."""
    late_only = {"cloudpickle", "cloudpickle.cloudpickle", "dockertask.files", "dockertask"}
    # The suite worker runs in a suite image, where pytest is the image's or the one supplied there.
    late_also = {"pytestworker.py": {"pytest", "_pytest.reports"}}
    for path in sorted((PACKAGE / "runtime").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__" or name.startswith("dockertask.runtime"):
                    continue
                assert name in late_only | late_also.get(path.name, set()), f"{path.name}: imports {name}"
                assert node.col_offset > 0, f"{path.name}: imports {name} at module level"
