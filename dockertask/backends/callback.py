"""The host's end of the Swarm carrier: a TLS listener that task containers connect back to.

Each call registers a one-time token; the container (``runtime/connector.py``) presents it first thing on
an encrypted connection, checks the host's certificate against the digest it was given, and from
then on the connection carries the call in and the output, files and result out, just as the
attach stream does on one engine. A connection with an unknown or used token is closed at once.

The certificate is self-signed, made per process (``cryptography``), and never written anywhere
but a 0600 file that is removed as soon as the ssl module has read it.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator

from dockertask.errors import DockerTaskError

HANDSHAKE_TIMEOUT = 10.0
SMALL = 64 * 1024
# A node that goes down or is cut off mid-call never closes its connection: without keepalive the host
# would wait for the result of an untimed call for ever. TCP probes after 5 s of silence, every 2 s;
# five unanswered end the connection (~15 s), and the backend reports that as a preemption, so an
# interruptible task runs again on another node. The connector (runtime/connector.py) does the same.
KEEPALIVE = (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 5))


def keep_alive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE:
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class Call:
    """One call waiting for its container to connect."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.conn: ssl.SSLSocket | None = None
        self.arrived = threading.Event()
        self.exit_record: int | None = None  # the bootstrap's exit code, once the container says
        self._send_lock = threading.Lock()

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """(stream, bytes) as the container sends them (1 stdout, 2 stderr); the exit record is kept."""
        conn = self.conn
        assert conn is not None
        while True:
            header = _recv_exact(conn, 8)
            if header is None:
                return
            stream, size = struct.unpack(">BxxxI", header)
            data = _recv_exact(conn, size)
            if data is None:
                return
            if stream == 3:
                self.exit_record = int(data)
                return
            yield stream, data

    def send_pieces(self, pieces: Iterable[bytes]) -> None:
        """More of the container's stdin, framed (a replica's stdin stays open between calls)."""
        conn = self.conn
        assert conn is not None
        with self._send_lock:
            for piece in pieces:
                if not piece:  # a zero length would close the container's stdin
                    continue
                if len(piece) < SMALL:  # header and piece in one write: a frame is one segment, not two
                    conn.sendall(struct.pack(">I", len(piece)) + piece)
                else:
                    conn.sendall(struct.pack(">I", len(piece)))
                    conn.sendall(piece)

    def send_stdin(self, pieces: Iterable[bytes]) -> None:
        """The container's whole stdin, framed; then the frame that closes it."""
        self.send_pieces(pieces)
        assert self.conn is not None
        with self._send_lock:
            self.conn.sendall(struct.pack(">I", 0))

    def idle_and_open(self) -> bool:
        """A connected call whose container has sent nothing yet and not hung up: what a spare must be
        when claimed (its bootstrap waits for the call and says nothing first, so anything readable
        here is the end of the connection)."""
        conn = self.conn
        if conn is None:
            return False
        try:
            readable, _, _ = select.select([conn], [], [], 0)
        except (OSError, ValueError):  # closed
            return False
        return not readable and not conn.pending()

    def hang_up(self) -> None:
        """Close the connection: the container's relay kills the call (a timeout, Ctrl-C)."""
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()


def _recv_exact(conn: ssl.SSLSocket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = conn.recv(min(n - len(buf), 1 << 20))
        except (OSError, ValueError):
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _self_signed() -> tuple[bytes, bytes]:
    """A fresh certificate and key (PEM) for this process's listener."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockertask-callback")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class CallbackServer:
    """Listens on all interfaces at the configured port (or any free one); containers are told
    ``advertised_host:port``. One per process, started on the first Swarm call."""

    def __init__(self, callback_address: str) -> None:
        try:
            cert_pem, key_pem = _self_signed()
        except ImportError:
            raise DockerTaskError("the Swarm backend needs the cryptography package for its encrypted callback "
                                  "connection: pip install 'dockertask[swarm]'") from None
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ctx.num_tickets = 0  # nothing sent after the handshake: reads and writes stay independent
        with tempfile.TemporaryDirectory(prefix="dockertask-tls-") as d:  # 0700, removed on exit
            path = os.path.join(d, "cert.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(cert_pem + key_pem)
            self._ctx.load_cert_chain(path)
        der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
        self.pin = hashlib.sha256(der).hexdigest()
        host, _, port = callback_address.rpartition(":") if ":" in callback_address else (callback_address, "", "0")
        self._listener = socket.create_server(("", int(port)), backlog=128, reuse_port=False)
        self.address = f"{host}:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._waiting: dict[bytes, Call] = {}
        threading.Thread(target=self._accept, name="dockertask-callback", daemon=True).start()

    def expect(self) -> Call:
        call = Call(os.urandom(32).hex().encode())
        with self._lock:
            self._waiting[call.token] = call
        return call

    def close(self) -> None:
        """Stop listening (calls already connected go on). A bare close() would not: the accept thread's
        blocked accept() keeps the socket listening on Linux; shutdown() wakes it and ends that."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def forget(self, call: Call) -> None:
        with self._lock:
            self._waiting.pop(call.token, None)

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(raw,), daemon=True).start()

    def _handshake(self, raw: socket.socket) -> None:
        try:
            # No Nagle: a replica's call is a few small frames each way, and waiting for the peer's delayed
            # ACK before sending the next one cost ~40 ms a call.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keep_alive(raw)
            raw.settimeout(HANDSHAKE_TIMEOUT)
            conn = self._ctx.wrap_socket(raw, server_side=True)
            line = b""
            while not line.endswith(b"\n") and len(line) < 128:  # byte by byte: what follows is the call's
                chunk = conn.recv(1)
                if not chunk:
                    break
                line += chunk
            with self._lock:
                call = self._waiting.pop(line.strip(), None)  # one use: a replayed token finds nothing
            if call is None:
                conn.close()
                return
            conn.settimeout(None)
            call.conn = conn
            call.arrived.set()
        except (OSError, ValueError):
            raw.close()
