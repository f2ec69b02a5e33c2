"""Image names: configuration, ``{{.image.NAME.fqn|version}}`` templates, the default image.

Names come from ``[tool.dockertask.images]`` in the nearest ``pyproject.toml`` above the
current directory, overridden by ``DOCKERTASK_IMAGE_<NAME>``. ``default`` always exists: unless
configured it is dockertask's own runtime image for the host's Python, built on first use from
the project's ``Dockerfile`` (on ``python:X.Y-slim`` when a registry can be reached, else on a
Debian base bootstrapped with debootstrap, no registry at all).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from dockertask.errors import ImageBuildError, ImageNotFoundError, ImageResolutionError

if TYPE_CHECKING:
    from dockertask.backends.base import Backend

HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
DEFAULT_TEMPLATE = "{{.image.default.fqn}}:{{.image.default.version}}"
DEFAULT_REPO = "dockertask-runtime"
BASE_REPO = "dockertask-base"
MANAGED_LABEL = "dockertask.managed"
# Debian suites whose python3 is a given major.minor: what debootstrap can give without a registry.
DEBIAN_SUITE_FOR_PYTHON = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}

_TEMPLATE = re.compile(r"\{\{\s*\.image\.([A-Za-z0-9_\-]+)\.(fqn|version)\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*?\}\}")


def asset_path(name: str) -> Path:
    """A file shipped with dockertask: inside the wheel (``_assets``) or the source checkout."""
    here = Path(__file__).resolve().parent.parent  # the package directory
    for candidate in (here / "_assets" / name, here.parent / name):
        if candidate.exists():
            return candidate
    raise ImageBuildError(f"dockertask's {name} is missing from the installation (looked in {here})")


@lru_cache(maxsize=1)
@functools.lru_cache(maxsize=1)  # its inputs ship with the package: they do not change in a process
def default_image_ref() -> str:
    """``dockertask-runtime:pyX.Y-<hash>``: the hash changes when the Dockerfile or bootstrap does."""
    digest = hashlib.sha256()
    for name in ("Dockerfile", "images/bootstrap-base.sh"):
        digest.update(asset_path(name).read_bytes())
    return f"{DEFAULT_REPO}:py{HOST_PYTHON}-{digest.hexdigest()[:10]}"


def split_ref(ref: str) -> tuple[str, str]:
    """``repo/path:tag`` → (``repo/path``, ``tag``); a missing tag is ``latest``; digests kept whole."""
    if "@" in ref:
        return ref, ""
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


@functools.lru_cache(maxsize=16)
def _pyproject_images(path: str, mtime_ns: int) -> dict[str, str]:
    """[tool.dockertask.images] of one pyproject.toml, parsed once per version of the file."""
    pyproject = Path(path)
    try:
        from dockertask.config import tool_table  # on use: a task definition need not load config

        table = tool_table(pyproject).get("images", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ImageResolutionError(f"{pyproject}: cannot read [tool.dockertask.images]: {exc}") from None
    if not isinstance(table, dict):
        raise ImageResolutionError(f"{pyproject}: [tool.dockertask.images] must be a table of name = \"ref\"")
    images = {}
    for name, ref in table.items():
        if not isinstance(ref, str) or not ref:
            raise ImageResolutionError(
                f"{pyproject}: [tool.dockertask.images] {name} = {ref!r}: expected an image reference string"
            )
        images[name.lower()] = ref
    return images


def configured_images(start: Path | None = None) -> dict[str, str]:
    """NAME → reference, from pyproject then the environment (env wins); ``default`` always there."""
    images: dict[str, str] = {}
    from dockertask.config import find_pyproject

    pyproject = find_pyproject(start)
    if pyproject is not None:
        try:
            mtime = pyproject.stat().st_mtime_ns
        except OSError:
            mtime = -1
        images.update(_pyproject_images(str(pyproject), mtime))
    for key, value in os.environ.items():
        if key.startswith("DOCKERTASK_IMAGE_") and value:
            images[key[len("DOCKERTASK_IMAGE_"):].lower()] = value
    images.setdefault("default", default_image_ref())
    return images


# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_REFERENCE = re.compile(rf"^{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                        r"(?:@sha256:[a-f0-9]{64})?$")


def check_reference(container_image: str) -> None:
    """Refuse what no engine would take as an image reference; templates are checked once resolved."""
    if not isinstance(container_image, str):
        raise ImageResolutionError(f"container_image={container_image!r}: expected a reference, a template or "
                                   "an ImageSpec")
    if "{" in container_image or "}" in container_image:
        rest = _TEMPLATE.sub("x", container_image)
        if "{" in rest or "}" in rest:
            raise ImageResolutionError(
                f"container_image={_clip(container_image)}: cannot understand its braces; "
                "expected {{.image.NAME.fqn}} or {{.image.NAME.version}}")
        return
    if len(container_image) > 512 or not _REFERENCE.match(container_image):
        raise ImageResolutionError(
            f"container_image={_clip(container_image)}: not an image reference; expected e.g. 'python:3.11-slim', "
            "'registry:5000/team/app:1.2' or '...@sha256:<64 hex>' (lower-case name, no spaces)")


def _clip(value: str) -> str:
    return repr(value) if len(value) <= 120 else repr(value[:100]) + f"... ({len(value)} characters)"


def resolve(container_image: str | None, start: Path | None = None) -> str:
    """A template or reference → a concrete image reference (no engine needed)."""
    template = container_image or DEFAULT_TEMPLATE
    if "{{" not in template:
        check_reference(template)
        return template
    images = configured_images(start)

    def sub(m: re.Match[str]) -> str:
        name, part = m.group(1).lower(), m.group(2)
        if name not in images:
            known = ", ".join(sorted(images))
            raise ImageResolutionError(
                f"container_image={container_image!r} names image {m.group(1)!r}, which is not configured; "
                f"known images: {known} (add it to [tool.dockertask.images] in pyproject.toml "
                f"or set DOCKERTASK_IMAGE_{m.group(1).upper()})"
            )
        fqn, tag = split_ref(images[name])
        return fqn if part == "fqn" else tag

    resolved = _TEMPLATE.sub(sub, template)
    if leftover := _ANY_TEMPLATE.search(resolved):
        raise ImageResolutionError(
            f"container_image={container_image!r}: cannot understand {leftover.group(0)!r}; "
            "expected {{.image.NAME.fqn}} or {{.image.NAME.version}}"
        )
    if not _REFERENCE.match(resolved):
        raise ImageResolutionError(f"container_image={container_image!r} resolves to {_clip(resolved)}, which is "
                                   "not an image reference (check [tool.dockertask.images] / DOCKERTASK_IMAGE_*)")
    return resolved


# -- making sure an image exists -----------------------------------------------------------

_build_thread_lock = threading.Lock()
Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    print(f"dockertask: {line}", file=sys.stderr, flush=True)


def ensure_image(backend: Backend, ref: str, progress: Progress = _stderr_progress) -> None:
    """Make ``ref`` present: already there, the default image (built), or pulled."""
    if backend.image_info(ref) is not None:
        return
    if ref == default_image_ref():
        build_default_image(backend, progress)
        return
    if not backend.pull(ref):
        raise ImageNotFoundError(
            f"image {ref!r} is not on the Docker engine and could not be pulled "
            "(no registry reachable, or no such image); build or load it first"
        )


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One image build at a time, across threads and processes. Not re-entrant: never call
    a function that takes it (build_default_image) while holding it."""
    import filelock

    from dockertask.host.paths import user_cache_dir

    directory = user_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with _build_thread_lock, filelock.FileLock(str(directory / "image-build.lock")):
        yield


