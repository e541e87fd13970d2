"""Large-payload client on anyio: ``anyio.connect_tcp``, then ``await send(chunk)`` for
every chunk, which returns once the kernel has taken all of it (on asyncio anyio sets the
transport's high-water mark to 0 and waits for it to drain): that wait is the
backpressure. Then ``send_eof()``, and the sink's own close (``EndOfStream``) is the
receipt.

Echo mode: a writer sends each request while a reader, in the same task group, checks the
answers. TLS: ``connect_tcp(..., ssl_context=...)`` returns a ``TLSStream``; TLS has no
half-close, so ``unwrap()`` (our close_notify, then the sink's) is the EOF and the receipt.
Every wait on the peer (the connect, a send, an answer) ends after ``stall_timeout``
without progress.
"""

from __future__ import annotations

import errno
import functools
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from ..common.accounting import SendAccount
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, StallTimeout, error_text
from ..edge import standalone
from ..edge.kernel import kernel_took
from ..edge.tls import client_context, version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

#: Bytes asked of each receive() for answers (over TLS a call returns one record).
READ_SIZE = 256 * 1024

# --- connection -------------------------------------------------------------------------


async def send_one(
    options: SendOptions,
    context: ssl.SSLContext | None,
    account: SendAccount,
    progress: Progress,
) -> Requests | None:
    """Stream the payload, or in echo mode send the requests and check their answers, over
    one connection (in its own task), TLS with a ``context``; return the requests."""
    account.connecting(time.monotonic())
    stream, raw_socket = await _connect(options, context, account)
    requests = None
    try:
        if options.echo is None:
            await _send_payload(options, stream, raw_socket, account, progress)
        else:
            messages = options.payload.messages(options.echo.message_size)
            requests = Requests(options.echo, messages, start=time.monotonic())
            await _exchange(options, stream, raw_socket, account, progress, requests)
        await _close(options, stream, requests)
    except BaseException:  # the backend's cancellation too: a signal, a sibling's failure
        # Not aclose(): over TLS it would do the closing handshake, waiting on the peer.
        await anyio.aclose_forcefully(stream)
        raise
    account.end(time.monotonic())
    return requests


async def _connect(
    options: SendOptions, context: ssl.SSLContext | None, account: SendAccount
) -> tuple[ByteStream, socket.socket | None]:
    """Connect, and shake hands over TLS, within ``stall_timeout``; return the stream and,
    over TCP, its socket (whose kernel counts what it took; over TLS the kernel counts
    records and the handshake, not our bytes)."""
    try:
        with anyio.fail_after(options.stall_timeout):
            if context is None:
                stream: ByteStream = await anyio.connect_tcp(options.host, options.port)
            else:
                assert options.tls is not None  # the context was made from it
                # The handshake is connect_tcp's, which closes the socket if it fails.
                # Standard-compatible (anyio's default): unwrap() below waits for the
                # sink's close_notify, and a close without one is an error, not an EOF.
                stream = await anyio.connect_tcp(
                    options.host,
                    options.port,
                    ssl_context=context,
                    tls_hostname=options.tls.server_hostname,
                    tls_standard_compatible=True,
                )
    except TimeoutError:  # fail_after() raises the builtin TimeoutError
        raise StallTimeout(options.stall_timeout) from None
    if isinstance(stream, TLSStream):
        account.secured(*version_and_cipher(stream.extra(TLSAttribute.ssl_object)))
        return stream, None
    # Asked now: once the transport has closed, extra() itself fails (its attribute table
    # calls getpeername() on a socket that is gone).
    try:
        return stream, stream.extra(SocketAttribute.raw_socket)
    except (OSError, AttributeError):  # reset already: the table's getpeername() fails
        await stream.aclose()
        raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer") from None


