"""A call's result as the run record keeps it for resume, and back: its pickle, and the files it returned
kept by content (a File/Directory result points into an output directory that may be gone by the time the
program is resumed, so the record holds the files themselves, as the cache does).

    plain value      its cloudpickle
    with files       MAGIC, the lengths, the files' (kind, name) list, the pickle, a tar of ``<i>/<name>``

Bounded by ``limit`` (DOCKERTASK_RUNS_MAX_RESULT) in all: a result over it is not kept, and its call runs
again on resume. On the way back the tar is unpacked as a container's archive is (files.unpack: nothing
outside the call's new output directory).
"""

from __future__ import annotations

import io
import json
import os
import struct
from typing import Any

import cloudpickle

from dockertask import files
from dockertask.calls import pickling

MAGIC = b"DTKEPT1\n"
_LENGTHS = struct.Struct(">II")


def dumps(value: Any, limit: int, may_carry_files: bool = True) -> bytes | None:
    """``may_carry_files``: False when the task's interface says its result cannot hold any (no walk)."""
    found: list[Any] = []
    if not may_carry_files or not any(True for _ in files.walk(value)):
        data = cloudpickle.dumps(value, protocol=5)
        return data if len(data) <= limit else None
    data = pickling.dumps_with_paths(value, found)
    manifest = json.dumps([[obj.kind, obj.name] for obj in found]).encode()
    size = len(data) + len(manifest)
    tar = bytearray()
    for piece in files.tar_pieces([(f"{i}/{obj.name}", obj.path) for i, obj in enumerate(found)]):
        tar += piece
        if size + len(tar) > limit:
            return None
    return MAGIC + _LENGTHS.pack(len(manifest), len(data)) + manifest + data + bytes(tar)


def loads(blob: bytes, task_name: str) -> Any:
    if not blob.startswith(MAGIC):
        return pickling.loads(blob)
    at = len(MAGIC)
    manifest_len, data_len = _LENGTHS.unpack_from(blob, at)
    at += _LENGTHS.size
    manifest = [(str(kind), str(name)) for kind, name in json.loads(blob[at:at + manifest_len])]
    at += manifest_len
    data = blob[at:at + data_len]
    archive = io.BytesIO(blob[at + data_len:])
    placed = files.deliver(files.output_dir(task_name, os.urandom(8).hex()), manifest,
                           lambda staged: files.unpack(archive, staged))
    return pickling.loads_with_paths(data, placed)
