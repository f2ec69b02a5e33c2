"""What one isolated call sends on the container's stdin: bootstrap, header, runtime zip, call, secrets, inputs."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from dockertask.calls.pickling import dumps_call, register_user_modules, unpicklable
from dockertask.calls.runtime_zip import bootstrap_pieces, runtime_zip
from dockertask.runtime import protocol
from dockertask.runtime.protocol import EMPTY_LIST, encode_meta, frame_pieces


class Envelope(NamedTuple):  # records internal to the package are NamedTuples: cheaper to import
    """What one call sends: the header the bootstrap reads first, and the pickled call."""

    header: dict[str, Any]
    pickled_call: bytes
    inputs: tuple[Any, ...] = ()  # the File/Directory objects the call's persistent ids stand for

    def stdin_pieces(self, header: dict[str, Any], secrets_frame: bytes = EMPTY_LIST,
                     ahead: bool = False) -> Iterable[bytes]:
        """Everything the container reads from stdin, for one attempt (``header`` adds to ours), in pieces:
        a tuple, or with File/Directory inputs an iterator that reads them from disk as it is sent.
        ``ahead``: for a container started ahead, which was sent AHEAD_PIECES already: the call alone."""
        if self.inputs:
            header = {**header, "inputs": [[obj.kind, obj.name] for obj in self.inputs]}
        head = (
            *(() if ahead else bootstrap_pieces()),
            *frame_pieces(encode_meta({**self.header, **header})),
            *(() if ahead else frame_pieces(runtime_zip())),
            *frame_pieces(self.pickled_call),
            *frame_pieces(secrets_frame),
        )
        if not self.inputs:
            return head
        return itertools.chain(head, input_frames(self.inputs))

    def stdin_bytes(self, header: dict[str, Any], secrets_frame: bytes = EMPTY_LIST) -> bytes:
        """The same as one bytes object (tests feed it to a local interpreter)."""
        return b"".join(self.stdin_pieces(header, secrets_frame))


def ahead_pieces(preload: tuple[str, ...] = ()) -> tuple[bytes, ...]:
    """What a container started ahead of its call is sent at once (calls/spares.py): the bootstrap, a header
    saying "ahead", and the runtime zip. It holds no call, argument or secret; its Python then loads the
    runtime, calls the ``preload`` functions of the runtime ("module:function"), and waits for a call's
    header (Envelope.stdin_pieces(..., ahead=True))."""
    header = {"python": protocol.HOST_PYTHON, "mode": "ahead", "preload": list(preload)}
    return (*bootstrap_pieces(), *frame_pieces(encode_meta(header)), *frame_pieces(runtime_zip()))


def input_frames(inputs: tuple[Any, ...]) -> Iterator[bytes]:
    """The inputs as one tar stream of ``<i>/<name>``, framed, ended by an empty frame: what follows a
    call's frames when it has File/Directory inputs."""
    from dockertask import files

    for piece in files.tar_pieces([(f"{i}/{obj.name}", obj.path) for i, obj in enumerate(inputs)]):
        yield from frame_pieces(piece)
    yield b"0\n"


def make_envelope(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  task_name: str = "", with_files: bool = False) -> Envelope:
    """Pickle the call once; each attempt adds its own header fields in ``stdin_bytes``.

    What cannot be pickled (a lock, a 10,000-deep structure) is a TaskInputError naming the
    argument, raised before any container starts. ``with_files``: the arguments may hold File or
    Directory objects, which are sent as files (see files.py), not pickled."""
    register_user_modules()
    try:
        pickled, inputs = dumps_call((func, args, kwargs), with_files)
    except Exception as exc:  # PicklingError, TypeError, RecursionError...: whatever pickle says
        raise unpicklable(func, args, kwargs, task_name or getattr(func, "__qualname__", "?"), exc) from None
    return Envelope(header={"python": protocol.HOST_PYTHON}, pickled_call=pickled, inputs=inputs)
