"""``ImageSpec``: an image made for a task, built on first use and never rebuilt.

``image_name()`` is ``name:<hash>`` over a canonical form of the spec (and the content of the
files it copies), so equal specs share a tag and any change gives a new one.

pip packages are installed in a throw-away build stage that carries the host's pip settings
(index URLs, trusted hosts, CA bundle): the final image copies only the installed packages
from it, so neither credentials in an index URL nor the CA bundle land in any layer of the
image. This works with the engine's classic builder (the docker SDK cannot drive BuildKit, so
``RUN --mount=type=secret`` is not available to us).
"""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockertask.errors import ImageBuildError, TaskDefinitionError
from dockertask.images.refs import (
    HOST_PYTHON,
    MANAGED_LABEL,
    Progress,
    _stderr_progress,
    build_lock,
    default_image_ref,
    ensure_image,
)

if TYPE_CHECKING:
    from dockertask.backends.base import Backend

FORMAT_VERSION = 1  # bump when the generated Dockerfile changes meaning: every tag changes
BUILD_LABEL = "dockertask.build"  # on every stage of a spec's build: its leftovers are found by it
PKG_DIR = "/opt/dockertask/site-packages"
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def _strings(owner: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TaskDefinitionError(f"ImageSpec({owner}={value!r}): expected a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class ImageSpec:
    """What a task's image needs on top of its base (``None`` = dockertask's default image)."""

    name: str
    base_image: str | None = None
    python_version: str | None = None
    packages: Sequence[str] = field(default_factory=list)
    apt_packages: Sequence[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)
    commands: Sequence[str] = field(default_factory=list)
    copy: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise TaskDefinitionError(f"ImageSpec(name={self.name!r}): expected a lower-case image repository name "
                                      "like 'team/trainer' (no tag: dockertask adds one)")
        for label in ("packages", "apt_packages", "commands", "copy"):
            object.__setattr__(self, label, _strings(label, getattr(self, label)))
        if not isinstance(self.env, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in self.env.items()):
            raise TaskDefinitionError(f"ImageSpec(env={self.env!r}): expected a dict of str to str")
        object.__setattr__(self, "env", dict(self.env))
        if self.python_version is not None and self.python_version != HOST_PYTHON:
            raise TaskDefinitionError(f"ImageSpec(python_version={self.python_version!r}): tasks run with the host's "
                                      f"Python, {HOST_PYTHON}; pickles do not cross major.minor versions")
        for path in self.copy:
            if not Path(path).exists():
                raise TaskDefinitionError(f"ImageSpec(copy=[{path!r}]): no such file or directory "
                                          f"(relative to {Path.cwd()})")

    @property
    def base(self) -> str:
        return self.base_image or default_image_ref()

    def canonical(self) -> dict[str, Any]:
        """Everything that decides the image's content, in a stable order."""
        return {
            "format": FORMAT_VERSION, "base": self.base, "python": self.python_version or HOST_PYTHON,
            "packages": list(self.packages), "apt_packages": list(self.apt_packages),
            "env": sorted(self.env.items()), "commands": list(self.commands),
            "copy": [[p, _content_hash(Path(p))] for p in self.copy],
        }

    def image_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()
        return f"{self.name}:{digest[:16]}"

    def build(self) -> bool:
        """Build this image now unless its tag exists (as a task's first call or `dockertask images build`
        would); True when it was built now. ImageBuildError with the log's tail when it fails."""
        from dockertask.backends import default_backend

        return build(self, default_backend())

    def dockerfile(self) -> str:
        # Every stage is labelled with the tag it builds: what the classic builder leaves untagged of it
        # (the pip stage's image, the steps of a failed build) is found by that label and removed.
        stage = f"LABEL {BUILD_LABEL}={self.image_name().rpartition(':')[2]}"
        lines = ["# generated by dockertask from an ImageSpec", f"FROM {self.base} AS system", stage]
        for k, v in sorted(self.env.items()):
            lines.append(f"ENV {k}={json.dumps(v)}")
        if self.apt_packages:
            lines.append(
                "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                + " ".join(_shell_quote(p) for p in self.apt_packages) + " && rm -rf /var/lib/apt/lists/*"
            )
        if self.packages:
            lines += [
                "",
                "# A stage that is thrown away: the host's pip settings exist only here.",
                "FROM system AS packages",
                stage,
                "COPY .dockertask-pip/ /tmp/dockertask-pip/",
                "RUN set -e; if ! python3 -m pip --version >/dev/null 2>&1; then "
                "python3 -m ensurepip --default-pip >/dev/null 2>&1 || { apt-get update && "
                "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip; }; fi; "
                "PIP_CONFIG_FILE=/tmp/dockertask-pip/pip.conf PIP_BREAK_SYSTEM_PACKAGES=1 "
                f"PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --no-cache-dir --target {PKG_DIR} "
                + " ".join(_shell_quote(p) for p in self.packages),
                "",
                "FROM system",
                f"COPY --from=packages {PKG_DIR} {PKG_DIR}",
                # A .pth file puts the packages on sys.path of whatever Python the base has.
                "RUN python3 -c \"import os, site; d = site.getsitepackages()[0]; os.makedirs(d, exist_ok=True); "
                f"open(os.path.join(d, 'dockertask-imagespec.pth'), 'w').write('{PKG_DIR}\\\\n')\"",
                f"ENV PATH={PKG_DIR}/bin:$PATH",
            ]
        for i, path in enumerate(self.copy):
            dest = "/root/" + Path(path).as_posix().lstrip("/").replace("../", "")
            lines.append(f"COPY copy/{i}/ {json.dumps(str(Path(dest).parent) + '/')}")
        for command in self.commands:
            lines.append(f"RUN {command}")
        return "\n".join(lines) + "\n"


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(f.relative_to(path.parent).as_posix().encode() + b"\0")
        digest.update(str(f.stat().st_mode & 0o111).encode() + b"\0")
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def host_pip_settings() -> tuple[str, bytes | None, list[str]]:
    """The host's pip.conf as the build will see it, the CA bundle it trusts, and notes.

    Only what a container can use is carried: http(s) index URLs, trusted hosts, timeout, and
    the content of the ``cert`` bundle. Local paths (file:// indexes, find-links) cannot be
    reached from a build and are left out, with a note.
    """
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    settings: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1].strip()
        settings.setdefault(name, []).extend(value.strip().strip("'\"").split())
    for env, name in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
                      ("PIP_TRUSTED_HOST", "trusted-host"), ("PIP_CERT", "cert")):
        if os.environ.get(env):
            settings[name] = os.environ[env].split()
    conf = configparser.ConfigParser()
    conf["global"] = {}
    notes = []
    for name in ("index-url", "extra-index-url"):
        urls = [u for u in settings.get(name, []) if u.startswith(("http://", "https://"))]
        dropped = [u for u in settings.get(name, []) if u not in urls]
        if dropped:
            notes.append(f"left out {name} {' '.join(dropped)} (a host path; a build cannot reach it)")
        if urls:
            conf["global"][name] = " ".join(dict.fromkeys(urls)) if name == "extra-index-url" else urls[-1]
    for name in ("trusted-host", "timeout"):
        if settings.get(name):
            conf["global"][name] = " ".join(dict.fromkeys(settings[name]))
    ca = None
    certs = settings.get("cert") or ([os.environ["REQUESTS_CA_BUNDLE"]] if os.environ.get("REQUESTS_CA_BUNDLE") else [])
    for cert in certs:
        if Path(cert).is_file():
            ca = Path(cert).read_bytes()
            conf["global"]["cert"] = "/tmp/dockertask-pip/ca.pem"
    text = io.StringIO()
    conf.write(text)
    return text.getvalue(), ca, notes


def build_context(spec: ImageSpec) -> tuple[bytes, list[str]]:
    buf = io.BytesIO()
    notes: list[str] = []
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("Dockerfile", spec.dockerfile().encode())
        if spec.packages:
            conf, ca, notes = host_pip_settings()
            add(".dockertask-pip/pip.conf", conf.encode())
            if ca is not None:
                add(".dockertask-pip/ca.pem", ca)
        for i, path in enumerate(spec.copy):
            p = Path(path)
            tar.add(str(p), arcname=f"copy/{i}/{p.name}")
    return buf.getvalue(), notes


_failed: dict[str, ImageBuildError] = {}  # a build that failed is not tried again by this process


def build(spec: ImageSpec, backend: Backend, progress: Progress | None = None) -> bool:
    """Build ``spec`` unless its tag exists; True when it was built now. A build that failed in this process
    raises the same error at once (every call, every test, would try it again: minutes each)."""
    ref = spec.image_name()
    if ref in _failed:
        earlier = _failed[ref]
        raise ImageBuildError(f"{earlier.args[0].split(chr(10))[0]} (earlier in this process; not tried again)",
                              earlier.log_tail)
    if backend.image_info(ref) is not None:
        return False
    try:
        return _build(spec, ref, backend, progress)
    except ImageBuildError as exc:
        _failed[ref] = exc
        raise


def _build(spec: ImageSpec, ref: str, backend: Backend, progress: Progress | None) -> bool:
    if progress is None:
        progress = _stderr_progress
    # The base first, outside the build lock: building the default image takes that lock too.
    if spec.base_image is None:
        ensure_image(backend, spec.base, progress)
    elif backend.image_info(spec.base) is None and not backend.pull(spec.base):
        raise ImageBuildError(f"ImageSpec {spec.name}: base_image {spec.base!r} is not on the engine and "
                              "cannot be pulled")
    with build_lock():
        if backend.image_info(ref) is not None:
            return False
        context, notes = build_context(spec)
        for note in notes:
            progress(f"pip: {note}")
        shown = BuildProgress(f"building {ref} (ImageSpec {spec.name})", progress)
        try:
            backend.build(context, ref, {}, {MANAGED_LABEL: "true", "dockertask.kind": "imagespec",
                                             "dockertask.imagespec": spec.name}, shown.line)
        except ImageBuildError as exc:
            shown.close(False)
            raise ImageBuildError(f"ImageSpec {spec.name}: {exc.args[0].split(chr(10))[0]}{shown.saved()}",
                                  _ANSI.sub("", exc.log_tail)) from None
        finally:
            _remove_leftovers(backend, ref)
        shown.close(True)
        return True


def _remove_leftovers(backend: Backend, ref: str) -> None:
    """The untagged images of ``ref``'s build (the pip stage's, a failed build's steps): 320-380 MB each,
    listed by `images list` as if they were the default image. The tagged result stays."""
    for image in backend.images(f"{BUILD_LABEL}={ref.rpartition(':')[2]}"):
        if not image.tags:
            backend.remove_image(image.id)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


class BuildProgress:
    """A build as one line that changes in place on a terminal (its step), or a line at its start and end
    elsewhere; the whole log (ANSI escapes taken out) is kept, and written to a file when it fails."""

    def __init__(self, title: str, progress: Progress) -> None:
        import time

        self.title, self.progress = title, progress
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.tty = progress is _stderr_progress and sys.stderr.isatty()
        if not self.tty:
            progress(f"{title}...")
        else:
            self._show("")

    def _show(self, step: str) -> None:
        text = f"dockertask: {self.title}" + (f": {step}" if step else "")
        width = 120
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            pass
        sys.stderr.write("\r\x1b[K" + text[: max(20, width - 1)])
        sys.stderr.flush()

    def line(self, raw: str) -> None:
        text = _ANSI.sub("", raw).rstrip()
        if not text:
            return
        self.lines.append(text)
        if self.tty and re.match(r"(?i)step \d+/\d+", text):  # Docker's "Step 3/7 : RUN", Podman's "STEP 3/7:"
            self._show(text)

    def close(self, ok: bool) -> None:
        import time

        took = time.monotonic() - self.started
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        if ok:
            self.progress(f"{self.title.replace('building', 'built', 1)} in {took:.0f} s")

    def saved(self) -> str:
        """Where the whole log was written (for the error), or nothing when it cannot be."""
        from dockertask.host.paths import user_cache_dir

        try:
            directory = user_cache_dir() / "build-logs"
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / (re.sub(r"[^\w.-]", "_", self.title.split()[1]) + ".log")
            path.write_text("\n".join(self.lines) + "\n")
        except (OSError, IndexError):
            return ""
        return f" (its whole log: {path})"
