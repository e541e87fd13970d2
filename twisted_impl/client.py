"""Large-payload client on Twisted: the protocol is its own push producer, registered on
the transport; the transport pauses it when its buffer passes ``bufferSize`` and resumes it
when the buffer is empty. Nothing is poured into ``transport.write()`` unasked. After the last
chunk, ``loseWriteConnection()`` half-closes, and the sink's own close is the receipt.

In echo mode the protocol sends requests instead, each read back whole before the next
(closed loop) or one per ``reactor.callLater`` on the rate's schedule (open loop). Over TLS
the same protocols run under Twisted's TLS layer (``loops.py``), where the half-close is
``loseConnection()``: close_notify, answered by the sink's own, the receipt. A
``TimeoutMixin`` watchdog on the reactor fails a connection that makes no progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import cast

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ISystemHandle,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.accounting import SendAccount
from ..common.burst import Burst
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import STALL_TIMEOUT, ClientTls, Echo, SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, StallTimeout, error_text
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = [
    "EchoProtocol",
    "PayloadProtocol",
    "TransferProtocol",
    "_failure_text",
    "main",
    "send",
    "send_all",
    "send_one",
]

# --- connection -------------------------------------------------------------------------


@implementer(IHandshakeListener)
class TransferProtocol(TimeoutMixin, Protocol):
    """What every connection of ours does around what it sends: a watchdog that fails it
    after ``stall_timeout`` seconds without progress, the half-close after the last byte
    and a wait of at most ``close_timeout`` seconds for the peer to close in turn (the
    receipt), and the transfer's end in :attr:`done`."""

    def __init__(
        self,
        account: SendAccount,
        progress: Progress,
        clock: IReactorTime,
        close_timeout: float,
        stall_timeout: float,
        tls: ClientTls | None,
    ) -> None:
        self._account = account
        self._progress = progress
        self._clock = clock
        self._close_timeout = close_timeout
        self._stall_timeout = stall_timeout
        self._tls = tls
        self._secured = False  # TLS: the handshake is done
        self._finished = False  # the last byte is written (and answered): half-close
        self._closing = False  # half-closed: waiting for the receipt
        self._give_up: IDelayedCall | None = None
        self._failure: Exception | None = None  # why we aborted, if we did
        self.done: Deferred[None] = Deferred()

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        # TimeoutMixin's timer: on our reactor (its default imports the global one).
        return self._clock.callLater(period, func)

    def connectionMade(self) -> None:
        self._transport = cast(ITCPTransport, self.transport)

    def handshakeCompleted(self) -> None:
        # TLS only: the layer's handle is its pyOpenSSL Connection.
        tls = cast(SSL.Connection, cast(ISystemHandle, self.transport).getHandle())
        self._account.secured(tls.get_protocol_version_name(), tls.get_cipher_name())
        self._secured = True
        if self._finished and not self._closing:
            self._half_close()

    def timeoutConnection(self) -> None:
        # TimeoutMixin: no progress for stall_timeout seconds.
        self._abort(StallTimeout(self._stall_timeout))

    def _finish(self) -> None:
        """The last byte is written (and, in echo mode, answered): half-close."""
        self._finished = True
        if self._tls is None or self._secured:
            self._half_close()
        # Over TLS, not before the handshake is done: loseConnection() would abort the
        # connection instead (protocols/tls.py, loseConnection: OpenSSL cannot shut down a
        # handshake in progress). handshakeCompleted() half-closes then.

    def _half_close(self) -> None:
        self._closing = True
        self.setTimeout(None)  # from now on, close_timeout
        if self._tls is None:
            self._transport.loseWriteConnection()  # a FIN, once the buffer is sent
        else:
            # Over TLS the half-close is loseConnection(): close_notify, once the buffer is
            # sent, and the layer goes on reading until the sink's close_notify, then closes
            # the TCP connection (protocols/tls.py: loseConnection and _shutdownTLS;
            # _flushReceiveBIO on ZeroReturnError). loseWriteConnection() is not the TLS
            # layer's: ProtocolWrapper.__getattr__ hands it to TCP, a FIN with no
            # close_notify, which the sink must take for a truncation.
            self._transport.loseConnection()
        self._give_up = self._clock.callLater(self._close_timeout, self._abort_late)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        if self._give_up is not None and self._give_up.active():
            self._give_up.cancel()
        if self._failure is not None:
            self._account.buffered = max(self._account.buffered, self.unsent())
            self.done.errback(self._failure)
        elif reason.check(error.ConnectionDone) and self._closing:
            # The sink closed after reading our EOF: over TLS, after its close_notify (the
            # layer reports ConnectionDone only after one, protocols/tls.py, ZeroReturnError).
            self._account.end(time.monotonic())
            self.done.callback(None)
        elif reason.check(error.ConnectionDone):
            self.done.errback(BrokenPipeError("closed by peer before the payload was sent"))
        else:
            self._account.buffered = max(self._account.buffered, self.unsent())
            name = self._tls.server_hostname if self._tls is not None else ""
            tls = loops.tls_failure(reason, self.transport, name)
            self.done.errback(reason if tls is None else Failure(tls))

    def unsent(self) -> int:
        """Bytes we wrote that never left Twisted's buffers: all of them over TLS before the
        handshake (the layer holds them until it is done), else the transport's."""
        if self._tls is not None and not self._secured:
            return self._account.bytes
        return _buffered(self.transport)

    def _abort_late(self) -> None:
        self._abort(CloseTimeout(self._close_timeout))

    def _abort(self, failure: Exception) -> None:
        self._failure = failure
        self._transport.abortConnection()  # connectionLost() follows


