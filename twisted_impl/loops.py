"""Running Twisted: on which reactor (epoll, poll, select, or asyncio's loop, optionally
uvloop), until which signal; and Twisted's own TLS, built from the PEM files every other
implementation reads through the standard library's ``ssl``.

A reactor must be installed before anything imports ``twisted.internet.reactor``, and
cannot be restarted: :func:`run` installs the chosen one, runs it once, and hands it to
``main`` as a parameter; no module of ours imports the global reactor.

TLS in Twisted is a protocol wrapped around yours (``twisted/protocols/tls.py``,
``TLSMemoryBIOProtocol`` over pyOpenSSL's memory BIOs) that acts as its transport: the
server listens with ``listenTCP`` and a ``TLSMemoryBIOFactory``, as ``listenSSL`` does, and
the client connects through the same factory. :class:`TlsLayer` is that wrapper, telling the
protocol above what the stock one keeps to itself.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar, cast

from OpenSSL import SSL, crypto
from twisted.internet import defer, error
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    ISystemHandle,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    TLSVersion,
    VerificationError,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from ..common.events import format_peer
from ..common.options import ClientTls, ServerTls
from ..common.sink import Sink

__all__ = [
    "Signals",
    "TlsFactory",
    "TlsFailed",
    "TlsLayer",
    "client_tls",
    "install",
    "loop_name",
    "report_accept_trouble",
    "run",
    "server_tls",
    "stops_reading_at_an_error",
    "tls_failure",
    "wait_idle",
    "wait_or_signal",
]

#: Where Twisted's listening port logs what goes wrong when it accepts.
_PORT_LOG = "twisted.internet.tcp.Port"

T = TypeVar("T")


def install(name: str) -> ReactorBase:
    """Install the reactor called ``name`` and return it."""
    if name == "default":
        from twisted.internet import default  # epoll on Linux, kqueue on BSD and macOS

        default.install()
    elif name == "poll":
        from twisted.internet import pollreactor

        pollreactor.install()
    elif name == "select":
        from twisted.internet import selectreactor  # cannot watch descriptors >= 1024

        selectreactor.install()
    elif name in ("asyncio", "uvloop"):
        import asyncio

        from twisted.internet import asyncioreactor

        loop: asyncio.AbstractEventLoop
        if name == "uvloop":
            import uvloop  # imported only when asked for: it is an optional extra

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(eventloop=loop)
    else:
        raise ValueError(f"unknown Twisted reactor {name!r}")
    from twisted.internet import reactor

    return cast(ReactorBase, reactor)


def run(main: Callable[[ReactorBase], Coroutine[Any, Any, T]], loop: str) -> T:
    """Install the reactor ``loop``, run ``main(reactor)`` on it, and return its result.

    Like ``task.react``, but it returns instead of exiting the process, and leaves
    SIGINT and SIGTERM to :class:`Signals`.
    """
    reactor = install(loop)
    outcome: list[object] = []

    def start() -> None:
        finished = Deferred.fromCoroutine(main(reactor))
        finished.addBoth(outcome.append)
        finished.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return cast(T, result)


def loop_name(reactor: object) -> str:
    """Name the reactor in use, and the loop under an asyncio reactor."""
    name = type(reactor).__name__
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        name += f"/{type(loop).__module__.split('.')[0]}.{type(loop).__name__}"
    return name


def stops_reading_at_an_error(reactor: object) -> bool:
    """Whether the reactor stops watching a socket once an error is pending on it, after
    one last read, without telling its transport: the asyncio reactor on uvloop.

    An RST that arrives while bytes are still queued makes epoll report
    ``EPOLLIN|EPOLLERR|EPOLLHUP``. libuv's poll handle stops at ``POLLERR`` and calls back
    with ``UV_EBADF`` (``uv__poll_io``, src/unix/poll.c); uvloop runs the reader's callback
    once more and closes the handle (``UVPoll._fatal_error``, uvloop/handles/poll.pyx).
    Twisted reads one ``recv(65536)`` per callback, so the reset queued behind the bytes is
    never read, and Twisted still believes it is reading. Seen under strace (a client that
    wrote 32 MiB and reset): ``epoll_pwait`` = ``EPOLLIN|EPOLLERR|EPOLLHUP`` on the
    connection, ``recvfrom`` = 65536, ``epoll_ctl(EPOLL_CTL_DEL)``, and nothing more on it
    until the idle timeout closed it. Twisted's own reactors, and uvloop's transports (a
    libuv stream, which reads until the error), do not lose it."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop is not None and type(loop).__module__.split(".")[0] == "uvloop"


