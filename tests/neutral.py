"""Neutral peers beyond harness's plain sink and client: plain blocking stdlib sockets, no
framework, for echo mode and for TLS. What they do is the contract every implementation
meets:

- **echo**: the server writes back every byte it reads, in order, and closes after the
  client's EOF once it has written everything back; the client sends each message and
  reads it back whole.
- **TLS**: after its last byte a client sends close_notify (TLS's EOF) and waits for the
  sink's close_notify in turn, which a sink sends only once it has read everything up to
  the client's: that is the receipt, as the close is over TCP. A connection that ends
  without close_notify is ``truncated``, never ``eof``.
"""

from __future__ import annotations

import hashlib
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from harness import LOCALHOST, WAIT, Arrival
from nbio.common.payload import Payload


def tls_files(tmp: str) -> dict[str, str]:
    """A throwaway CA and a localhost certificate it signed: ca.pem, cert.pem, key.pem."""
    from nbio.edge.tls import throwaway

    made = throwaway(tmp)
    assert made.cafile is not None
    return {"ca": made.cafile, "cert": made.certfile, "key": made.keyfile}


def server_context(files: dict[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(files["cert"], files["key"])
    return context


def client_context(files: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files["ca"])
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


# --- echo ---------------------------------------------------------------------------------


@dataclass
class EchoServer:
    """A threaded stdlib echo server on 127.0.0.1, port 0 (TLS with ``context``): writes
    back what it reads; records when each message of ``message_size`` began to arrive."""

    context: ssl.SSLContext | None = None
    message_size: int = 0
    arrivals: list[float] = field(default_factory=list)
    ended: queue.Queue[str] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._listener = socket.create_server((LOCALHOST, 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        outcome = "eof"
        seen = 0
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
            with conn:
                while data := conn.recv(256 * 1024):
                    if self.message_size:
                        for _ in range(
                            (seen + len(data)) // self.message_size - seen // self.message_size
                        ):
                            self.arrivals.append(time.monotonic())
                    seen += len(data)
                    conn.sendall(data)
                if isinstance(conn, ssl.SSLSocket):
                    conn = conn.unwrap()  # our close_notify: the receipt
        except ssl.SSLEOFError:
            outcome = "truncated"
        except OSError as exc:
            outcome = f"error: {exc}"
        self.ended.put(outcome)

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def echo_exchange(port: int, messages: list[bytes], context: ssl.SSLContext | None = None) -> bytes:
    """Send every message on one connection (from a thread of its own, so that a large
    one cannot deadlock both sides' buffers), read everything back, half-close, and
    return what came back."""
    sock = socket.create_connection((LOCALHOST, port), timeout=WAIT)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    total = sum(len(m) for m in messages)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for message in messages:
                sock.sendall(message)
        except OSError as exc:
            failures.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    back = bytearray()
    with sock:
        while len(back) < total:
            data = sock.recv(256 * 1024)
            if not data:
                break
            back += data
        writer.join(WAIT)
        if isinstance(sock, ssl.SSLSocket):
            sock.unwrap()
        else:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the server's close, once it wrote everything back
                pass
    assert not failures, failures
    return bytes(back)


def messages(size: int, count: int) -> list[bytes]:
    """``count`` messages of ``size`` bytes, cut from the random pattern: each differs."""
    chunks: Iterator[bytes] = Payload(size * count, pattern="random", seed=size).chunks(size)
    return list(chunks)


# --- TLS ----------------------------------------------------------------------------------


@dataclass
class TlsSink:
    """A threaded TLS sink: reads until the client's close_notify, then answers with its
    own (the receipt) and closes; a FIN without close_notify is ``truncated``. With
    ``clogged``, it reads nothing until :meth:`release`."""

    context: ssl.SSLContext
    clogged: bool = False
    arrivals: queue.Queue[Arrival] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.released = threading.Event()
        if not self.clogged:
            self.released.set()
        self._listener = socket.create_server((LOCALHOST, 0), backlog=1024)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, raw: socket.socket) -> None:
        digest = hashlib.sha256()
        count = 0
        outcome = "eof"
        try:
            conn = self.context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            with conn:
                self.released.wait(WAIT)
                while data := conn.recv(256 * 1024):
                    digest.update(data)
                    count += len(data)
                conn.unwrap()
        except ssl.SSLEOFError:
            outcome = "truncated"
        except (OSError, ValueError) as exc:
            outcome = f"error: {exc}"
        finally:
            raw.close()
        self.arrivals.put(Arrival(count, digest.hexdigest(), outcome))

    def release(self) -> None:
        self.released.set()

    def wait(self, timeout: float = WAIT) -> Arrival:
        return self.arrivals.get(timeout=timeout)

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> TlsSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def tls_send(port: int, payload: Payload, context: ssl.SSLContext) -> str | None:
    """Send ``payload`` over TLS, then close_notify, and wait for the sink's in turn;
    return the TLS version the handshake agreed."""
    with socket.create_connection((LOCALHOST, port), timeout=WAIT) as raw:
        sock = context.wrap_socket(raw, server_hostname="localhost")
        version = sock.version()
        for chunk in payload.chunks(256 * 1024):
            sock.sendall(chunk)
        sock.unwrap()  # our close_notify, then theirs: the receipt
    return version
