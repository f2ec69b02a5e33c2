"""Installed distributions, as far as a call needs them: which installed packages are the user's own (they
travel by value, as the project's modules do), and which distribution provides a module an image lacks.

A project installed with ``pip install .`` lives in site-packages like any library, but no image has it:
its installer recorded that it came from a local directory (``direct_url.json`` with ``dir_info``, PEP
610), so its top-level packages go by value. ``[tool.dockertask] by_value = ["pkg"]`` adds others (a
package installed from a wheel the team built, say). A module the image lacks is reported with the
distribution that provides it on this host (``_pytest`` is ``pytest``'s), never with a suggestion to
install the user's own package from the index, which would install whatever the index has by that name.
"""

from __future__ import annotations

import functools
import json
import os
import site
import sys
import sysconfig


def _site_dirs() -> list[str]:
    return [d for d in INSTALLED_ROOTS if os.path.basename(d.rstrip(os.sep)) in ("site-packages", "dist-packages")
            and os.path.isdir(d)]


def _installed_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    paths.add(sys.base_prefix)
    paths.add(sys.prefix)
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths if p))


# sys.prefix is a parent of site-packages in a venv; a project inside the venv dir is rare but possible,
# so only the more specific stdlib/site roots decide.
INSTALLED_ROOTS = tuple(root for root in _installed_roots() if root.count(os.sep) > 2)


def _top_levels(dist_info: str) -> set[str]:
    """The importable top-level names a distribution installed (top_level.txt, else its RECORD)."""
    try:
        with open(os.path.join(dist_info, "top_level.txt"), encoding="utf-8") as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        pass
    names = set()
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8") as f:
            for line in f:
                path = line.split(",", 1)[0]
                head, sep, _ = path.partition("/")
                if path.startswith("..") or head.endswith((".dist-info", ".data")) or head == "__pycache__":
                    continue
                if sep:
                    names.add(head)
                elif head.endswith(".py"):
                    names.add(head[:-3])
    except OSError:
        pass
    return names


@functools.cache
def local_packages() -> frozenset[str]:
    """Top-level names of the distributions installed from a local directory, and those the project names
    in ``[tool.dockertask] by_value``. Found once per process: a listing of each site-packages and one
    stat per distribution (~1 ms), not importlib.metadata's parse of every one (~14 ms)."""
    names = set(_configured())
    for directory in _site_dirs():
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info"):
                continue
            dist_info = os.path.join(directory, entry)
            try:
                with open(os.path.join(dist_info, "direct_url.json"), encoding="utf-8") as f:
                    origin = json.load(f)
            except (OSError, ValueError):
                continue  # installed from an index (no record of a direct URL), or unreadable: a library
            if isinstance(origin, dict) and "dir_info" in origin:
                names |= _top_levels(dist_info)
    return frozenset(names)


def _configured() -> list[str]:
    from dockertask import config

    path = config.find_pyproject()
    if path is None:
        return []
    try:
        table = config.tool_table(path)
    except Exception:  # noqa: BLE001 - a pyproject that cannot be read is reported where it is configured
        return []
    found = table.get("by_value", [])
    if not isinstance(found, list) or not all(isinstance(n, str) for n in found):
        from dockertask.errors import TaskDefinitionError

        raise TaskDefinitionError(f"{path}: [tool.dockertask] by_value = {found!r}: expected a list of package "
                                  "names, such as [\"salesreport\"]")
    return [n.split(".")[0] for n in found]


def is_local(module_name: str) -> bool:
    """Whether ``module_name`` belongs to an installed package that is the user's own (see local_packages)."""
    return module_name.split(".")[0] in local_packages()


def distributions_of(module_name: str) -> list[str]:
    """The distributions that provide ``module_name``'s top-level package on this host (``_pytest`` →
    ``["pytest"]``), from the installed metadata; [] when none does."""
    import importlib.metadata

    top = module_name.split(".")[0]
    try:
        return sorted(set(importlib.metadata.packages_distributions().get(top, [])))
    except Exception:  # noqa: BLE001 - damaged metadata: no name to suggest
        return []


def forget() -> None:
    """Find the local packages again (tests that install one)."""
    local_packages.cache_clear()

