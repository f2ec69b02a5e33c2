"""The tar format of File/Directory streams: headers written for what ``files.tar_pieces`` sends, and a
strict reader for what a container sends back.

Both are POSIX (ustar, with pax ``x`` headers for what ustar cannot hold), so tar and ``tarfile`` read
what is written here, and ``tarfile`` still unpacks a host's inputs in the container. They are written
by hand for speed: with 100,000 small files, ``TarInfo.tobuf`` spent ~45 µs a header and
``TarFile.next`` ~70 µs a member, more than the file system took to create the file. The reader knows
only what a stream of files, directories and symlinks needs; everything else in a header (owners,
devices, GNU extensions) is refused or ignored, never acted upon, and every size it is told is bounded
before it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

BLOCK = 512
END = b"\0" * (BLOCK * 2)
REGULAR, DIRECTORY, SYMLINK = b"0", b"5", b"2"
MAX_PAX = 1 << 20  # a pax header of a file, directory or link needs a few hundred bytes; 1 MiB is plenty
_OCTAL_MAX = 8 ** 11  # what an 11-digit octal field holds (size, mtime); past it, a pax record says it
_HEAD = b"ustar\x0000"
_MTIME_BOUND = 1 << 40  # ~35,000 years either side of 1970: past that os.utime overflows


class BadArchive(Exception):
    """What was read is not a tar stream this reader accepts (the message says why)."""


class Member(NamedTuple):
    name: str
    kind: bytes  # the type flag: REGULAR, DIRECTORY, SYMLINK, or any other (the caller refuses it)
    mode: int
    mtime: int
    size: int  # the bytes of data that follow this header (a regular file's content)
    linkname: str
    sparse: bool  # a GNU sparse member, in any of its spellings: it would announce more than it carries


# -- writing ------------------------------------------------------------------------------------------

def header(name: str, kind: bytes, mode: int, mtime: int, size: int = 0, linkname: str = "") -> bytes:
    """The header (blocks) of one member, as tarfile's PAX_FORMAT writes it: a pax ``x`` header first
    when the name or link is not ASCII or too long, or a number does not fit its field."""
    raw_name = name.encode("utf-8", "surrogateescape")
    raw_link = linkname.encode("utf-8", "surrogateescape")
    pax: list[tuple[bytes, bytes]] = []
    if len(raw_name) > 100 or not raw_name.isascii():
        pax.append((b"path", raw_name))
        raw_name = raw_name[:100].decode("ascii", "replace").encode("ascii", "replace")
    if len(raw_link) > 100 or not raw_link.isascii():
        pax.append((b"linkpath", raw_link))
        raw_link = raw_link[:100].decode("ascii", "replace").encode("ascii", "replace")
    if not 0 <= size < _OCTAL_MAX:
        pax.append((b"size", str(size).encode()))
        size = 0
    if not 0 <= mtime < _OCTAL_MAX:
        pax.append((b"mtime", str(mtime).encode()))
        mtime = 0
    block = _block(raw_name, kind, mode, mtime, size, raw_link)
    if not pax:
        return block
    records = b"".join(_record(key, value) for key, value in pax)
    padding = b"\0" * (-len(records) % BLOCK)
    return _block(b"././@PaxHeader", b"x", 0o644, 0, len(records), b"") + records + padding + block


def padding(size: int) -> bytes:
    """The zeros after ``size`` bytes of data, up to the next block."""
    return b"\0" * (-size % BLOCK)


def _record(key: bytes, value: bytes) -> bytes:
    """A pax record, "LEN KEY=VALUE\\n", LEN counting itself."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _block(name: bytes, kind: bytes, mode: int, mtime: int, size: int, linkname: bytes) -> bytes:
    head = b"".join((
        name.ljust(100, b"\0"), b"%07o\0" % (mode & 0o7777), b"0000000\0", b"0000000\0",
        b"%011o\0" % size, b"%011o\0" % mtime, b" " * 8, kind, linkname.ljust(100, b"\0"),
        _HEAD, b"\0" * 64, b"0000000\0", b"0000000\0", b"\0" * 167,
    ))
    return head[:148] + b"%06o\0 " % sum(head) + head[156:]


# -- reading ------------------------------------------------------------------------------------------

