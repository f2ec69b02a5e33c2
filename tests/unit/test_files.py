"""File/Directory without an engine: the streams, the host's refusals of unsafe archives, annotations,
volumes, cache keys, and a round trip through the real bootstrap in a local interpreter."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dockertask import Directory, Docker, File, TaskDefinitionError, TaskInputError, task
from dockertask.calls import envelope, pickling
from dockertask.calls.cache import cache_key
from dockertask.files import CHUNK, UnsafeArchive, coerce, tar_pieces, unpack
from dockertask.runtime import protocol


def _tree(root: Path) -> dict[str, Any]:
    """name -> ("link", target) | ("dir", mode) | ("file", mode, content)"""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def _sample_dir(base: Path) -> Path:
    d = base / "site"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.txt").write_text("a")
    (d / "run.sh").write_text("#!/bin/sh\n")
    (d / "run.sh").chmod(0o755)
    (d / "empty").mkdir()
    (d / "index").symlink_to("sub/a.txt")
    return d


def test_a_directory_streams_and_unpacks_to_the_same_tree(tmp_path: Path) -> None:
    """Structure, file modes and symlinks inside the tree survive; every piece is at most CHUNK bytes."""
    src = _sample_dir(tmp_path)
    big = src / "big.bin"
    big.write_bytes(os.urandom(CHUNK * 2 + 5))
    pieces = list(tar_pieces([("0/site", str(src))]))
    assert max(map(len, pieces)) <= CHUNK
    archive = io.BytesIO(b"".join(pieces))
    unpack(archive, str(tmp_path / "out"))
    assert _tree(tmp_path / "out" / "0" / "site") == _tree(src)


def _archive(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, b""


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


@pytest.mark.parametrize("members", [
    [_file("0/../../escaped")],
    [_file("/abs/escaped")],
    [_link("0/out", "/tmp")],
    [_link("0/out", "../../..")],
    [_link("0/d", "../.."), _file("0/d/escaped")],
    [_link("0/sneaky", "/"), _file("0/sneaky/escaped")],
    [_dir("0/sub"), _link("0/inner", "sub"), _file("0/inner/written-through")],
    [_file("0/a"), _link("0/b", "0/a", tarfile.LNKTYPE)],
    [(lambda i: (setattr(i, "type", tarfile.CHRTYPE), i)[1])(tarfile.TarInfo("0/dev")), b""],
], ids=["dotdot", "absolute", "symlink-absolute", "symlink-up", "through-symlink-dir", "through-symlink-root",
        "through-inner-symlink", "hard-link", "device"])
def test_unsafe_archives_are_refused_and_nothing_lands_outside(tmp_path: Path, members: list[Any]) -> None:
    if isinstance(members[-1], bytes):  # the device case: (info, data) built inline
        members = [tuple(members)]
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(UnsafeArchive, match="outside|through the symlink|only files"):
        unpack(_archive(*members), str(dest))
    assert list(outside.iterdir()) == []
    assert not any(p.name == "escaped" for p in tmp_path.rglob("*") if not str(p).startswith(str(dest)))


def test_set_uid_bits_are_dropped(tmp_path: Path) -> None:
    unpack(_archive(_file("0/tool", b"#!", 0o4755)), str(tmp_path / "out"))
    assert stat.S_IMODE((tmp_path / "out" / "0" / "tool").stat().st_mode) == 0o755


@dataclasses.dataclass
class Job:
    data: File
    label: str


def test_a_str_or_path_becomes_a_file_where_one_is_annotated() -> None:
    assert coerce("a.csv", File) == File("a.csv")
    assert coerce(Path("d"), Directory) == Directory("d")
    assert coerce(["a", Path("b")], list[File]) == [File("a"), File("b")]
    assert coerce({"x": "a"}, dict[str, File]) == {"x": File("a")}
    assert coerce("a", File | None) == File("a")
    assert coerce(None, File | None) is None
    assert coerce("a", str | File) == "a"  # a str is still a str where a str is accepted
    assert coerce(("a", 1), tuple[File, int]) == (File("a"), 1)
    assert coerce(Job("a", "l"), Job) == Job(File("a"), "l")
    assert coerce("a", int) == "a"  # not ours to judge: the interface check says what is wrong


@task
def reads(data: File, more: list[Directory] | None = None) -> int:
    return 0


def test_a_missing_or_wrong_input_is_a_task_input_error_naming_parameter_and_path(tmp_path: Path,
                                                                                  fake: Any) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(TaskInputError, match=rf"parameter 'data': no such file: {missing}"):
        reads(data=str(missing))
    with pytest.raises(TaskInputError, match=r"parameter 'more\[0\]'.*is not a directory"):
        (tmp_path / "f").write_text("x")
        reads(data=tmp_path / "f", more=[tmp_path / "f"])
    assert fake.jobs == []  # no container was asked for


def test_volumes_relative_to_the_task_file_named_volumes_explicit_and_bare_names_refused() -> None:
    here = os.path.dirname(os.path.abspath(__file__))

    @task(task_config=Docker(volumes=["./data:/data:ro", "volume:cache:/cache", "/abs:/abs"]))
    def t() -> None: ...

    binds = t.container_options.binds
    assert binds == (f"{here}/data:/data:ro", "cache:/cache", "/abs:/abs")

    @task(task_config=Docker(volumes={"../up": {"bind": "/up", "mode": "rw"}}))
    def u() -> None: ...

    assert u.container_options.binds == (f"{os.path.dirname(here)}/up:/up:rw",)
    with pytest.raises(TaskDefinitionError, match=r"'data' could be the directory.*'./data'.*'volume:data'"):
        Docker(volumes=["data:/data"])
    with pytest.raises(TaskDefinitionError, match="must be absolute"):
        Docker(volumes=["./data:data"])
    with pytest.raises(TaskDefinitionError, match="mode 'rx'"):
        Docker(volumes=["./data:/data:rx"])


def test_user_host_is_this_process_uid_and_gid() -> None:
    @task(task_config=Docker(user="host"))
    def t() -> None: ...

    assert t.container_options.user == f"{os.getuid()}:{os.getgid()}"


def test_the_cache_keys_files_by_content_not_path_or_mtime(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("same")
    b.write_text("same")
    os.utime(b, (0, 0))

    def key(v: Any) -> str:
        return cache_key("t", "", "", {"data": v})

    assert key(File(str(a))) == key(File(str(b)))
    b.write_text("other")
    assert key(File(str(a))) != key(File(str(b)))
    d1, d2 = _sample_dir(tmp_path / "1"), _sample_dir(tmp_path / "2")
    assert key(Directory(str(d1))) == key(Directory(str(d2)))
    (d2 / "sub" / "a.txt").write_text("changed")
    assert key(Directory(str(d1))) != key(Directory(str(d2)))


def _copy_in_container(data: File) -> File:
    import tempfile

    out = os.path.join(tempfile.gettempdir(), os.path.basename(data) + ".copy")  # the session's, not /tmp
    with open(data, "rb") as f, open(out, "wb") as g:
        g.write(f.read() + b"!")
    return File(out)


def test_files_go_in_and_come_back_through_the_real_bootstrap(tmp_path: Path) -> None:
    """The bootstrap in a local interpreter (no Docker): the input arrives at a local path, the output
    comes back in T frames and its persistent id names it in the result."""
    src = tmp_path / "in.bin"
    src.write_bytes(b"hello")
    env = envelope.make_envelope(_copy_in_container, (File(str(src)),), {}, "t", with_files=True)
    assert env.inputs == (File(str(src)),)
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", protocol.LOADER],
                          input=env.stdin_bytes({"task": "t", "attempt": 1, "run_id": "r"}),
                          capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    decoder = protocol.FrameDecoder(lambda _: None)
    decoder.feed(proc.stdout)
    raw = protocol.parse_result(decoder.result)  # type: ignore[arg-type]
    assert raw.meta["outputs"] == [["f", "in.bin.copy"]]
    archive = decoder.take_archive()
    assert archive is not None
    archive.unpack_into(str(tmp_path / "got"))
    archive.close()
    (placed,) = __import__("dockertask.files").files.place(str(tmp_path / "got"), str(tmp_path / "final"),
                                                          [("f", "in.bin.copy")])
    assert pickling.load_value(raw, [placed]) == placed
    assert Path(placed).read_bytes() == b"hello!"


@pytest.mark.parametrize("reads", [[1], [3, 1000], [4096], [-1]])
def test_the_frame_stream_reads_any_split_once(reads: list[int]) -> None:
    """What tarfile reads from the container's input frames: the same bytes, whatever the read sizes."""
    from dockertask.files import FrameStream

    data = os.urandom(10_000)
    chunks = iter([data[:3000], data[3000:3001], data[3001:], b""])
    stream = FrameStream(lambda: next(chunks))
    got = b""
    while True:
        for n in reads:
            piece = stream.read(n)
            got += piece
        if not piece:
            break
    assert got == data


