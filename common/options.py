"""What ``nbio serve`` asks of a server and ``nbio send`` of a client, and the defaults
every implementation shares (port 1234 on 127.0.0.1, as the talk's programs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, overload

from .events import Event, Listening
from .loopdelay import LoopDelay
from .payload import DEFAULT_CHUNK_SIZE, Payload
from .sink import Sink

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_GRACE",
    "DEFAULT_HOST",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "ECHO",
    "MODES",
    "SINK",
    "STALL_TIMEOUT",
    "ClientTls",
    "Echo",
    "SendOptions",
    "ServeOptions",
    "ServerTls",
    "at_once",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1234
#: Seconds a stopping server gives in-flight transfers before it aborts them.
DEFAULT_GRACE = 5.0
#: Connections a server holds at once before it refuses more.
DEFAULT_MAX_CONNECTIONS = 4096
#: Seconds a client waits, after its last byte and its half-close, for the sink to close in
#: turn (which a sink does only once it has read everything, up to the EOF): until then a
#: transfer is not ``sent``.
CLOSE_TIMEOUT = 30.0
#: Seconds a client waits for progress (the kernel taking a byte; in echo mode, an answer
#: coming back) before it gives up: a peer that never reads never holds it forever.
STALL_TIMEOUT = 30.0

#: What a server does with what it reads: count and drop it (RFC 863 Discard, the talk's
#: program), or write every byte back (RFC 862 Echo: request and response).
SINK = "sink"
ECHO = "echo"
MODES = (SINK, ECHO)
#: The most requests an echo client takes per connection (``--requests``).
MAX_REQUESTS = 10**9


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate and key (PEM files), and the CA that signed them if nbio
    made them (``serve --tls`` without files: a throwaway CA, said in ``listening``)."""

    certfile: str
    keyfile: str
    cafile: str | None = None


@dataclass(frozen=True)
class ClientTls:
    """What a client trusts (a CA's PEM file; None: the system's) and the name it expects
    the server's certificate to carry."""

    cafile: str | None = None
    server_hostname: str = "localhost"


@dataclass(frozen=True)
class Echo:
    """What an echo client asks: ``requests`` messages of ``message_size`` bytes on each
    connection, each read back whole before the next (closed loop), or one every
    ``1 / rate`` seconds whatever the answers do (open loop: latency from the schedule)."""

    message_size: int
    requests: int
    rate: float | None = None


S = TypeVar("S", bound=Sink)


@dataclass(frozen=True)
class ServeOptions:
    """What ``nbio serve`` asks of a server."""

    impl: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    loop: str = "default"
    digest: str = "none"
    grace: float = DEFAULT_GRACE
    idle_timeout: float | None = None  # close a connection silent for this long
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS
    tune: tuple[tuple[str, int], ...] = ()  # knobs the CLI set before serving (--tune)
    mode: str = SINK  # or ECHO: write back every byte read
    tls: ServerTls | None = None

    @overload
    def sink(self, delay: LoopDelay, emit: Callable[[Event], None]) -> Sink: ...

    @overload
    def sink(self, delay: LoopDelay, emit: Callable[[Event], None], kind: type[S]) -> S: ...

    def sink(
        self, delay: LoopDelay, emit: Callable[[Event], None], kind: type[Sink] = Sink
    ) -> Sink:
        """The framework-free state of a server with these options (a ``kind`` of Sink)."""
        return kind(
            self.digest,
            delay,
            emit,
            self.max_connections,
            self.idle_timeout,
            echo=self.mode == ECHO,
        )

    def listening(self, port: int, loop_impl: str) -> Listening:
        """The ``listening`` event of a server with these options, on ``port``."""
        return Listening(
            self.impl,
            self.loop,
            self.host,
            port,
            loop_impl,
            self.digest,
            dict(self.tune),
            mode=self.mode,
            tls_ca=self.tls.cafile if self.tls else None,
            tls=self.tls is not None,
        )


def at_once(connections: int, concurrency: int | None) -> int:
    """How many of ``connections`` run at once: ``concurrency`` (None: all), at most all."""
    return connections if concurrency is None else min(concurrency, connections)


@dataclass(frozen=True)
class SendOptions:
    """What ``nbio send`` asks of a client: ``connections`` streams, each the whole payload."""

    payload: Payload
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    loop: str = "default"
    connections: int = 1
    digest: str = "none"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    close_timeout: float = CLOSE_TIMEOUT
    #: At most this many connections open at once (each starts when one ends); None: all.
    concurrency: int | None = None
    stall_timeout: float = STALL_TIMEOUT
    #: Request and response instead of a one-way stream (the payload gives the messages).
    echo: Echo | None = None
    tls: ClientTls | None = None

    @property
    def at_once(self) -> int:
        """How many connections run at once: ``concurrency``, at most ``connections``."""
        return at_once(self.connections, self.concurrency)