def members(stream: BinaryIO) -> Iterator[Member]:
    """Each member's header, in order; after one is yielded, the caller reads exactly its ``size`` bytes of
    data (and ``padding(size)``) or calls ``skip``. Ends at the end-of-archive block, or where the stream
    ends between members (tarfile accepts that too)."""
    pax: dict[bytes, bytes] = {}
    long_name = long_link = None
    while True:
        block = stream.read(BLOCK)
        if not block or block == END[:BLOCK]:
            return
        if len(block) < BLOCK:
            raise BadArchive("the archive ends inside a header")
        if block[148:156].strip(b" \0") == b"" or _number(block[148:156], "checksum") != _checksum(block):
            raise BadArchive("a header's checksum does not match: not a tar stream, or a damaged one")
        kind = block[156:157]
        size = _number(block[124:136], "size")
        if size < 0:
            raise BadArchive(f"a header's size is negative ({size})")
        if kind in (b"x", b"g", b"L", b"K"):  # an extended header: its data describes what follows
            if size > MAX_PAX:
                raise BadArchive(f"an extended header of {size} bytes (at most {MAX_PAX} are read)")
            data = _exactly(stream, size)
            _exactly(stream, -size % BLOCK)
            if kind == b"x":
                pax.update(_pax_records(data))
            elif kind == b"L":
                long_name = data.split(b"\0", 1)[0]
            elif kind == b"K":
                long_link = data.split(b"\0", 1)[0]
            continue  # a global header (g) sets defaults this reader has no use for
        if b"size" in pax:
            if not pax[b"size"].isdigit():
                raise BadArchive(f"an extended header's size is not a number: {pax[b'size'][:40]!r}")
            size = int(pax[b"size"])
        raw_name = pax.get(b"path") or long_name or _field(block[0:100])
        prefix = _field(block[345:500]) if block[257:262] == b"ustar" and block[257:263] != b"ustar " else b""
        if prefix and b"path" not in pax and long_name is None:
            raw_name = prefix + b"/" + raw_name
        raw_link = pax.get(b"linkpath") or long_link or _field(block[157:257])
        text = pax.get(b"mtime", b"").split(b".")[0]
        mtime = int(text) if text.lstrip(b"-").isdigit() else _number(block[136:148], "mtime")
        if not -_MTIME_BOUND < mtime < _MTIME_BOUND:
            raise BadArchive(f"a header's time is out of range ({mtime})")
        kind = REGULAR if kind == b"\0" else kind  # pre-POSIX tar's regular file
        yield Member(name=raw_name.decode("utf-8", "surrogateescape"), kind=kind,
                     mode=_number(block[100:108], "mode") & 0o7777, mtime=mtime,
                     size=0 if kind in (DIRECTORY, SYMLINK) else size,  # as tarfile: no data follows those
                     linkname=raw_link.decode("utf-8", "surrogateescape"),
                     sparse=kind == b"S" or any(k.startswith(b"GNU.sparse") for k in pax))
        pax, long_name, long_link = {}, None, None


def data(stream: BinaryIO, size: int, name: str = "a member") -> Iterator[bytes]:
    """A member's ``size`` bytes of data, in pieces of at most 1 MiB; its padding is read after the last."""
    left = size
    while left:
        piece = stream.read(min(left, 1 << 20))
        if not piece:
            raise BadArchive(f"the archive ends inside {name}")
        left -= len(piece)
        yield piece
    if size % BLOCK:
        stream.read(-size % BLOCK)


def skip(stream: BinaryIO, size: int) -> None:
    """Pass over ``size`` bytes of data and their padding."""
    for _ in data(stream, size):
        pass


def _exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise BadArchive("the archive ends inside an extended header")
    return data


def _field(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _number(raw: bytes, what: str) -> int:
    """An octal field (NUL or space ended), or GNU's base-256 for a large one."""
    if raw[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(raw[1:], "big")
        return value - (1 << (8 * (len(raw) - 1))) if raw[:1] == b"\xff" else value
    digits = raw.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise BadArchive(f"a header's {what} is not a number: {raw!r}") from None


def _checksum(block: bytes) -> int:
    """The sum of the header's bytes with its checksum field read as spaces."""
    return sum(block) - sum(block[148:156]) + 8 * 32


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos, pos + 24)
        length = data[pos:space]
        if space < 0 or not length.isdigit() or int(length) <= space - pos + 1 or pos + int(length) > len(data):
            raise BadArchive("an extended header's record is malformed")
        record = data[space + 1:pos + int(length)]
        key, eq, value = record.partition(b"=")
        if not eq or not record.endswith(b"\n"):
            raise BadArchive("an extended header's record is malformed")
        found[key] = value[:-1]
        pos += int(length)
    return found