def test_a_file_that_is_a_symlink_is_sent_as_what_it_names(tmp_path: Path) -> None:
    """Returning (or passing) File('/tmp/latest.csv') where latest.csv is a link sends the file it names."""
    (tmp_path / "real.csv").write_text("data")
    (tmp_path / "latest.csv").symlink_to("real.csv")
    unpack(io.BytesIO(b"".join(tar_pieces([("0/latest.csv", str(tmp_path / "latest.csv"))]))),
           str(tmp_path / "out"))
    got = tmp_path / "out" / "0" / "latest.csv"
    assert not got.is_symlink() and got.read_text() == "data"


@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", ".", ""])
def test_an_output_name_from_the_container_cannot_leave_the_output_directory(tmp_path: Path, name: str) -> None:
    """The names in the result's metadata come from the container too: one that is not a single path
    component is refused before anything is moved (a '../x' would have moved a file out of, or into,
    a place outside the output directory)."""
    from dockertask.files import place

    staged, dest = tmp_path / "staged", tmp_path / "a" / "dest"
    (staged / "0").mkdir(parents=True)
    (tmp_path / "staged" / "escaped").write_text("x")  # what '0/../escaped' names
    (tmp_path / "a" / "escaped").mkdir(parents=True)
    with pytest.raises(UnsafeArchive, match="not a plain file name"):
        place(str(staged), str(dest), [("f", name)])
    assert (tmp_path / "staged" / "escaped").read_text() == "x"
    assert not dest.exists()


