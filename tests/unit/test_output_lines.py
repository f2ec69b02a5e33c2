"""The output splitter: linear, bounded, \\r updates passed through; edge cases without an engine."""

from __future__ import annotations

import collections

import pytest

from dockertask.backends.streams import MAX_LINE, _Lines


def _split(*chunks: bytes) -> list[str]:
    got: list[str] = []
    lines = _Lines("stdout", lambda _stream, line: got.append(line), collections.deque(maxlen=5))
    for chunk in chunks:
        lines.feed(chunk)
    lines.close()
    return got


@pytest.mark.parametrize("chunks, expected", [
    ((b"a\nb\n",), ["a", "b"]),
    ((b"a\r\nb",), ["a", "b"]),
    ((b"a\r", b"\nb\n"), ["a", "b"]),                      # \r\n split across chunks is one newline
    ((b"10%\r", b"50%\r", b"done\n"), ["10%\r", "50%\r", "done"]),
    ((b"tail without end",), ["tail without end"]),
    ((b"x" * MAX_LINE,), ["x" * MAX_LINE]),                # exactly the bound (this once killed the pump)
])
def test_lines_and_updates(chunks: tuple[bytes, ...], expected: list[str]) -> None:
    """\\n and \\r\\n end lines, \\r ends an update (kept for the terminal), a last partial line is flushed."""
    assert _split(*chunks) == expected


def test_endless_output_comes_in_bounded_pieces_cut_between_characters() -> None:
    """Output without line ends is cut at MAX_LINE bytes, never inside a UTF-8 character."""
    text = "é" * MAX_LINE  # two bytes each: a cut at an odd offset would split one
    pieces = _split(*(text.encode()[i:i + 4096] for i in range(0, 2 * MAX_LINE, 4096)))
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= MAX_LINE for p in pieces)
    assert "\ufffd" not in "".join(pieces)
