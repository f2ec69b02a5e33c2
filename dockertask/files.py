"""``File`` and ``Directory``: data in files, streamed into a task's container and back.

Nothing is bind-mounted: an input is sent as a tar stream on the container's stdin after the call,
an output comes back as a tar stream on its control channel before the result, so a remote engine
works the same. Both streams are made here, in pieces of at most CHUNK bytes read from disk, so a
file of any size is never whole in memory on either side.

In a pickled call or result a File/Directory is not pickled: it is a *persistent id* (its index in
the stream), and the other side rebuilds it at the path where it unpacked it. This module is also
shipped in the runtime zip (it is what the container imports when a call has files), so it imports
nothing beyond the standard library and only what it needs, where it needs it.

Host-side rules for what comes back (``unpack``): entries stay inside the output directory (no
absolute names, no ``..``), a symlink must point inside its own tree, hard links, devices and fifos
are refused, set-uid/gid bits are dropped, and the files belong to the host user (they are written by
this process). A refused archive is an error, and nothing is written outside the directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

CHUNK = 1 << 20  # the size of a stream piece: a frame on the wire, a read or a write on disk
PERSISTENT_TAG = "dockertask-path"
# How deep a returned tree may nest: deeper paths pass no file system's path limit, and removing them
# recursively (shutil.rmtree before 3.12) ends in a RecursionError.
MAX_DEPTH = 256


class _PathValue(os.PathLike[str]):
    """A path with a meaning (a file or a directory of data): os.PathLike, compared by path."""

    __slots__ = ("path",)
    kind = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        value = os.fspath(path)
        if not isinstance(value, str) or not value:
            raise TypeError(f"{type(self).__name__}() takes a path (str or os.PathLike), got {path!r}")
        self.path = value

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))

    def __getstate__(self) -> str:
        return self.path

    def __setstate__(self, state: str) -> None:
        self.path = state

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))


class File(_PathValue):
    """A file of data: a task parameter or return value. On the host it names a host path; in the
    container, the local path where the file was unpacked (``open(f)`` works on either side)."""

    __slots__ = ()
    kind = "f"

    def open(self, mode: str = "rb", **kwargs: Any) -> Any:
        return open(self.path, mode, **kwargs)  # noqa: SIM115 - the caller's to close


class Directory(_PathValue):
    """A directory of data, with its structure, file modes and the symlinks inside it."""

    __slots__ = ()
    kind = "d"


KINDS: dict[str, type[_PathValue]] = {"f": File, "d": Directory}


def is_path_value(value: Any) -> bool:
    return isinstance(value, _PathValue)


# -- finding them in values -------------------------------------------------------------------

def walk(value: Any, where: str = "") -> Iterator[tuple[str, _PathValue]]:
    """Every File/Directory in ``value`` (lists, tuples, sets, dict values, dataclass fields), with where."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _PathValue):
            yield path, item
            continue
        if isinstance(item, (str, bytes, bytearray, int, float, complex, bool)) or item is None:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend((f"{path}[{k!r}]", v) for k, v in reversed(list(item.items())))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, (set, frozenset)):
            stack.extend((f"{path} item", v) for v in item)
        elif hasattr(type(item), "__dataclass_fields__") and not isinstance(item, type):
            stack.extend((f"{path}.{name}", getattr(item, name, None))
                         for name in reversed(list(type(item).__dataclass_fields__)))


# -- the stream: a tar of the paths, in pieces --------------------------------------------------

def tar_pieces(items: list[tuple[str, str]]) -> Iterator[bytes]:
    """A tar stream of ``items`` (arcname, path) made as it is read, in pieces of at most CHUNK bytes, so
    only one piece is in memory at a time. Symlinks are stored as links (never followed) and a
    Directory's whole tree goes in, directories before what they hold. Small members go out together:
    each piece becomes a frame and a write, and 100,000 small files were 300,000 of each."""
    from dockertask import tarformat

    held = bytearray()
    for piece in _members(items):
        if len(held) + len(piece) > CHUNK:
            yield bytes(held)
            held.clear()
        if len(piece) >= SMALL:
            yield piece
        else:
            held += piece
    held += tarformat.END
    yield bytes(held)


