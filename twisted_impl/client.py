"""Large-payload client on Twisted: the protocol is its own push producer, registered on
the transport; the transport pauses it when its buffer passes ``bufferSize`` and resumes it
when the buffer is empty. Nothing is poured into ``transport.write()`` unasked. After the last
chunk, ``loseWriteConnection()`` half-closes, and the sink's own close is the receipt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

from twisted.internet import defer, error
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..common.accounting import SendAccount
from ..common.burst import Burst
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, error_text
from ..edge import standalone
from . import loops
from .ticker import start_ticker

__all__ = ["PayloadProtocol", "_failure_text", "main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


@implementer(IPushProducer)
class PayloadProtocol(Protocol):
    """Writes a payload whenever the transport is not paused, half-closes, and waits at most
    ``close_timeout`` seconds for the sink to close in turn."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        account: SendAccount,
        progress: Progress,
        clock: IReactorTime,
        close_timeout: float,
    ) -> None:
        self._chunks = chunks
        self._account = account
        self._progress = progress
        self._clock = clock
        self._close_timeout = close_timeout
        self._paused = False
        self._finished = False
        self._give_up: IDelayedCall | None = None
        self._failure: Exception | None = None  # why we aborted, if we did
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self._transport = cast(ITCPTransport, self.transport)
        self._consumer = cast(IConsumer, self.transport)  # every Twisted transport is one
        self._consumer.registerProducer(self, True)  # True: a push (streaming) producer
        # A push producer must start itself: the transport only pauses and resumes it.
        self.resumeProducing()

    def pauseProducing(self) -> None:
        # Called from inside write() once the transport holds more than bufferSize (64 KiB).
        self._paused = True

    def resumeProducing(self) -> None:
        # Called once the reactor has sent everything the transport held (SEND_LIMIT,
        # 128 KiB, per writable event).
        self._paused = False
        burst = Burst()
        while not self._paused and not self._finished:
            try:
                chunk = next(self._chunks, None)
            except PayloadError as exc:  # the file changed under us: say so, not "reset"
                self._abort(exc)
                return
            if chunk is None:
                self._finished = True
                self._consumer.unregisterProducer()
                self._transport.loseWriteConnection()  # half-close once the buffer is sent
                self._give_up = self._clock.callLater(self._close_timeout, self._abort_late)
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
        self._account.buffered = _buffered(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._give_up is not None and self._give_up.active():
            self._give_up.cancel()
        if self._failure is not None:
            self._account.buffered = max(self._account.buffered, _buffered(self.transport))
            self.done.errback(self._failure)
        elif reason.check(error.ConnectionDone) and self._finished:
            self._account.end(time.monotonic())
            self.done.callback(None)  # the sink closed after reading our EOF
        elif reason.check(error.ConnectionDone):
            self.done.errback(BrokenPipeError("closed by peer before the payload was sent"))
        else:
            self._account.buffered = max(self._account.buffered, _buffered(self.transport))
            self.done.errback(reason)

    def _resume_if_not_paused(self) -> None:
        if not self._paused and not self._finished and self.transport is not None:
            self.resumeProducing()

    def _abort_late(self) -> None:
        self._abort(CloseTimeout(self._close_timeout))

    def _abort(self, failure: Exception) -> None:
        self._failure = failure
        self._transport.abortConnection()  # connectionLost() follows


def _buffered(transport: object) -> int:
    """Bytes a Twisted transport holds but has not sent. Twisted has no public call for this:
    these are FileDescriptor's buffers (twisted/internet/abstract.py)."""
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


async def send_one(
    reactor: ReactorBase, options: SendOptions, account: SendAccount, progress: Progress
) -> None:
    """Stream the payload over one connection through a :class:`PayloadProtocol`."""
    chunks = options.payload.chunks(options.chunk_size)
    endpoint = HostnameEndpoint(reactor, options.host, options.port)
    protocol = PayloadProtocol(chunks, account, progress, reactor, options.close_timeout)
    account.connecting(time.monotonic())
    await connectProtocol(endpoint, protocol)
    try:
        await protocol.done
    except BaseException:
        account.buffered = max(account.buffered, _buffered(protocol.transport))
        cast(ITCPTransport, protocol.transport).abortConnection()
        raise


def _failure_text(failure: Failure) -> str:
    """Return the same short message for a Twisted failure as the other clients give."""
    if failure.check(PayloadError, CloseTimeout):
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

    async def worker() -> None:
        for account in pending:
            await send_one(reactor, options, account, progress)

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
    return SendResult.from_accounts(accounts, delay.stats())


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