@implementer(IPushProducer)
class PayloadProtocol(TransferProtocol):
    """Writes a payload whenever the transport is not paused, half-closes, and waits at most
    ``close_timeout`` seconds for the sink to close in turn."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        account: SendAccount,
        progress: Progress,
        clock: IReactorTime,
        close_timeout: float,
        stall_timeout: float = STALL_TIMEOUT,
        tls: ClientTls | None = None,
    ) -> None:
        super().__init__(account, progress, clock, close_timeout, stall_timeout, tls)
        self._chunks = chunks
        self._paused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._consumer = cast(IConsumer, self.transport)  # every Twisted transport is one
        self._consumer.registerProducer(self, True)  # True: a push (streaming) producer
        # No progress (the transport never resumes us: the kernel took nothing) for this
        # long fails the transfer. Over TLS it covers the handshake too: our first write
        # waits in the layer until it is done, and the layer pauses us meanwhile.
        self.setTimeout(self._stall_timeout)
        # A push producer must start itself: the transport only pauses and resumes it.
        self.resumeProducing()

    def pauseProducing(self) -> None:
        # Called from inside write() once the transport holds more than bufferSize (64 KiB).
        self._paused = True

    def resumeProducing(self) -> None:
        # Called once the reactor has sent everything the transport held (SEND_LIMIT,
        # 128 KiB, per writable event): the kernel took it, which is progress.
        self._paused = False
        self.resetTimeout()
        burst = Burst()
        while not self._paused and not self._finished:
            try:
                chunk = next(self._chunks, None)
            except PayloadError as exc:  # the file changed under us: say so, not "reset"
                self._abort(exc)
                return
            if chunk is None:
                self._consumer.unregisterProducer()  # loseWriteConnection() waits for it
                self._finish()
                return
            self._transport.write(chunk)  # only appends to a list: the reactor sends later
            self._account.feed(chunk, time.monotonic())
            self._progress(len(chunk))
            if burst.add(len(chunk)):
                # Tiny writes never fill the buffer that would pause us: yield to the
                # reactor now and then, and carry on in a later turn.
                self._clock.callLater(0, self._resume_if_not_paused)
                return

    def stopProducing(self) -> None:
        # The connection is going away; note what never left the transport's buffers.
        self._account.buffered = self.unsent()

    def _resume_if_not_paused(self) -> None:
        if not self._paused and not self._finished and self.transport is not None:
            self.resumeProducing()


class EchoProtocol(TransferProtocol):
    """Sends requests and checks every answer: the next once the last is back whole
    (closed loop), or each when the schedule says (open loop, ``echo.rate`` a second)
    whatever the answers do; then half-closes and waits for the server's close."""

    def __init__(
        self,
        echo: Echo,
        messages: Iterator[bytes],
        account: SendAccount,
        progress: Progress,
        clock: IReactorTime,
        close_timeout: float,
        stall_timeout: float = STALL_TIMEOUT,
        tls: ClientTls | None = None,
    ) -> None:
        super().__init__(account, progress, clock, close_timeout, stall_timeout, tls)
        self._echo = echo
        self._messages = messages
        self._next: IDelayedCall | None = None  # the open loop's next request
        self.requests: Requests  # from connectionMade: the schedule starts once we can send

    def connectionMade(self) -> None:
        super().connectionMade()
        now = time.monotonic()
        self.requests = Requests(self._echo, self._messages, start=now)
        if self._echo.rate is None:
            self._send(now)
            self._finish_if_done()
        else:
            self._send_due()

    def dataReceived(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            self.requests.answered(data, now)
        except EchoMismatch as exc:
            self._abort(exc)
            return
        if self._echo.rate is None and not self.requests.outstanding:
            self._send(now)  # closed loop: the next request once this one is back
        # Answer bytes came, progress: count stall_timeout again while any is awaited.
        self.setTimeout(self._stall_timeout if self.requests.outstanding else None)
        self._finish_if_done()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        super().connectionLost(reason)

    def _send(self, due: float) -> int:
        """Send the next request, due at ``due``; return its size (0: none is left)."""
        message = self.requests.next(due)
        if message is None:
            return 0
        self._transport.write(message)  # only appends to a list: the reactor sends later
        self._account.feed(message, time.monotonic())
        self._progress(len(message))
        if self.timeOut is None:
            # Now an answer is awaited: no byte of one for stall_timeout fails the transfer
            # (only answers reset it, not more requests sent meanwhile).
            self.setTimeout(self._stall_timeout)
        return len(message)

    def _send_due(self) -> None:
        """Open loop: send every request whose time has come, then wait for the next's."""
        self._next = None
        now = time.monotonic()
        burst = Burst()
        while not self.requests.all_sent and self.requests.due() <= now:
            # Each timed from when it was due, not from now: a late send is latency too.
            if burst.add(self._send(self.requests.due())):
                break  # a backlog: let the reactor read answers before sending more
        if not self.requests.all_sent:
            delay = max(0.0, self.requests.due() - time.monotonic())
            self._next = self._clock.callLater(delay, self._send_due)
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self.requests.done and not self._finished:
            self._finish()


def _buffered(transport: object) -> int:
    """Bytes a Twisted transport holds but has not sent. Twisted has no public call for this:
    these are FileDescriptor's buffers (twisted/internet/abstract.py). Over TLS, once the
    handshake is done, the layer encrypts each write at once and these are the TCP
    transport's (ProtocolWrapper.__getattr__): ciphertext, 22 bytes more per 16 KiB record
    than we wrote, so what went out is undercounted by as much."""
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


async def send_one(
    reactor: ReactorBase,
    options: SendOptions,
    account: SendAccount,
    progress: Progress,
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> Requests | None:
    """Stream the payload over one connection through a :class:`PayloadProtocol`, or send
    the echo requests through an :class:`EchoProtocol` and return them; over TLS with
    ``tls`` (made from ``options.tls`` if not given)."""
    protocol: TransferProtocol
    if options.echo is None:
        chunks = options.payload.chunks(options.chunk_size)
        protocol = PayloadProtocol(
            chunks, account, progress, reactor, options.close_timeout, options.stall_timeout,
            options.tls,
        )  # fmt: skip
    else:
        messages = options.payload.messages(options.echo.message_size)
        protocol = EchoProtocol(
            options.echo, messages, account, progress, reactor, options.close_timeout,
            options.stall_timeout, options.tls,
        )  # fmt: skip
    # A connect that does not complete within stall_timeout fails too (TimeoutError).
    endpoint = HostnameEndpoint(reactor, options.host, options.port, timeout=options.stall_timeout)
    factory: IProtocolFactory = Factory.forProtocol(lambda: protocol)
    if options.tls is not None:
        # What wrapClientTLS does (internet/endpoints.py), building loops.TlsLayer.
        tls = tls if tls is not None else loops.client_tls(options.tls)
        factory = loops.TlsFactory(tls, True, factory, reactor)
    account.connecting(time.monotonic())
    try:
        await endpoint.connect(factory)
    except error.TimeoutError:
        raise StallTimeout(options.stall_timeout) from None
    try:
        await protocol.done
    except BaseException:
        account.buffered = max(account.buffered, protocol.unsent())
        cast(ITCPTransport, protocol.transport).abortConnection()
        raise
    return protocol.requests if isinstance(protocol, EchoProtocol) else None


def _failure_text(failure: Failure) -> str:
    """Return the same short message for a Twisted failure as the other clients give."""
    if failure.check(PayloadError, CloseTimeout, StallTimeout, EchoMismatch, loops.TlsFailed):
        return str(failure.value)
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.ConnectionLost):
        return "connection reset by peer"
    if failure.check(error.DNSLookupError):
        return "cannot resolve host"
    if failure.check(error.TimeoutError, error.TCPTimedOutError):
        return "timed out"
    value = failure.value
    if isinstance(value, error.ConnectError) and isinstance(value.osError, OSError):
        return error_text(value.osError)
    return error_text(value) if value is not None else "failed"


# --- client -----------------------------------------------------------------------------


# Twisted's coding standard: the reactor is passed in (first), never imported.
async def send_all(reactor: ReactorBase, options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, on this reactor,
    with the ticker beside them; on SIGINT or SIGTERM stop them, saying how many bytes went
    out."""
    delay = LoopDelay()
    stop_ticker = start_ticker(reactor, delay)
    signals = loops.Signals(reactor)
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    pending = iter(accounts)  # each worker takes the next transfer when it is done with one
    answered: list[Requests] = []  # echo mode: each connection's requests, answered
    # One set of TLS options for every connection: it holds the one SSL context they share.
    tls = loops.client_tls(options.tls) if options.tls is not None else None

    async def worker() -> None:
        for account in pending:
            requests = await send_one(reactor, options, account, progress, tls)
            if requests is not None:
                answered.append(requests)

    transfers = [Deferred.fromCoroutine(worker()) for _ in range(options.at_once)]
    try:
        all_sent = defer.gatherResults(transfers, consumeErrors=True)
        interrupted = await loops.wait_or_signal(all_sent, signals)
    except defer.FirstError as exc:
        for transfer in transfers:
            transfer.cancel()
        await defer.DeferredList(transfers, consumeErrors=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(_failure_text(exc.subFailure), went_out) from None
    finally:
        stop_ticker()
        signals.close()
    if interrupted is not None:
        await defer.DeferredList(transfers, consumeErrors=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed.interrupted(interrupted, went_out)
    return SendResult.from_accounts(accounts, delay.stats(), requests=answered)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the reactor that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(lambda reactor: send_all(reactor, options, progress), options.loop)


async def main(reactor: ReactorBase, options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(reactor, options, lambda count: None)


if __name__ == "__main__":
    # loops.run is task.react that returns instead of exiting, so that a failure is one
    # line, not the traceback react logs.
    standalone.run_client(
        lambda options: loops.run(lambda reactor: main(reactor, options), options.loop),
    )