SMALL = 1 << 16  # a piece this big goes out as it is; smaller ones are held until they make one


def _members(items: list[tuple[str, str]]) -> Iterator[bytes]:
    for arcname, path in items:
        # The File or Directory itself may be a symlink: what is sent is what it names. Links *inside*
        # a directory are sent as links.
        path = os.path.realpath(path)
        for name, full in _tree(arcname, path):
            yield from entry_pieces(name, full, os.lstat(full))


def entry_pieces(name: str, full: str, st: os.stat_result) -> Iterator[bytes]:
    """One file, directory or symlink (``st``: its lstat) as a tar member named ``name``: its header, then a
    file's content in CHUNK pieces and its padding. A socket, fifo or device carries no data: left out."""
    from dockertask import tarformat

    mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        yield tarformat.header(name, tarformat.REGULAR, mode, mtime, st.st_size)
        yield from _file_pieces(full, st.st_size)
    elif stat.S_ISDIR(st.st_mode):
        yield tarformat.header(name, tarformat.DIRECTORY, mode, mtime)
    elif stat.S_ISLNK(st.st_mode):
        yield tarformat.header(name, tarformat.SYMLINK, mode, mtime, linkname=os.readlink(full))


def _tree(arcname: str, path: str) -> Iterator[tuple[str, str]]:
    """``path`` and everything under it, each directory's entries sorted, directories before what they hold.
    A loop, not os.walk: before Python 3.12 that recurses once per level, and a tree 3,000 deep ended in a
    RecursionError. Symlinked directories are entries (sent as links), never descended into."""
    yield arcname, path
    if not os.path.isdir(path) or os.path.islink(path):
        return
    stack = [(arcname, path)]
    while stack:
        base, root = stack.pop()
        try:
            with os.scandir(root) as it:
                entries = list(it)
        except OSError:  # unreadable: as os.walk, go on without it
            continue
        dirs = sorted(e.name for e in entries if e.is_dir())
        for name in dirs + sorted(e.name for e in entries if not e.is_dir()):
            yield f"{base}/{name}", os.path.join(root, name)
        stack.extend((f"{base}/{name}", os.path.join(root, name)) for name in reversed(dirs)
                     if not os.path.islink(os.path.join(root, name)))


def _file_pieces(path: str, size: int) -> Iterator[bytes]:
    from dockertask import tarformat

    left = size
    with open(path, "rb", buffering=0) as f:
        while left > 0:
            piece = f.read(min(CHUNK, left))
            if not piece:
                raise OSError(f"{path} shrank while it was being sent")
            left -= len(piece)
            yield piece
    if size % tarformat.BLOCK:
        yield tarformat.padding(size)


class FrameStream:
    """A read-only file over length-prefixed frames, ended by an empty frame (the container's inputs)."""

    def __init__(self, read_frame: Any) -> None:
        self._read_frame = read_frame
        self._frame = b""
        self._pos = 0  # how much of the current frame was read: never re-sliced (1 MiB frames, small reads)
        self._done = False

    def read(self, n: int = -1) -> bytes:
        parts = []
        want = n
        while want != 0:
            if self._pos == len(self._frame):
                if self._done:
                    break
                self._frame, self._pos = self._read_frame(), 0
                if not self._frame:
                    self._done = True
                    break
            end = len(self._frame) if want < 0 else min(len(self._frame), self._pos + want)
            parts.append(self._frame[self._pos:end] if (self._pos, end) != (0, len(self._frame)) else self._frame)
            if want > 0:
                want -= end - self._pos
            self._pos = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def drain(self) -> None:
        while not self._done:
            self._frame, self._pos = b"", 0
            self.read(CHUNK)


