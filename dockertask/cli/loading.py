"""Loading FILE.py as `dockertask run` does (and `cache list`, to tell which entries are current)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import click


def load_module(file: str) -> Any:
    """Import FILE as pyflyte does: its package root goes on sys.path, so siblings import."""
    path = Path(file).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise click.UsageError(f"FILE={file!r}: expected an existing .py file")
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    sys.path.insert(0, str(root))
    name = ".".join(parts)
    if all(part.isidentifier() for part in parts) and name not in sys.modules and not _shadows(parts[0], root):
        return importlib.import_module(name)
    # `a.b.py` is no module name, and `json.py` would import the standard library's json: load the file
    # itself, under a name of its own.
    import re

    own = "dockertask_run_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(own, path)
    if spec is None or spec.loader is None:
        raise click.UsageError(f"FILE={file!r}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[own] = module
    spec.loader.exec_module(module)
    return module


def _shadows(top: str, root: Path) -> bool:
    """Whether ``top`` names a module that imports from elsewhere than ``root`` (the standard library's
    json for a json.py, say): importing by name would not load the user's file."""

    sys.path.remove(str(root))
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    finally:
        sys.path.insert(0, str(root))
    if found is None:
        return False
    places = [found.origin or "", *(found.submodule_search_locations or [])]
    return not any(place and Path(place).resolve().is_relative_to(root) for place in places)