def report_accept_trouble(reactor: IReactorTime, port: Any, sink: Sink) -> Callable[[], None]:
    """Report what Twisted does when accept() fails for want of descriptors or memory, and
    stop accepting for the sink's back-off; return what stops watching.

    Twisted handles EMFILE itself (``twisted/internet/tcp.py``, ``_accept``): it closes a
    descriptor it keeps in reserve, accepts every queued connection and closes it at once,
    then reserves again, and says so only in its log. Its other resource errors (ENFILE,
    ENOBUFS, ENOMEM) it logs and leaves the listener readable, so the reactor calls it again
    at once. We read its log: each connection it closed is reported as ``rejected``, the
    episode as ``accept_paused``, and the port stops reading for the back-off."""
    paused = [False]

    def resume() -> None:
        paused[0] = False
        if port.connected:  # not stopped meanwhile
            port.startReading()

    def pause(reason: str) -> None:
        if not paused[0]:
            paused[0] = True
            port.stopReading()
            reactor.callLater(sink.accept_failed(reason, time.monotonic()), resume)

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") != _PORT_LOG:
            return
        text = event.get("log_format") or ""
        if text.startswith("EMFILE recovery: Closed socket"):
            address = event.get("address")
            sink.reject(format_peer(address), "no descriptor: closed by Twisted's EMFILE recovery")
        elif text.startswith("EMFILE encountered"):
            pause(os.strerror(errno.EMFILE).lower())
        elif text.startswith("Could not accept new connection"):
            code = getattr(errno, str(event.get("acceptError")), None)
            pause(os.strerror(code).lower() if code else str(event.get("acceptError")))

    observer = cast(ILogObserver, observe)  # a log observer is any such callable
    globalLogPublisher.addObserver(observer)
    return lambda: globalLogPublisher.removeObserver(observer)


class Signals:
    """SIGINT and SIGTERM, delivered on the reactor, counted so a second one can cut short."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, reactor: ReactorBase) -> None:
        self._reactor = reactor
        self._arrived: list[int] = []
        self._waiting: list[Deferred[int]] = []
        self._previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of the main thread, maybe
        # inside the reactor: hand the signal over the way Twisted's own handlers do.
        self._reactor.callFromThread(self._deliver, signum)

    def _deliver(self, signum: int) -> None:
        if self._waiting:
            self._waiting.pop(0).callback(signum)
        else:
            self._arrived.append(signum)

    def wait(self) -> Deferred[int]:
        """A Deferred that fires with the next signal's number."""
        if self._arrived:
            return defer.succeed(self._arrived.pop(0))
        waiting: Deferred[int] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(waiting)
        return waiting

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


async def wait_or_signal(work: Deferred[Any], signals: Signals) -> int | None:
    """Wait for ``work`` (raising what it raises) and return None, unless SIGINT or SIGTERM
    comes first: then cancel the work and return the signal's number."""
    interrupt = signals.wait()
    first: Deferred[tuple[Any, int]] = defer.DeferredList(
        [work, interrupt], fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True
    )
    try:
        result, index = await first
    except defer.FirstError as exc:  # the work failed first
        interrupt.cancel()
        exc.subFailure.raiseException()
    if index == 0:
        interrupt.cancel()
        return None
    work.cancel()
    await defer.DeferredList([work], consumeErrors=True)  # let it unwind
    return cast(int, result)


