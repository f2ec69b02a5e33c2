"""A reusable replica (ReusePolicy) on Swarm: a long-lived service whose callback connection stays open.

The serve-mode bootstrap inside speaks frames only, so the connection carries exactly what a replica's
attach stream carries on one engine; this class gives calls/replicas.py the same interface as
``docker.WorkerConnection``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dockertask.backends import callback
from dockertask.backends.base import ContainerJob, OutputSink
from dockertask.backends.streams import Frames, Pump


class SwarmWorker:
    """A reusable replica on Swarm, with the interface calls/replicas.py uses (see Backend.open_worker)."""

    def __init__(self, service_id: str, call: callback.Call, job: ContainerJob, on_output: OutputSink,
                 release: Callable[[], None]) -> None:
        self.container_id = service_id
        self.frames = Frames()
        self._call = call
        self._release = release
        self._closed = False
        self.pump = Pump(call.frames(), on_output, self.frames.put_frame)
        self.pump.start()
        self.send(job.stdin.take())

    def route_output(self, sink: OutputSink) -> None:
        self.pump.route_output(sink)  # from the call's A frame on: in stream order

    def send(self, pieces: Iterable[bytes]) -> None:
        self._call.send_pieces(pieces)

    def take_archive(self) -> Any:
        return self.pump.control.take_archive()

    def exit_state(self) -> dict[str, Any]:
        """After the replica died: its bootstrap's exit code, or 137 when the connection just ended
        (killed from outside); OOM kills of a call come in that call's X frame."""
        code = self._call.exit_record
        return {"ExitCode": 137 if code is None else code, "OOMKilled": False}

    def stopped_by_engine(self, state: dict[str, Any]) -> bool:
        """A service's task ends without an engine event this side can read: a stop from outside."""
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()
