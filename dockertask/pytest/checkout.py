"""The suite image: the image a suite runs in, with the checkout and what pytest needs added.

``pytest --dockertask-image=REF`` runs the suite in containers of an image made here from REF:

- the checkout (pytest's rootdir, minus caches, virtual environments and VCS data) at the same
  absolute path as on the host, so rootdir, cwd, ``__file__``-relative data files and node ids are
  the host's. It goes in with the engine's archive upload (``put_archive``), never a bind mount: a
  remote engine works the same;
- under ``SITE``, the pure-Python distributions the host's session imported (pytest and its own
  dependencies, plugins, the project's test dependencies, a non-editable install of the project),
  with their ``.dist-info`` so their pytest11 entry points load as on the host. The worker puts SITE
  *last* on ``sys.path``: what the image has of its own wins;
- the import roots of modules imported from inside the checkout (``src/`` of a src layout, an
  editable install's directory), which the worker puts first on ``sys.path``.

The image is committed from a stopped container and tagged by the hash of all of that and REF's id:
an unchanged checkout reuses it, and every worker and per-test container starts from it at no cost.
Older suite images of the same rootdir are removed (the newest two stay).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockertask.errors import DockerTaskError, ImageResolutionError

SITE = "/opt/dockertask-pytest/site"
REPOSITORY = "dockertask-suite"
LABEL = "dockertask.suite"
ROOT_LABEL = "dockertask.suite.rootdir"
KEEP = 2  # suite images kept per rootdir: this session's and the one before
# Not the checkout: caches, environments, VCS data (what `docker run -v $PWD:/src` would carry but no
# test reads). A virtual environment inside the checkout is the host's, for the host's platform.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "__pycache__", ".pytest_cache",
                       ".mypy_cache", ".ruff_cache", ".hypothesis", "node_modules", ".dockertask", ".eggs",
                       ".direnv"})
_SKIP_FILES = (".pyc", ".pyo")
# Never supplied: what the worker turns off (-p no:...), and this package (the host's side).
_NOT_SUPPLIED = frozenset({"dockertask", "xdist", "execnet"})
_PYTEST_ITSELF = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py")


class SuiteError(DockerTaskError):
    """The suite image could not be made (it fails the session's container tests once)."""


@dataclasses.dataclass
class Supply:
    """What the host's session used that the container may lack."""

    files: list[tuple[str, str]]  # (host path, path under SITE)
    compiled: list[str]  # top-level modules used that have compiled parts: supplied without them, if at all
    path: list[str]  # import roots inside the checkout, first on sys.path in the container
    # The Python modules of each compiled top the session imported: the worker imports them to learn
    # whether the package works without its extension here (dataclasses default: older callers).
    probe: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _stdlib_dirs() -> tuple[str, ...]:
    """The interpreter's own library (the base's: in a venv, sysconfig's platstdlib is the venv)."""
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
                                      "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix})
    return tuple(os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths)


def _is_site(path: str, std: tuple[str, ...]) -> bool:
    return "site-packages" in path or "dist-packages" in path or not (path + os.sep).startswith(std)


def _site_entries(std: tuple[str, ...]) -> list[str]:
    """sys.path entries outside the stdlib, longest first (a module's entry is the longest that holds it)."""
    entries = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    return sorted((e for e in entries if _is_site(e, std)), key=len, reverse=True)


def supply(rootdir: Path, before: frozenset[str] = frozenset(), plugins: tuple[str, ...] = ()) -> Supply:
    """What to supply, and what cannot be, from the modules this process imported since ``before`` (the
    modules there when pytest loaded this plugin: pytest's and the host's own, like the Docker SDK that
    dockertask itself uses) and the top-level modules of the session's ``plugins``; after collection."""
    import importlib.metadata

    root = os.path.realpath(rootdir) + os.sep
    std = _stdlib_dirs()
    entries = _site_entries(std)
    tops: dict[str, str] = {}  # top-level name -> the sys.path entry it came from
    path: list[str] = []
    for name, module in list(sys.modules.items()):
        if name in before and name.split(".")[0] not in plugins:
            continue
        file = getattr(module, "__file__", None)
        if not file or "." in name and name.split(".")[0] in tops:
            continue
        real = os.path.realpath(file)
        if not _is_site(real, std):
            continue
        depth = name.count(".") + (1 if os.path.basename(real).startswith("__init__.") else 0)
        entry = os.path.dirname(real)
        for _ in range(depth):
            entry = os.path.dirname(entry)
        if real.startswith(root):
            if entry not in path and (entry + os.sep).startswith(root):
                path.append(entry)
            continue
        holder = next((e for e in entries if real.startswith(e + os.sep)), None)
        if holder is None:
            continue
        top = os.path.relpath(real, holder).split(os.sep)[0]
        tops.setdefault(top.split(".")[0] if top.endswith((".py", ".so")) or "." in top else top, holder)
    dists = importlib.metadata.packages_distributions()
    required = set(tops)  # imported by the session's own code: the image must have what is not supplied
    # pytest and what it requires; each plugin's distribution whole (a plugin module imports its package
    # only when a hook runs: hypothesis's pytest plugin, at the end of the session). These are optional:
    # a plugin that cannot be supplied is left out (with its entry point), as the image would lack it.
    wanted = _requirements(dists, "pytest") | set(_PYTEST_ITSELF)
    for top in plugins:
        for dist_name in dists.get(top, []):
            wanted |= {t for t, owners in dists.items() if dist_name in owners}
    required -= wanted
    for top in sorted(wanted):
        if top not in tops:
            holder = _find(top, entries)
            if holder is not None:
                tops[top] = holder
    # dockertask's own dependencies (the Docker SDK, requests and theirs) are the host side's: imported
    # after collection starts, not needed compiled in the image.
    ours = _requirements(dists, "dockertask")
    found = {top: _top_files(holder, top) for top, holder in tops.items() if top not in _NOT_SUPPLIED}
    unshippable = {top for top, fs in found.items() if any(f.endswith((".so", ".pyd")) for f, _ in fs)}
    bad_dists = {d for top in unshippable for d in dists.get(top, [])}  # a distribution goes whole or not
    files: list[tuple[str, str]] = []
    compiled: list[str] = []
    seen_dists: set[str] = set()
    for top in sorted(found):
        owners = dists.get(top, [])
        if top in unshippable or any(d in bad_dists for d in owners):
            if top in required and top not in ours:
                compiled.append(top)
                # Its Python files still go: many such packages import without their extension (wrapt,
                # which testcontainers needs, falls back to pure Python). The worker tries the import and
                # names the module as missing only if that fails.
                files += [(host, arc) for host, arc in found[top] if not host.endswith((".so", ".pyd"))]
            continue
        files += found[top]
        for dist_name in owners:
            if dist_name not in seen_dists:
                seen_dists.add(dist_name)
                files += _dist_info(tops[top], dist_name)
    probe = {top: sorted(name for name, module in list(sys.modules.items())
                         if name.split(".")[0] == top and str(getattr(module, "__file__", "")).endswith(".py"))
             for top in compiled}
    return Supply(files=files, compiled=sorted(compiled), path=path, probe=probe)


def _requirements(dists: Any, root: str) -> set[str]:
    """Top-level modules of distribution ``root`` and everything it requires (extras aside)."""
    import importlib.metadata
    import re

    names: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in names:
            continue
        names.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [m.group(0) for r in requires if "extra ==" not in r and (m := re.match(r"[A-Za-z0-9._-]+", r))]
    return {top for top, owners in dists.items() if any(o.lower().replace("_", "-") in names for o in owners)}


def _find(top: str, entries: list[str]) -> str | None:
    for entry in entries:
        if os.path.isdir(os.path.join(entry, top)) or os.path.isfile(os.path.join(entry, top + ".py")):
            return entry
    return None


def _top_files(holder: str, top: str) -> list[tuple[str, str]]:
    """The files of top-level module or package ``top`` under the sys.path entry ``holder``."""
    found: list[tuple[str, str]] = []
    package = os.path.join(holder, top)
    if os.path.isdir(package):
        for dirpath, dirnames, filenames in os.walk(package):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if not f.endswith(_SKIP_FILES):
                    full = os.path.join(dirpath, f)
                    found.append((full, os.path.relpath(full, holder)))
        return found
    for f in sorted(os.listdir(holder)):
        if f.split(".")[0] == top and not os.path.isdir(os.path.join(holder, f)) and not f.endswith(_SKIP_FILES):
            found.append((os.path.join(holder, f), f))
    return found


def _dist_info(holder: str, dist_name: str) -> list[tuple[str, str]]:
    norm = dist_name.replace("-", "_").lower()
    for d in os.listdir(holder):
        if d.endswith(".dist-info") and d.split("-")[0].replace("-", "_").lower() == norm:
            base = os.path.join(holder, d)
            return [(os.path.join(base, f), os.path.join(d, f)) for f in sorted(os.listdir(base))
                    if os.path.isfile(os.path.join(base, f)) and f in ("METADATA", "entry_points.txt",
                                                                        "top_level.txt", "RECORD")]
    return []


def _checkout(rootdir: str) -> Iterator[tuple[str, str]]:
    """(host path, path in the image) of the checkout's files, directories and links, sorted."""
    yield rootdir, rootdir
    for dirpath, dirnames, filenames in os.walk(rootdir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for d in dirnames:
            yield os.path.join(dirpath, d), os.path.join(dirpath, d)
        for f in sorted(filenames):
            if not f.endswith(_SKIP_FILES):
                full = os.path.join(dirpath, f)
                yield full, full


def _entries(rootdir: Path, supplied: Supply) -> Iterator[tuple[str | None, str]]:
    """(host path, or None for a directory made here; path in the image) of everything the suite image
    adds: the checkout's ancestors and itself at its own path, the supplied files under SITE with the
    host's byte code of them where it is valid."""
    root = os.path.realpath(rootdir)
    ancestors = []
    parent = os.path.dirname(root)
    while parent != os.path.dirname(parent):
        ancestors.append(parent)
        parent = os.path.dirname(parent)
    for d in reversed(ancestors):
        yield None, d.lstrip("/")
    for source, arcname in _checkout(root):
        yield source, arcname.lstrip("/")
    site = SITE.lstrip("/")
    made: set[str] = set()
    for source, rel in supplied.files:
        arc = os.path.join(site, rel)
        parts = os.path.dirname(arc).split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                yield None, d
        yield source, arc
        compiled = _valid_pyc(source) if source.endswith(".py") else None
        if compiled is not None:
            cache = os.path.join(os.path.dirname(arc), "__pycache__")
            if cache not in made:
                made.add(cache)
                yield None, cache
            yield compiled, os.path.join(cache, os.path.basename(compiled))


def fingerprint(rootdir: Path, supplied: Supply) -> str:
    """What names the suite image: each entry's path in the image, kind, mode, size and mtime (to the
    nanosecond), never its content. An edit changes the mtime, so it makes a new image; a session whose
    image exists reads no file (the tar written only to be hashed was 0.5 s of each boltons session)."""
    digest = hashlib.sha256()
    for source, arcname in _entries(rootdir, supplied):
        if source is None:
            digest.update(f"d\0{arcname}\0".encode("utf-8", "surrogateescape"))
            continue
        try:
            st = os.lstat(source)
        except OSError:
            continue  # gone since the walk: it will not be in the tar either
        link = os.readlink(source) if stat.S_ISLNK(st.st_mode) else ""
        digest.update(f"{st.st_mode:o}\0{arcname}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\0"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def write_tar(rootdir: Path, supplied: Supply, out: Any) -> None:
    """The checkout at its own path and the supplied files under SITE, as a tar written to ``out`` (each
    entry as a File/Directory stream has it: a large data file in pieces)."""
    from dockertask import tarformat
    from dockertask.files import entry_pieces

    for source, arcname in _entries(rootdir, supplied):
        if source is None:
            out.write(tarformat.header(arcname, tarformat.DIRECTORY, 0o755, 0))
            continue
        try:
            st = os.lstat(source)
        except OSError:
            continue  # gone since the walk
        for piece in entry_pieces(arcname, source, st):
            out.write(piece)
    out.write(tarformat.END)


def _valid_pyc(source: str) -> str | None:
    """The host's byte-compiled file of a supplied module, when it is of this very source (same mtime and
    size in its header; pip writes them at install). In the image it spares every container compiling
    pytest's ~100 modules from source: 0.6 s of each per-test container's start, against 0.2 s. The
    container's Python is the host's major.minor, so the same cache tag; it fixes the code's file name
    to where it loads the source from."""
    import importlib.util

    try:
        pyc = importlib.util.cache_from_source(source)
        with open(pyc, "rb") as f:
            head = f.read(16)
        st = os.stat(source)
    except (OSError, NotImplementedError, ValueError):
        return None
    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER or int.from_bytes(head[4:8], "little") != 0:
        return None  # another Python's, or hash-based
    mtime, size = int.from_bytes(head[8:12], "little"), int.from_bytes(head[12:16], "little")
    if mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
        return None
    return pyc


def suite_image(backend: Any, base: str, rootdir: Path, supplied: Supply) -> str:
    """The suite image for ``base`` (already on the engine) and this checkout: made once per content."""
    api = getattr(backend, "api", None)
    if api is None:
        raise SuiteError("--dockertask-image runs on a single Docker or Podman engine; this backend "
                         f"({type(backend).__name__}) cannot take the checkout yet")
    info = backend.image_info(base)
    if info is None:
        raise ImageResolutionError(f"--dockertask-image: image {base!r} is not on the engine")
    content = fingerprint(rootdir, supplied)
    tag = hashlib.sha256(f"{info.id}\0{content}".encode()).hexdigest()[:20]
    ref = f"{REPOSITORY}:{tag}"
    if backend.image_info(ref) is not None:
        return ref
    with tempfile.TemporaryFile(prefix="dockertask-checkout-") as tar:
        write_tar(rootdir, supplied, tar)
        tar.seek(0)
        _commit(backend, api, base, ref, tar, str(os.path.realpath(rootdir)))
    _prune(api, str(os.path.realpath(rootdir)), keep=ref)
    return ref


def _commit(backend: Any, api: Any, base: str, ref: str, tar: Any, root: str) -> None:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    from dockertask.host import owner

    cid = None
    try:
        created = api.create_container(base, command=["true"], labels={LABEL: "build", **owner.owner_labels()})
        cid = created["Id"]
        api.put_archive(cid, "/", tar)
        repository, tag = ref.split(":")
        api.commit(cid, repository=repository, tag=tag,
                   conf={"Labels": {LABEL: "1", ROOT_LABEL: root}})
    except (DockerException, RequestException) as exc:
        raise SuiteError(f"--dockertask-image: the checkout could not be added to {base!r}: {exc}") from None
    finally:
        if cid is not None:
            try:
                api.remove_container(cid, force=True)
            except (DockerException, RequestException):
                pass


def _prune(api: Any, root: str, keep: str) -> None:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        found = api.images(filters={"label": f"{ROOT_LABEL}={root}"})
        found.sort(key=lambda i: i.get("Created", 0), reverse=True)
        kept = 0
        for image in found:
            if keep in (image.get("RepoTags") or []) or kept < KEEP - 1:
                kept += keep not in (image.get("RepoTags") or [])
                continue
            api.remove_image(image["Id"], force=True)
    except (DockerException, RequestException):
        pass  # an image in use by another session stays; the next prune takes it