async def wait_idle(
    reactor: IReactorTime, sink: Sink, timeout: float | None, signals: Signals | None = None
) -> bool:
    """Wait until ``sink`` has no open connection, at most ``timeout`` seconds, or until a
    signal arrives; return whether it is idle."""
    idle: Deferred[None] = Deferred()
    sink.when_idle(lambda: None if idle.called else idle.callback(None))
    if timeout is None and signals is None:
        await idle
        return True
    waiters: list[Deferred[Any]] = [idle]
    if timeout is not None:
        waiters.append(deferLater(reactor, timeout, lambda: None))
    if signals is not None:
        waiters.append(signals.wait())
    await defer.race(waiters)  # the first to fire wins; race() cancels the others
    return sink.live == 0


# --- TLS --------------------------------------------------------------------------------

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def server_tls(tls: ServerTls) -> CertificateOptions:
    """A server's TLS options from its PEM files (its certificate, any chain after it, its
    key): TLS 1.3 and nothing older, as every other implementation's ``ssl`` context."""
    with open(tls.certfile, "rb") as cert, open(tls.keyfile, "rb") as key:
        chain, private = cert.read(), key.read()
    leaf, *intermediates = _PEM_CERTIFICATE.findall(chain)
    ours = PrivateCertificate.loadPEM(leaf + b"\n" + private)  # checks the key fits
    return CertificateOptions(
        privateKey=ours.privateKey.original,
        certificate=ours.original,
        extraCertChain=[Certificate.loadPEM(pem).original for pem in intermediates],
        raiseMinimumTo=TLSVersion.TLSv1_3,
    )


def client_tls(tls: ClientTls) -> IOpenSSLClientConnectionCreator:
    """A client's TLS options: it trusts ``tls.cafile`` (None: the platform's CAs), checks
    that the server's certificate names ``tls.server_hostname`` (with service_identity),
    and speaks TLS 1.3 only."""
    if tls.cafile is None:
        trust = platformTrust()
    else:
        with open(tls.cafile, "rb") as pem:
            found = _PEM_CERTIFICATE.findall(pem.read())
        trust = trustRootFromCertificates([Certificate.loadPEM(ca) for ca in found])
    return optionsForClientTLS(
        tls.server_hostname,
        trustRoot=trust,
        # optionsForClientTLS takes no minimum version of its own; its docstring asks to use
        # extraCertificateOptions only when you must, and TLS 1.3 only is such a case.
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_3},
    )


class TlsLayer(TLSMemoryBIOProtocol):
    """Twisted's TLS layer, telling the protocol above two things that the stock one keeps
    to itself (``twisted/protocols/tls.py``):

    - That the peer's close_notify ended reading. The layer answers it at once with its own
      and closes the TCP connection (``_flushReceiveBIO``: ``ZeroReturnError``, then
      ``_shutdownTLS``); the protocol above hears of it in ``connectionLost`` only. Here a
      protocol that provides ``IHalfCloseableProtocol`` gets ``readConnectionLost()`` then,
      as it does at a TCP FIN.
    - Whether the TCP connection under it ended with a FIN and no close_notify before it:
      that truncation and a reset both reach ``connectionLost`` as ``ConnectionLost``
      (``_tlsShutdownFinished`` turns OpenSSL's "unexpected eof" into ``CONNECTION_LOST``);
      :attr:`truncated` says which.

    It is ``TLSMemoryBIOProtocol``, not the ``BufferingTLSTransport`` subclass that
    ``TLSMemoryBIOFactory`` builds by default: that one holds writes until the next reactor
    turn (``_AggregateSmallWrites``, up to 64,000 bytes), and if a close_notify came in the
    same read, the layer has shut TLS down by then and drops them (``_write`` returns once
    ``_lostTLSConnection``): an echo server would lose its answers to the last requests.
    """

    #: The TCP connection under TLS ended cleanly (the peer's FIN, or our own close) without
    #: the peer's close_notify: if the protocol above was told ConnectionLost, a truncation.
    truncated = False
    _read_ended = False

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if cast(TlsFactory, self.factory).check_errors and self.transport is not None:
            # On uvloop this read may be the reactor's last on this socket, and a reset
            # behind it never read (stops_reading_at_an_error): under TLS the protocol above
            # may not even hear of the bytes (a handshake's), so ask the socket here.
            handle = cast(socket.socket, cast(ISystemHandle, self.transport).getHandle())
            failed = handle.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if failed:
                cast(ITCPTransport, self.transport).abortConnection()
                return
        if self._read_ended or not _close_notify_received(self.getHandle()):
            return
        self._read_ended = True
        above = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if above is not None:
            above.readConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Before the layer forgets its OpenSSL connection, and the reason below it.
        ended_clean = reason.check(error.ConnectionDone) is not None
        self.truncated = ended_clean and not _close_notify_received(self.getHandle())
        super().connectionLost(reason)


