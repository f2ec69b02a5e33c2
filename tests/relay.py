"""A unix-socket relay in front of the real engine, which a test can cut and restore.

Point ``DOCKER_HOST`` at ``relay.url``: to the client, ``cut()`` is the engine dying (every open
connection drops, new ones are refused), ``restore()`` the engine coming back. The real engine
and its containers are untouched, so a test can check what is left on it. No second dockerd is
started (one in the host's network namespace once deleted the host's docker0 bridge).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

ENGINE = "/var/run/docker.sock"


class Relay:
    def __init__(self, path: Path, upstream: str = ENGINE) -> None:
        self.path = str(path)
        self.url = f"unix://{self.path}"
        self.upstream = upstream
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.wedged = False  # connections stay open, and nothing is answered: an engine that hangs
        self.restore()

    def restore(self) -> None:
        """The engine is back: accept connections again."""
        if os.path.exists(self.path):
            os.unlink(self.path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """The engine is gone: drop every connection, refuse new ones."""
        with self._lock:
            server, self._server = self._server, None
            conns, self._open = self._open, []
        if server is not None:
            server.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._server is not server:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def wedge(self) -> None:
        """The engine hangs: every request, on a connection open now or made later, waits for ever."""
        self.wedged = True

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.wedged:
                    dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