class _Stall:
    """``stall_timeout`` without progress ends a connection's waits on its peer: a cancel
    scope whose deadline stays that far past the last progress (a chunk the kernel took,
    an answer read), and is off while nothing is awaited (an open loop between requests).

    Cancel scopes are not free at a write's scale: over loopback, 512-byte ``send`` calls
    took 18 µs each bare on asyncio (13 on uvloop, 30 on trio), 2.3 to 3.8 times that
    inside a ``fail_after`` of their own, and 1.4 to 1.6 times with one scope whose
    deadline moved after each (a timer rescheduled on asyncio). So the deadline moves at
    most once per sixteenth of the timeout, and that much further: a wait fails after
    between 1 and 17/16 timeouts without progress, never sooner (medians of 5 runs of
    20,000 writes on 2 shared cores). Times are ``time.monotonic()``'s, which the caller
    has read already (``anyio.current_time()`` asks which backend runs, each call). As
    written, the client spends within 5 % more CPU per 512-byte write than with no stall
    timeout at all, on every backend."""

    SLACK = 1 / 16

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scope = anyio.CancelScope()
        self._offset = loops.clock_offset()  # time.monotonic() less the backend's clock
        self._moved = -math.inf  # when the deadline last moved

    def arm(self, now: float) -> None:
        """A wait on the peer begins at ``now``: if the deadline is off, it starts then."""
        if self.scope.deadline == math.inf:
            self.moved(now)

    def moved(self, now: float) -> None:
        """The peer took or gave bytes at ``now``: the deadline is ``seconds`` past it."""
        if now - self._moved >= self.seconds * self.SLACK:
            self._moved = now
            self.scope.deadline = now - self._offset + self.seconds * (1 + self.SLACK)

    def off(self) -> None:
        """Nothing is awaited from the peer: no deadline until the next wait."""
        self._moved = -math.inf
        self.scope.deadline = math.inf

    def check(self) -> None:
        """Raise :class:`StallTimeout` if the deadline passed and ended the wait."""
        if self.scope.cancelled_caught:
            raise StallTimeout(self.seconds)


async def _send_payload(
    options: SendOptions,
    stream: ByteStream,
    raw_socket: socket.socket | None,
    account: SendAccount,
    progress: Progress,
) -> None:
    """Hand the payload to anyio, a chunk at a time."""
    stall = _Stall(options.stall_timeout)
    sending = 0
    try:
        with stall.scope:
            stall.arm(time.monotonic())
            for chunk in options.payload.chunks(options.chunk_size):
                sending = len(chunk)
                # Parks this task until the kernel has taken all of the chunk. If it fails
                # or is cancelled, it does not say how much of the chunk went out: the
                # kernel does.
                await stream.send(chunk)
                sending = 0
                now = time.monotonic()
                account.feed(chunk, now)
                progress(len(chunk))
                stall.moved(now)
        stall.check()
    except BaseException:  # the backend's cancellation too: a signal, a sibling's failure
        account.unfinished(sending, kernel_took(raw_socket) if raw_socket else None)
        raise