def _close_notify_received(connection: SSL.Connection | None) -> bool:
    return connection is not None and bool(connection.get_shutdown() & SSL.RECEIVED_SHUTDOWN)


class TlsFactory(TLSMemoryBIOFactory):
    """A ``TLSMemoryBIOFactory`` that wraps each protocol in a :class:`TlsLayer`. Pass the
    reactor as its ``clock``: the default is the global reactor, which we never import.
    ``check_errors``: on a reactor that stops reading a socket at its first error, each
    layer asks its socket for one after every read."""

    protocol = TlsLayer
    check_errors = False


class TlsFailed(Exception):
    """TLS failed; the message says why in the words of every other implementation (OpenSSL's,
    as the standard library's ``ssl`` gives them to ``common.results.error_text``)."""


def tls_failure(reason: Failure, transport: object, server_hostname: str) -> TlsFailed | None:
    """What ``reason``, the end of a client's connection through a :class:`TlsLayer`, says
    about TLS: an alert or error of the handshake, a certificate that did not verify, the
    sink's FIN without close_notify; None if TLS did not fail."""
    if not isinstance(transport, TlsLayer):
        return None
    if reason.check(error.ConnectionLost) and transport.truncated:
        return TlsFailed("TLS: unexpected eof while reading")  # ssl.SSLEOFError's reason
    if reason.check(VerificationError):
        # Twisted's verify callback checks the name with service_identity, then fails the
        # connection with its VerificationError (_sslverify.py, _verifyCB); ssl says:
        what = "IP address" if _is_address(server_hostname) else "Hostname"
        return TlsFailed(
            f"TLS: certificate verify failed: {what} mismatch, "
            f"certificate is not valid for '{server_hostname}'."
        )
    if not isinstance(reason.value, SSL.Error):
        return None
    why = _openssl_reason(reason.value)
    if why == "certificate verify failed" and (detail := _verify_reason(transport.getHandle())):
        why += f": {detail}"
    return TlsFailed(f"TLS: {why}")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _openssl_reason(exc: SSL.Error) -> str:
    """The reason of the last error in OpenSSL's queue: "wrong version number", "tlsv1
    alert unknown ca", "certificate verify failed" (the stdlib's words, lower case)."""
    queue = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return str(queue[-1][2]) if queue else str(exc)


def _verify_reason(connection: SSL.Connection | None) -> str | None:
    """Why the server's certificate did not verify, as OpenSSL says it ("certificate has
    expired", "unable to get local issuer certificate").

    pyOpenSSL has no ``SSL_get_verify_result``, and the handshake's error says only
    "certificate verify failed": verify the chain the server sent once more, against the
    same trust store, with pyOpenSSL's public ``X509StoreContext``, whose error carries
    OpenSSL's own message (``X509_verify_cert_error_string``)."""
    chain = connection.get_peer_cert_chain() if connection is not None else None
    store = connection.get_context().get_cert_store() if connection is not None else None
    if not chain or store is None:
        return None
    try:
        crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
    except crypto.X509StoreContextError as exc:
        return str(exc)
    return None  # it verifies now: it came into force, or the clock moved, in between