def unpack_trusted(stream: Any, dest: str) -> None:
    """Unpack a tar stream this side's peer made from its own paths (the container's inputs): with
    tarformat's reader, ~3x tarfile's speed for many small files (30,000 on tmpfs: 62-74 against 224-240 us
    each). Directories get their modes and times last, so a read-only one is filled first, as tarfile does."""
    from dockertask import tarformat

    made: set[str] = set()
    dirs: list[tuple[str, Any]] = []
    for member in tarformat.members(stream):
        target = os.path.join(dest, member.name)
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if member.kind == tarformat.DIRECTORY:
            os.makedirs(target, exist_ok=True)
            made.add(target)
            dirs.append((target, member))
        elif member.kind == tarformat.SYMLINK:
            os.symlink(member.linkname, target)
        elif member.kind == tarformat.REGULAR:
            with open(target, "wb") as f:
                for piece in tarformat.data(stream, member.size, repr(member.name)):
                    f.write(piece)
                f.flush()
                os.chmod(f.fileno(), member.mode)
                os.utime(f.fileno(), (member.mtime, member.mtime))
        else:  # the host's tar_pieces makes no other kind
            tarformat.skip(stream, member.size)
    for target, member in reversed(dirs):
        os.chmod(target, member.mode)
        os.utime(target, (member.mtime, member.mtime))


# -- the host's side of outputs ----------------------------------------------------------------

class UnsafeArchive(Exception):
    """An entry of a returned archive that would leave its directory, or is not plain data."""


def unpack(archive: BinaryIO, dest: str) -> None:
    """Unpack what a container returned into ``dest``, refusing anything that would write outside it
    (see the module's docstring). Entries are checked before they are written; on a refusal the caller
    removes ``dest``."""
    archive.seek(0)
    _unpack_stream(archive, dest)


def _unpack_stream(archive: Any, dest: str) -> None:
    """``unpack`` of a stream read once, front to back (``read(n)`` only)."""
    from dockertask import tarformat

    root = os.path.realpath(dest)
    os.makedirs(root, exist_ok=True)
    links: list[tuple[str, str]] = []
    # Directories this unpack made (or checked) and knows are no symlink: a file whose directory is one of
    # them needs no walk up its path and no makedirs. With 100,000 small files that walk was a fifth of it.
    safe: set[str] = {root}
    try:
        for member in tarformat.members(archive):
            if member.sparse:
                # A sparse member announces more than it carries (10 KB sent, 1 GiB written): what is
                # unpacked may never exceed what was received.
                raise UnsafeArchive(f"entry {member.name!r} is a sparse file: only plain files come back")
            target = _checked_target(root, member, safe)
            parent = os.path.dirname(target)
            if parent not in safe:
                os.makedirs(parent, exist_ok=True)  # inside root, through no symlink (checked)
                safe.add(parent)
            if member.kind == tarformat.DIRECTORY:
                os.makedirs(target, exist_ok=True)
                os.chmod(target, (member.mode & 0o777) | 0o700)
                safe.add(target)
            elif member.kind == tarformat.SYMLINK:
                _check_link(root, target, member.linkname, member.name)
                os.symlink(member.linkname, target)
                links.append((target, member.name))
            elif member.kind == tarformat.REGULAR:
                _write(archive, target, member)
            else:
                raise UnsafeArchive(f"entry {member.name!r} is a {_kind(member.kind)}: only files, directories "
                                    "and symlinks inside the tree come back")
    except tarformat.BadArchive as exc:
        raise UnsafeArchive(f"the returned archive is not readable: {exc}") from None
    # Each link's text was checked alone; followed one through another (`up -> ../..` inside `a/b`, then
    # `x -> a/b/up/..`) they can still reach past the tree. So check where each really resolves, now that
    # every link of the archive exists.
    for target, name in links:
        top = os.path.join(root, name.replace("\\", "/").split("/")[0])
        real = os.path.realpath(target)
        if not (real == top or real.startswith(top + os.sep)):
            raise UnsafeArchive(f"symlink {name!r} -> {os.readlink(target)!r} resolves outside its tree "
                                "(through other links)")