def test_a_link_through_links_that_resolves_outside_is_refused(tmp_path: Path) -> None:
    """Each link's text stays in its tree, but followed one through another they reach past the output
    directory: the check is where the link really resolves (issue 17, B7)."""
    outside = tmp_path / "secret.txt"
    outside.write_text("host")
    members = [_dir("0/a/b/c/d"), _link("0/a/b/c/d/up", "../../../.."),  # really: 0
               _link("0/x", "a/b/c/d/up/../../../../secret.txt")]  # reads as 0/a/secret.txt
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(UnsafeArchive, match="outside"):
        unpack(_archive(*members), str(dest))


def test_links_that_stay_inside_still_come_back(tmp_path: Path) -> None:
    """A link to a sibling, and a link through a link that stays in the tree, are kept."""
    members = [_dir("0/data"), _file("0/data/x.csv", b"1"), _link("0/latest", "data/x.csv"),
               _link("0/here", "data"), _link("0/again", "here/x.csv")]
    unpack(_archive(*members), str(tmp_path / "out"))
    assert (tmp_path / "out" / "0" / "again").read_bytes() == b"1"


def test_a_sparse_member_is_refused_before_it_is_written(tmp_path: Path) -> None:
    """A GNU/PAX sparse member announces a size it does not carry (10 KB on the wire, 1 GiB on disk):
    refused, nothing written (issue 17, B10)."""
    info = tarfile.TarInfo("0/big")
    info.size = 512
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "0/big",
                        "GNU.sparse.realsize": str(2**30)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"1\n0\n512\n" + b"\0" * 504))
    buf.seek(0)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchive, match="sparse"):
        unpack(buf, str(dest))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) < 4096


def test_a_returned_file_must_be_a_regular_file_not_a_link(tmp_path: Path) -> None:
    """A File output that arrives as a symlink (to a host file, say ~/.aws/credentials) is refused: it
    would be sent into the next task, or copied into the cache, as the host file (issue 17, B8)."""
    from dockertask.files import place

    host_file = tmp_path / "credentials"
    host_file.write_text("secret")
    staged, dest = tmp_path / "staged", tmp_path / "dest"
    (staged / "0").mkdir(parents=True)
    (staged / "0" / "data.csv").symlink_to(host_file)
    with pytest.raises(UnsafeArchive, match="not a regular file"):
        place(str(staged), str(dest), [("f", "data.csv")])


def test_a_tree_deeper_than_the_recursion_limit_streams(tmp_path: Path) -> None:
    """A directory 1,200 levels deep is walked without a RecursionError (os.walk recursed per level before
    Python 3.12; issue 17, F25)."""
    from dockertask.files import _tree

    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        os.mkdir("d")
        os.chdir("d")
        for _ in range(1200):
            os.mkdir("a")
            os.chdir("a")
        with open("leaf", "w") as f:
            f.write("x")
    finally:
        os.chdir(here)
    try:
        names = [name for name, _ in _tree("0", str(tmp_path / "d"))]
        assert len(names) == 1 + 1200 + 1 and names[-1].endswith("/a/leaf")
    finally:
        # pytest's own clean-up of old temporary directories removes them recursively: this one it cannot.
        subprocess.run(["rm", "-rf", str(tmp_path / "d")], check=True)


