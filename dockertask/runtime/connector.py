"""In a Swarm task's container: connect back to the host and run the usual bootstrap behind it.

Stdlib only; its source is the service's command (code, no call data). The call arrives over a TLS
connection to the host's callback server, authenticated by a one-time token that Swarm mounts as a
secret (never in the service spec), and checked against the host certificate's pinned SHA-256.
The bootstrap runs as a child process exactly as on one engine: its stdin, stdout and stderr are
pipes relayed over the connection, so everything inside the container is shared between carriers.

Wire format. Host → container: frames of ``>I`` length + bytes (its stdin); length 0 closes stdin.
Container → host: docker's attach framing (``>BxxxI`` stream, length): 1 stdout, 2 stderr, and
3 the exit record ``b"<code>"``, sent after both pipes are drained. The host closing the
connection (a timeout, Ctrl-C) kills the bootstrap. Exit codes of its own: 97 the host could not
be reached, 98 the peer was not the host (certificate pin), 99 the token file is missing.
"""

import hashlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

UNREACHABLE, NOT_THE_HOST, NO_TOKEN = 97, 98, 99


def _connect(address, pin, deadline):
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a self-signed certificate: its pinned digest is checked below
    while True:
        try:
            raw = socket.create_connection((host, int(port)), timeout=5)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames go at once (see callback.py)
            _keep_alive(raw)
            conn = ctx.wrap_socket(raw)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.stderr.write(f"dockertask: this container cannot reach the host at {address}: {exc}\n")
                sys.exit(UNREACHABLE)
            time.sleep(0.2)
    if hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest() != pin:
        sys.stderr.write(f"dockertask: {address} did not present the host's certificate\n")
        sys.exit(NOT_THE_HOST)
    conn.settimeout(None)  # blocking from here on (a timeout leaves the socket non-blocking)
    return conn


def _keep_alive(sock):
    """As callback.keep_alive: a host that vanished is noticed in ~15 s, and the call is killed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 5)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def main():
    try:
        with open(os.environ["DOCKERTASK_TOKEN_FILE"], "rb") as f:
            token = f.read().strip()
    except (KeyError, OSError) as exc:
        sys.stderr.write(f"dockertask: no call token in this container ({exc})\n")
        sys.exit(NO_TOKEN)
    deadline = time.monotonic() + float(os.environ.get("DOCKERTASK_CONNECT_TIMEOUT", "20"))
    conn = _connect(os.environ["DOCKERTASK_CALLBACK"], os.environ["DOCKERTASK_CALLBACK_PIN"], deadline)
    conn.sendall(token + b"\n")
    send_lock = threading.Lock()

    def send(stream, data):
        with send_lock:
            conn.sendall(struct.pack(">BxxxI", stream, len(data)) + data)

    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, bufsize=0)
    try:  # the call, not this relay, is what the kernel should pick under memory pressure (the bootstrap
        # runs the call in a child that inherits this, and reports an OOM kill itself: an X frame)
        with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass

    def host_to_child():
        finished = False
        try:
            while True:
                (n,) = struct.unpack(">I", _recv_exact(conn, 4))
                if n == 0:
                    child.stdin.close()
                    finished = True
                    continue
                data = memoryview(_recv_exact(conn, n))
                while data and not finished:
                    try:
                        data = data[child.stdin.write(data):]
                    except OSError:  # the call ended without reading it all: keep draining the host
                        finished = True
        except (OSError, EOFError, ValueError):
            pass
        if child.poll() is None:  # the host hung up before the call ended: a timeout or Ctrl-C
            child.kill()

    def child_to_host(pipe, stream):
        try:
            while True:
                data = pipe.read(65536)
                if not data:
                    return
                send(stream, data)
        except OSError:
            child.kill()

    threading.Thread(target=host_to_child, daemon=True).start()
    relays = [threading.Thread(target=child_to_host, args=(child.stdout, 1)),
              threading.Thread(target=child_to_host, args=(child.stderr, 2))]
    for t in relays:
        t.start()
    code = child.wait()
    for t in relays:
        t.join()
    code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as the engine reports it
    try:
        send(3, b"%d" % code)
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