class Incoming:
    """A call's returned files, unpacked (and checked, as ``unpack`` does) by a thread of their own while
    the archive still arrives, so the container's packing and this host's writing overlap: 100,000 small
    files were packed in ~5 s and then unpacked in ~7 s, one after the other. The tree grows in a directory
    beside the outputs (same disk: the move into the call's output directory is a rename). At most
    ``QUEUED`` pieces wait in memory; past that, the sender (the stream's reader) waits, and so does the
    container on its stdout."""

    QUEUED = 16

    def __init__(self) -> None:
        import queue
        import tempfile
        import threading

        base = spool_dir()
        _remove_abandoned(base)
        self.path = tempfile.mkdtemp(dir=base, prefix=f".incoming-{os.getpid()}-")
        self._pieces: queue.Queue[bytes] = queue.Queue(self.QUEUED)
        self._error: BaseException | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._unpack, name="dockertask-unpack", daemon=True)
        self._thread.start()

    def _unpack(self) -> None:
        stream = FrameStream(self._pieces.get)
        try:
            _unpack_stream(stream, self.path)
        except BaseException as exc:  # raised to the caller by unpack_into; the call then fails with it
            self._error = exc
        finally:
            stream.drain()  # the rest is read and dropped: a sender never waits on a queue nobody empties

    def write(self, piece: bytes | bytearray) -> None:
        """The next piece of the archive (a T frame), in order."""
        self._pieces.put(bytes(piece))

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._pieces.put(b"")
        self._thread.join()

    def unpack_into(self, staged: str) -> None:
        """Wait for the rest to be written, then move the tree to ``staged``; raises what the unpack raised
        (UnsafeArchive for a refused entry, OSError for this host's disk)."""
        self._end()
        if self._error is not None:
            raise self._error
        os.makedirs(os.path.dirname(staged), exist_ok=True)
        os.rename(self.path, staged)

    def close(self) -> None:
        """Done with it (unpacked and moved, or not wanted): whatever is left of the tree goes."""
        import shutil

        self._end()
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_abandoned(base: str) -> None:
    """The trees of processes killed while they unpacked (``.incoming-<pid>-...`` of a pid that is gone)."""
    import shutil

    try:
        names = [n for n in os.listdir(base) if n.startswith(".incoming-")]
    except OSError:
        return
    for name in names:
        pid = name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    """host.owner.alive's twin: this module sits below host/ and is shipped into containers, so it imports
    nothing of dockertask's but tarformat (tests/unit/test_architecture.py)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    return True


def _write(archive: Any, target: str, member: Any) -> None:
    """A regular member's data, read from the archive into a new file at ``target`` (never through a link,
    never over one that exists), with its mode (no set-uid/gid or sticky bits) and time."""
    from dockertask import tarformat

    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UnsafeArchive(f"entry {member.name!r} appears twice in the archive") from None
    try:
        for piece in tarformat.data(archive, member.size, repr(member.name)):  # padding read after the last
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        if member.mode & 0o777 != 0o600:
            os.fchmod(fd, member.mode & 0o777)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)


def _kind(kind: bytes) -> str:
    return {b"1": "hard link", b"3": "device", b"4": "device", b"6": "fifo"}.get(kind, "special file")


def _checked_target(root: str, member: Any, safe: set[str]) -> str:
    from dockertask import tarformat

    name = member.name
    parts = name.replace("\\", "/").split("/")
    if "\0" in name or "\0" in member.linkname:
        raise UnsafeArchive(f"entry {name!r} has a NUL in its name or link: no file system can hold it")
    if name.startswith("/") or os.path.isabs(name) or ".." in parts or not name.strip("/."):
        raise UnsafeArchive(f"entry {name!r} would be written outside the output directory")
    if len(parts) > MAX_DEPTH:
        raise UnsafeArchive(f"entry {name[:80]!r}... nests {len(parts)} levels deep: returned trees are kept to "
                            f"{MAX_DEPTH} levels")
    target = os.path.join(root, *[p for p in parts if p not in ("", ".")])
    # No entry is written through a symlink an earlier entry made (`link -> /etc`, then `link/passwd`).
    # A directory in `safe` was made or checked by this unpack as a real directory, and a link can never
    # replace it (a second entry of that name is refused below), so the walk stops there.
    parent = os.path.dirname(target)
    if parent not in safe:
        probe = root
        for part in os.path.relpath(parent, root).split(os.sep):
            if part in ("", "."):
                continue
            probe = os.path.join(probe, part)
            if os.path.islink(probe):
                raise UnsafeArchive(f"entry {name!r} would be written through the symlink "
                                    f"{os.path.relpath(probe, root)!r}")
    # A regular file's twin is refused by its O_EXCL open; others are looked up here.
    if member.kind != tarformat.REGULAR and os.path.lexists(target) and not (
            member.kind == tarformat.DIRECTORY and os.path.isdir(target) and not os.path.islink(target)):
        raise UnsafeArchive(f"entry {name!r} appears twice in the archive")
    return target


def _check_link(root: str, target: str, linkname: str, name: str) -> None:
    """A symlink may point anywhere inside the tree of the output it belongs to, nowhere else."""
    top = os.path.join(root, name.replace("\\", "/").split("/")[0])
    resolved = os.path.normpath(os.path.join(os.path.dirname(target), linkname))
    if os.path.isabs(linkname) or not (resolved == top or resolved.startswith(top + os.sep)):
        raise UnsafeArchive(f"symlink {name!r} -> {linkname!r} points outside its tree")


def outputs_root() -> str:
    """$DOCKERTASK_OUTPUT_DIR, by default ./.dockertask/outputs."""
    return os.path.abspath(os.environ.get("DOCKERTASK_OUTPUT_DIR") or os.path.join(".dockertask", "outputs"))


def output_dir(task_name: str, run_id: str) -> str:
    """Where a call's returned files go: <outputs root>/<task>/<run-id>/."""
    return os.path.join(outputs_root(), task_name.replace(os.sep, "_"), run_id)