def test_a_returned_tree_nested_past_the_bound_is_refused(tmp_path: Path) -> None:
    """An archive entry 300 levels deep is refused before anything deep is written: what was unpacked can
    always be removed again (a 3,000-deep tree ended in a bare RecursionError; F25)."""
    deep = "0/" + "/".join(["a"] * 300) + "/leaf"
    with pytest.raises(UnsafeArchive, match="levels deep"):
        unpack(_archive(_file(deep)), str(tmp_path / "out"))


def test_a_containers_inputs_unpack_to_the_tree_that_was_sent(tmp_path: Path) -> None:
    """The container's side of inputs (unpack_trusted, over the input frames): structure, file modes, times
    and links as sent, a read-only directory filled and then made read-only, a File beside a Directory."""
    from dockertask.files import FrameStream, unpack_trusted

    src = _sample_dir(tmp_path)
    (src / "locked").mkdir()
    (src / "locked" / "inside.txt").write_text("in")
    os.utime(src / "sub" / "a.txt", (1_000_000, 1_000_000))
    (src / "locked").chmod(0o555)
    single = tmp_path / "one.csv"
    single.write_text("1,2\n")
    frames = [*tar_pieces([("0/site", str(src)), ("1/one.csv", str(single))]), b""]
    try:
        unpack_trusted(FrameStream(iter(frames).__next__), str(tmp_path / "in"))
        assert _tree(tmp_path / "in" / "0" / "site") == _tree(src)
        assert (tmp_path / "in" / "0" / "site" / "sub" / "a.txt").stat().st_mtime == 1_000_000
        assert (tmp_path / "in" / "1" / "one.csv").read_text() == "1,2\n"
    finally:
        for locked in (src / "locked", tmp_path / "in" / "0" / "site" / "locked"):
            if locked.exists():
                locked.chmod(0o755)


def _incoming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from dockertask.files import Incoming

    monkeypatch.setenv("DOCKERTASK_OUTPUT_DIR", str(tmp_path / "outputs"))
    return Incoming()


def test_returned_files_are_written_while_the_archive_still_arrives(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The host unpacks as the pieces come (the container's packing and the host's writes overlap), and the
    tree it made is the one a whole unpack makes, moved to where the call's files are placed."""
    import time

    src = _sample_dir(tmp_path)
    for i in range(300):
        (src / "sub" / f"f{i}").write_text(str(i))
    pieces = [bytes(p[i:i + 4096]) for p in tar_pieces([("0/site", str(src))]) for i in range(0, len(p), 4096)]
    incoming = _incoming(tmp_path, monkeypatch)
    try:
        half = len(pieces) // 2
        for piece in pieces[:half]:
            incoming.write(piece)
        deadline = time.monotonic() + 10
        first = Path(incoming.path) / "0" / "site" / "sub"
        while not (first.is_dir() and any(first.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.is_dir() and any(first.iterdir()), "nothing was written before the archive ended"
        for piece in pieces[half:]:
            incoming.write(piece)
        incoming.unpack_into(str(tmp_path / "placed" / ".incoming"))
    finally:
        incoming.close()
    assert _tree(tmp_path / "placed" / ".incoming" / "0" / "site") == _tree(src)
    assert not Path(incoming.path).exists()


def test_a_refused_incoming_archive_never_blocks_its_sender_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry refused early: every later piece is still taken (the stream's reader, and so the container,
    never waits on a queue nobody empties), the call gets the refusal, and the half-made tree is gone."""
    evil = tarfile.TarInfo("0/../../etc/x")
    evil.size = 1
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(evil, io.BytesIO(b"x"))
    incoming = _incoming(tmp_path, monkeypatch)
    try:
        incoming.write(head.getvalue()[:-1024])  # without its end: more pieces follow
        for _ in range(incoming.QUEUED * 4):
            incoming.write(b"\0" * 512)
        with pytest.raises(UnsafeArchive, match="outside the output directory"):
            incoming.unpack_into(str(tmp_path / "placed"))
    finally:
        incoming.close()
    assert not Path(incoming.path).exists() and not (tmp_path / "placed").exists()


def test_a_tree_a_killed_process_was_unpacking_is_removed_by_the_next(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill -9` mid-unpack leaves `.incoming-<pid>-...` beside the outputs; the next unpack of any process
    removes it once that pid is gone, and never touches a live process's."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    outputs = tmp_path / "outputs"
    (outputs / f".incoming-{dead}-abc" / "0").mkdir(parents=True)
    (outputs / f".incoming-{os.getppid()}-def").mkdir()
    incoming = _incoming(tmp_path, monkeypatch)
    incoming.close()
    assert not (outputs / f".incoming-{dead}-abc").exists()
    assert (outputs / f".incoming-{os.getppid()}-def").exists()
