"""The tar format of File/Directory streams (dockertask.tarformat): what tar_pieces writes is read by
tarfile as it was meant (the container unpacks inputs with it), the strict reader reads what tarfile
writes in each of its formats, and a hostile archive is refused with UnsafeArchive, nothing else."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from dockertask import tarformat
from dockertask.files import UnsafeArchive, tar_pieces, unpack

NAMES = ["plain.txt", "é-ñ.txt", "x" * 150, "sub/" + "y" * 99, os.fsdecode(b"bytes-\xff\xfe.bin")]


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(NAMES):
        (src / name).write_bytes(b"z" * (i * 300))
    (src / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (src / "sub" / "run.sh").chmod(0o751)
    os.utime(src / "plain.txt", (0, 0))
    (src / "link").symlink_to("l" * 120)  # a link text past ustar's 100 bytes
    (src / "rel").symlink_to("sub/run.sh")
    return src


def _described(members: list[tuple[str, str, int, int, int, str]]) -> list[tuple[str, str, int, int, int, str]]:
    return sorted(members)


def test_what_tar_pieces_writes_tarfile_reads_as_meant(tmp_path: Path) -> None:
    """Long and non-ASCII names and links, modes, times, sizes: tarfile (the container's unpack of inputs)
    and the strict reader both read each member as the tree has it."""
    src = _tree(tmp_path)
    data = b"".join(tar_pieces([("0/src", str(src))]))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        by_tarfile = _described([(m.name, m.type.decode(), m.mode, m.mtime, m.size, m.linkname) for m in tar])
    stream = io.BytesIO(data)
    by_us = []
    for m in tarformat.members(stream):
        by_us.append((m.name, m.kind.decode(), m.mode, m.mtime, m.size, m.linkname))
        tarformat.skip(stream, m.size)
    assert by_tarfile == _described(by_us)
    expected = {"0/src/" + n for n in NAMES} | {"0/src", "0/src/sub", "0/src/sub/run.sh", "0/src/link", "0/src/rel"}
    assert {m[0] for m in by_us} == expected
    assert ("0/src/link", "2", 0o777, by_us[[m[0] for m in by_us].index("0/src/link")][3], 0, "l" * 120) in by_us
    assert [m for m in by_us if m[0] == "0/src/plain.txt"][0][3] == 0
    assert [m for m in by_us if m[0] == "0/src/sub/run.sh"][0][2] == 0o751


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["pax", "gnu", "ustar"])
def test_the_reader_reads_what_tarfile_writes(tmp_path: Path, fmt: int) -> None:
    """Each of tarfile's formats (GNU's long-name headers, ustar's name prefix, pax records) unpacks to the
    same tree as tarfile's own extraction."""
    src = _tree(tmp_path)
    if fmt == tarfile.USTAR_FORMAT:  # ustar holds no long link text, and only ASCII
        (src / "link").unlink()
        for name in NAMES[1:3] + NAMES[4:]:  # non-ASCII, and a name no prefix split can hold
            (src / name).unlink()
        (src / ("p" * 90) / ("q" * 90)).parent.mkdir()
        (src / ("p" * 90) / ("q" * 90)).write_text("prefix split")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        tar.add(str(src), arcname="0/src")
    buf.seek(0)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        tar.extractall(tmp_path / "by-tarfile", filter="fully_trusted")
    unpack(buf, str(tmp_path / "by-us"))
    ours = sorted(p.relative_to(tmp_path / "by-us").as_posix() for p in (tmp_path / "by-us").rglob("*"))
    theirs = sorted(p.relative_to(tmp_path / "by-tarfile").as_posix() for p in (tmp_path / "by-tarfile").rglob("*"))
    assert ours == theirs and len(ours) > 5
    for rel in ours:
        a, b = tmp_path / "by-us" / rel, tmp_path / "by-tarfile" / rel
        if a.is_file() and not a.is_symlink():
            # pax keeps a fraction of a second where it writes a record: the reader keeps whole seconds
            assert a.read_bytes() == b.read_bytes() and a.stat().st_mtime == int(b.stat().st_mtime), rel


def _raw(name: bytes, kind: bytes = b"0", size: int = 0, data: bytes = b"", pax: bytes = b"") -> bytes:
    out = b""
    if pax:
        out += tarformat._block(b"././@PaxHeader", b"x", 0o644, 0, len(pax), b"") + pax + tarformat.padding(len(pax))
    return out + tarformat._block(name, kind, 0o644, 0, size, b"") + data + tarformat.padding(len(data))


def _bad_checksum() -> bytes:
    block = bytearray(_raw(b"0/a", size=1, data=b"x"))
    block[0] ^= 1
    return bytes(block)


def _negative_size() -> bytes:
    block = bytearray(tarformat._block(b"0/a", b"0", 0o644, 0, 0, b""))
    block[124:136] = b"\xff" * 12
    block[148:156] = b"%06o\0 " % tarformat._checksum(bytes(block))
    return bytes(block)


@pytest.mark.parametrize("archive,words", [
    (_bad_checksum(), "checksum"),
    (_raw(b"0/a", size=100, data=b"x" * 100)[:560], "ends inside"),
    (_raw(b"0/a", kind=b"x", size=2 ** 31), "extended header of"),
    (_raw(b"0/a", pax=tarformat._record(b"path", b"0/evil\0name")), "NUL"),
    (_raw(b"0/a", pax=tarformat._record(b"mtime", b"9" * 30)), "time is out of range"),
    (_raw(b"0/a", pax=tarformat._record(b"size", b"-5")), "size is not a number"),
    (_raw(b"0/a", pax=b"99 path=0/x\n"), "malformed"),
    (_negative_size(), "negative"),
    (b"not a tar stream at all".ljust(512, b"!"), "checksum"),
], ids=["checksum", "truncated", "huge-pax", "nul-in-name", "mtime-overflow", "size-text", "pax-record",
        "negative-size", "garbage"])
def test_a_hostile_archive_is_refused_as_unsafe_and_nothing_else(tmp_path: Path, archive: bytes, words: str) -> None:
    """Damaged, truncated or lying headers are an UnsafeArchive naming what was wrong: no ValueError from
    os.open (a NUL), no OverflowError from os.utime (a time past the year 30,000), no 2 GiB read."""
    with pytest.raises(UnsafeArchive, match=words):
        unpack(io.BytesIO(archive), str(tmp_path / "out"))