def build_default_image(backend: Backend, progress: Progress = _stderr_progress) -> str:
    """Build dockertask's runtime image once, even with several processes asking at once."""
    ref = default_image_ref()
    with build_lock():
        if backend.image_info(ref) is not None:
            return ref
        progress(f"building the default image {ref} (first use only)")
        base = _base_image(backend, progress)
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            tar.add(str(asset_path("Dockerfile")), arcname="Dockerfile")
        backend.build(context.getvalue(), ref, {"BASE": base}, {MANAGED_LABEL: "true", "dockertask.kind": "default"},
                      lambda line: progress(f"  {line}"))
        progress(f"built {ref}")
        return ref


def _base_image(backend: Backend, progress: Progress) -> str:
    slim = f"python:{HOST_PYTHON}-slim"
    if backend.image_info(slim) is not None:
        return slim
    progress(f"trying to pull {slim}")
    if backend.pull(slim):
        return slim
    suite = DEBIAN_SUITE_FOR_PYTHON.get(HOST_PYTHON)
    if suite is None:
        raise ImageBuildError(
            f"cannot build the default image for Python {HOST_PYTHON}: {slim} cannot be pulled and no Debian "
            f"suite ships Python {HOST_PYTHON} (known: {DEBIAN_SUITE_FOR_PYTHON}); "
            "set DOCKERTASK_IMAGE_DEFAULT to an image with that Python"
        )
    base = f"{BASE_REPO}:{suite}"
    if backend.image_info(base) is not None:
        return base
    progress(f"no registry reachable: bootstrapping {base} from Debian packages (about a minute)")
    script = asset_path("images/bootstrap-base.sh")
    tail: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dockertask-base-") as tmp:
        rootfs = os.path.join(tmp, "rootfs.tar")
        with subprocess.Popen(["sh", str(script), suite, rootfs], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                tail = [*tail[-29:], line.rstrip()]
                if line.startswith(("I: Retrieving", "I: Validating")):
                    continue  # hundreds of these; the rest reads as a progress log
                progress(f"  {line.rstrip()}")
        if proc.returncode != 0:
            raise ImageBuildError(f"bootstrapping the base image {base} failed (exit {proc.returncode})",
                                  "\n".join(tail))
        progress(f"importing {base}")
        path_env = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        backend.import_rootfs(rootfs, base, changes=[path_env, 'CMD ["python3"]'])
    return base