async def _exchange(
    options: SendOptions,
    stream: ByteStream,
    raw_socket: socket.socket | None,
    account: SendAccount,
    progress: Progress,
    requests: Requests,
) -> None:
    """Send every request and check every answer: this writer sends each request when it
    is due while a reader task takes the answers as they come (one task doing both in turn
    would deadlock on a message larger than both directions' socket buffers). Closed loop,
    the writer waits for each answer before the next request; open loop, only for the
    next request's time, and the latency runs from that schedule."""
    rate = requests.echo.rate
    answered = anyio.Event()  # set once every request sent so far is answered
    reading = anyio.CancelScope()
    stall = _Stall(options.stall_timeout)
    failures: list[Exception] = []

    async def read() -> None:
        with reading:
            while not requests.done:
                try:
                    data = await stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    raise ConnectionError(
                        f"the server closed with {requests.outstanding} requests unanswered"
                    ) from None
                now = time.monotonic()
                requests.answered(data, now)  # EchoMismatch on a wrong answer
                stall.moved(now)
                if not requests.outstanding:
                    stall.off()
                    answered.set()

    async def write() -> None:
        nonlocal answered
        sending = 0
        try:
            while not requests.all_sent:
                if rate is None:
                    due = time.monotonic()  # closed loop: due when it can be sent
                else:
                    due = requests.due()
                    # Open loop: on schedule, whatever the answers; on the backend's clock.
                    await anyio.sleep_until(due - loops.clock_offset())
                answered = anyio.Event()
                message = requests.next(due)
                if message is None:  # the payload's --duration is over
                    break
                sending = len(message)
                stall.arm(time.monotonic())
                await stream.send(message)  # as a chunk is sent, in _send_payload
                sending = 0
                now = time.monotonic()
                account.feed(message, now)
                progress(len(message))
                stall.moved(now)
                if rate is None:
                    await answered.wait()
        except BaseException:  # the backend's cancellation too: a stall, a failed read
            account.unfinished(sending, kernel_took(raw_socket) if raw_socket else None)
            raise
        if not requests.outstanding:  # the reader would wait for answers to nothing
            reading.cancel()

    async def run(task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except (OSError, EchoMismatch, anyio.BrokenResourceError) as exc:
            # Kept, not raised: the task group would raise it in an exception group.
            failures.append(exc)
            group.cancel_scope.cancel()

    with stall.scope:
        async with anyio.create_task_group() as group:
            group.start_soon(run, read)
            group.start_soon(run, write)
    stall.check()
    if failures:
        raise failures[0]


async def _close(options: SendOptions, stream: ByteStream, requests: Requests | None) -> None:
    """Half-close after the last byte, and wait ``close_timeout`` for the server's close,
    which it sends only once it has read everything up to our EOF: the receipt."""
    try:
        with anyio.fail_after(options.close_timeout):
            if isinstance(stream, TLSStream):
                # TLSStream.send_eof() raises NotImplementedError (TLS has no half-close):
                # unwrap() sends our close_notify, then reads until the sink's
                # (anyio/streams/tls.py, unwrap). A sink sends its close_notify only once
                # it has read ours, after every byte before it: so the receipt is as over
                # TCP, and its close without one fails here (BrokenResourceError).
                transport, _ = await stream.unwrap()
                await transport.aclose()
                return
            try:
                await stream.send_eof()  # half-close: the kernel sends FIN after our bytes
            except RuntimeError:  # uvloop: a reset closed the transport under anyio
                raise BrokenPipeError(errno.EPIPE, "closed by peer before our EOF") from None
            # The sink closes only after reading our EOF: its close is the receipt.
            while True:
                try:
                    data = await stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    break
                if requests is not None:  # nothing more was asked: EchoMismatch
                    requests.answered(data, time.monotonic())
            await stream.aclose()
    except TimeoutError:  # fail_after() raises the builtin TimeoutError
        raise CloseTimeout(options.close_timeout) from None


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a task each in
    one task group, with the ticker beside them; on SIGINT or SIGTERM stop them, saying how
    many bytes went out."""
    delay = LoopDelay()
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    requests: list[Requests] = []
    failures: list[BaseException] = []
    pending = iter(accounts)
    context = client_context(options.tls) if options.tls is not None else None  # one per run

    async def transfers() -> None:
        async with anyio.create_task_group() as group:

            async def run() -> None:
                for account in pending:  # the next transfer, when done with one
                    try:
                        answered = await send_one(options, context, account, progress)
                    except (
                        OSError,  # StallTimeout and CloseTimeout too, and ssl.SSLError
                        PayloadError,
                        EchoMismatch,
                        anyio.BrokenResourceError,
                    ) as exc:
                        # Kept, not raised: the first failure stops the others, and is the
                        # one reported (the task group would raise them all in a group).
                        failures.append(loops.cause(exc))
                        group.cancel_scope.cancel()
                        return
                    if answered is not None:
                        requests.append(answered)

            for _ in range(options.at_once):
                group.start_soon(run)

    try:
        async with anyio.create_task_group() as ticking:
            stop_ticker = start_ticker(ticking, delay)
            interrupted = await loops.wait_or_signal(transfers, signals)
            stop_ticker()
    finally:
        signals.close()
    went_out = sum(account.handed_to_kernel for account in accounts)
    if interrupted is not None:
        raise SendFailed.interrupted(interrupted, went_out)
    if failures:
        raise SendFailed(error_text(failures[0]), went_out)
    return SendResult.from_accounts(accounts, delay.stats(), requests=requests)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the backend that ``options.loop`` names; raise SendFailed if any transfer
    fails."""
    return loops.run(functools.partial(send_all, options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    # loops.run is anyio.run that raises a task group's one failure as itself, not in a group.
    standalone.run_client(
        lambda options: loops.run(functools.partial(main, options), options.loop),
    )