def spool_dir() -> str:
    """Where a returned archive waits until it is unpacked: beside the outputs (same disk, not /tmp,
    which may be memory)."""
    base = outputs_root()
    os.makedirs(base, exist_ok=True)
    return base


def deliver(dest: str, outputs: list[tuple[str, str]], fill: Any) -> list[_PathValue]:
    """Returned files into ``dest``: ``fill(staged)`` puts ``<i>/<name>`` under a staging directory
    inside it (an archive unpacked, a cache entry copied), then each is placed (``place``). Whatever
    fails, ``dest`` is removed, with the task's directory if this was its only run, and the error raised."""
    import contextlib
    import shutil

    staged = os.path.join(dest, ".incoming")
    try:
        fill(staged)
        placed = place(staged, dest, outputs)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(dest))
        raise
    shutil.rmtree(staged, ignore_errors=True)
    return placed


def place(staged: str, dest: str, outputs: list[tuple[str, str]]) -> list[_PathValue]:
    """Move each unpacked output ``<i>/<name>`` from ``staged`` to ``dest/<name>`` (``dest/<i>/<name>``
    when two outputs share a name); the host-side File/Directory objects, in order."""
    placed: list[_PathValue] = []
    used: set[str] = set()
    for i, (kind, name) in enumerate(outputs):
        # The names come from the container's result metadata, not from the checked archive: each must be
        # one path component, or '../x' would move a file across the output directory's edge.
        if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
            raise UnsafeArchive(f"output {i} is named {name!r}, which is not a plain file name")
        source = os.path.join(staged, str(i), name)
        if kind not in KINDS or not os.path.lexists(source):
            raise UnsafeArchive(f"output {i} ({name!r}) is missing from the returned archive")
        mode = os.lstat(source).st_mode
        if kind == "d" and not stat.S_ISDIR(mode):
            raise UnsafeArchive(f"output {i} ({name!r}) is not a directory")
        if kind == "f" and not stat.S_ISREG(mode):
            # A link would be followed by whoever reads the File next (the next task's input, the cache):
            # a returned File is the file itself.
            raise UnsafeArchive(f"output {i} ({name!r}) is not a regular file (a returned File cannot be a "
                                "symlink)")
        final = os.path.join(dest, name) if name not in used else os.path.join(dest, str(i), name)
        used.add(name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.rename(source, final)
        placed.append(KINDS[kind](final))
    return placed


# -- content hashes (the cache keys a File/Directory input by what it holds) -------------------

def content_hash(value: _PathValue) -> str:
    import hashlib

    digest = hashlib.sha256(value.kind.encode())
    for name, full in _tree(".", os.path.realpath(value.path)):  # what is sent (tar_pieces) is what is hashed
        st = os.lstat(full)
        digest.update(f"\0{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode) & 0o111}\0".encode(
            "utf-8", "surrogateescape"))
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(full).encode("utf-8", "surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                while piece := f.read(CHUNK):
                    digest.update(piece)
    return digest.hexdigest()


def check_input(where: str, value: _PathValue) -> str | None:
    """Why ``value`` cannot be sent (missing, the wrong kind, unreadable), or None."""
    path = value.path
    if not os.path.lexists(path):
        return f"no such {'file' if value.kind == 'f' else 'directory'}: {path}"
    if value.kind == "f" and not os.path.isfile(path):
        return f"{path} is not a file" + (" (pass it as Directory)" if os.path.isdir(path) else "")
    if value.kind == "d" and not os.path.isdir(path):
        return f"{path} is not a directory" + (" (pass it as File)" if os.path.isfile(path) else "")
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this process"
    return None


# -- annotations: a str or Path is accepted where File/Directory is annotated ----------------------

def mentions(tp: Any) -> bool:
    """Does the annotation ``tp`` ask for a File or Directory anywhere (in a list, a dataclass...)?"""
    try:
        return _mentions(tp, frozenset())
    except RecursionError:
        return False


def _mentions(tp: Any, seen: frozenset[int]) -> bool:
    import dataclasses
    import typing

    if tp is File or tp is Directory:
        return True
    if id(tp) in seen:
        return False
    seen = seen | {id(tp)}
    if any(_mentions(arg, seen) for arg in typing.get_args(tp)):
        return True
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        try:
            hints = typing.get_type_hints(tp)
        except Exception:
            return False
        return any(_mentions(h, seen) for h in hints.values())
    return False


def coerce(value: Any, tp: Any) -> Any:
    """``value`` with a str or os.PathLike made a File/Directory wherever ``tp`` asks for one (inside
    lists, tuples, dicts, sets, Optional/Union and dataclasses too); anything else is left as it is,
    for the interface check to judge."""
    import dataclasses
    import types
    import typing

    if tp is File or tp is Directory:
        return tp(value) if _pathish(value) else value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return coerce(value, args[0])
    if origin is typing.Union or origin is types.UnionType:
        if not _pathish(value):
            arms = [a for a in args if isinstance(typing.get_origin(a) or a, type)
                    and isinstance(value, typing.get_origin(a) or a)]
            return coerce(value, arms[0]) if len(arms) == 1 else value
        if any(a is str or (isinstance(a, type) and isinstance(value, a)) for a in args):
            return value  # Union[str, File] given a str: it stays a str
        targets = [a for a in args if a is File or a is Directory]
        return targets[0](value) if len(targets) == 1 else value
    if isinstance(origin, type) and isinstance(value, origin) and args:
        return _coerce_collection(value, origin, args)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, tp):
        try:
            hints = typing.get_type_hints(tp)
        except Exception:
            return value
        changes = {f.name: coerce(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(tp)
                   if f.name in hints and f.init and mentions(hints[f.name])}
        changes = {k: v for k, v in changes.items() if v is not getattr(value, k)}
        return dataclasses.replace(value, **changes) if changes else value
    return value


def _coerce_collection(value: Any, origin: type, args: tuple[Any, ...]) -> Any:
    import collections.abc

    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _rebuilt(value, [coerce(v, args[0]) for v in value])
        if len(args) == len(value):
            return _rebuilt(value, [coerce(v, a) for v, a in zip(value, args, strict=True)])
        return value
    if issubclass(origin, collections.abc.Mapping) and len(args) == 2:
        items = {k: coerce(v, args[1]) for k, v in value.items()}
        changed = any(items[k] is not v for k, v in value.items())
        return (dict(items) if origin in (dict, collections.abc.Mapping) else type(value)(items)) if changed \
            else value
    if isinstance(value, (list, set, frozenset)) and len(args) == 1:
        new = [coerce(v, args[0]) for v in value]
        return type(value)(new) if any(a is not b for a, b in zip(new, value, strict=True)) else value
    return value


def _pathish(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and not isinstance(value, _PathValue)


def _rebuilt(value: tuple[Any, ...], items: list[Any]) -> Any:
    if all(a is b for a, b in zip(items, value, strict=True)):
        return value
    return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
