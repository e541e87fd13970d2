"""Large-payload client on trio: ``trio.open_tcp_stream``, then ``await send_all(chunk)``
for every chunk, which returns once the kernel has taken all of it: that wait is the
backpressure. Then ``send_eof()``, and the sink's own close (``receive_some`` returning
``b""``) is the receipt.

Echo mode: a writer sends each request while a reader, in the same nursery, checks the
answers. TLS: a ``trio.SSLStream`` over the TCP stream; TLS has no half-close, so
``unwrap()`` (our close_notify, then the sink's) is the EOF and the receipt. Every wait on
the peer (the connect, a send, an answer) ends after ``stall_timeout`` without progress.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import Awaitable, Callable

import trio

from ..common.accounting import SendAccount
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, StallTimeout, error_text
from ..edge import standalone
from ..edge.kernel import kernel_took
from ..edge.tls import client_context
from . import loops
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

#: Bytes asked of each receive_some() for answers (over TLS a call returns one record).
READ_SIZE = 256 * 1024

#: A TCP stream, or TLS over one.
Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]

# --- connection -------------------------------------------------------------------------


async def send_one(
    options: SendOptions,
    context: ssl.SSLContext | None,
    account: SendAccount,
    progress: Progress,
) -> Requests | None:
    """Stream the payload, or in echo mode send the requests and check their answers, over
    one connection (in its own task), TLS with a ``context``; return the requests."""
    account.connecting(loops.now())
    stream = await _connect(options, context, account)
    requests = None
    try:
        if options.echo is None:
            await _send_payload(options, stream, account, progress)
        else:
            messages = options.payload.messages(options.echo.message_size)
            requests = Requests(options.echo, messages, start=loops.now())
            await _exchange(options, stream, account, progress, requests)
        await _close(options, stream, requests)
    except BaseException:  # Cancelled too: on a signal or a sibling's failure
        # Not aclose(): over TLS it would send close_notify, which may wait on the peer.
        await trio.aclose_forcefully(stream)
        raise
    account.end(loops.now())
    return requests


async def _connect(
    options: SendOptions, context: ssl.SSLContext | None, account: SendAccount
) -> Stream:
    """Connect, and shake hands over TLS, within ``stall_timeout``."""
    try:
        with trio.fail_after(options.stall_timeout):
            stream = await trio.open_tcp_stream(options.host, options.port)
            if context is None:
                return stream
            assert options.tls is not None  # the context was made from it
            # Not open_ssl_over_tcp_stream(): it checks the certificate against the host
            # it connects to, where --server-name may differ (127.0.0.1, "localhost").
            tls = trio.SSLStream(stream, context, server_hostname=options.tls.server_hostname)
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise StallTimeout(options.stall_timeout) from None
    account.secured(*loops.agreed(tls))
    return tls


class _Stall:
    """``stall_timeout`` without progress ends a connection's waits on its peer: a cancel
    scope whose deadline stays that far past the last progress (a chunk the kernel took,
    an answer read), and is off while nothing is awaited (an open loop between requests).

    Cancel scopes are not free at a write's scale: over loopback, 512-byte ``send_all``
    calls took 18 µs each bare, 37 to 51 µs each inside a ``fail_after`` of their own, and
    24 µs with one scope whose deadline moved after each (trio's deadline heap). So the
    deadline moves at most once per sixteenth of the timeout (19 µs), and that much
    further: a wait fails after between 1 and 17/16 timeouts without progress, never
    sooner (medians of 7 runs of 20,000 writes on 2 shared cores). Times are
    :func:`loops.now`'s, which the caller has read already. As written, the client spends
    within 3 % more CPU per 512-byte write than with no stall timeout at all."""

    SLACK = 1 / 16

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.scope = trio.CancelScope()
        self._offset = loops.now() - trio.current_time()  # now()'s scale less the run's
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
    options: SendOptions, stream: Stream, account: SendAccount, progress: Progress
) -> None:
    """Hand the payload to trio, a chunk at a time."""
    stall = _Stall(options.stall_timeout)
    sending = 0
    try:
        with stall.scope:
            stall.arm(loops.now())
            for chunk in options.payload.chunks(options.chunk_size):
                sending = len(chunk)
                # A checkpoint, then as many send() calls as the kernel needs, parking this
                # task while its buffer is full. If it fails or is cancelled, it does not
                # say how much of the chunk went out: the kernel does.
                await stream.send_all(chunk)
                sending = 0
                now = loops.now()
                account.feed(chunk, now)
                progress(len(chunk))
                stall.moved(now)
        stall.check()
    except BaseException:  # Cancelled too: on a signal or a sibling's failure
        account.unfinished(sending, _kernel_took(stream))
        raise


def _kernel_took(stream: Stream) -> int | None:
    """How many bytes the kernel took from us: over TCP, its count; over TLS, None (it
    counts records and the handshake, not our bytes: only whole chunks count)."""
    return kernel_took(stream.socket) if isinstance(stream, trio.SocketStream) else None


async def _exchange(
    options: SendOptions,
    stream: Stream,
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
    answered = trio.Event()  # set once every request sent so far is answered
    reading = trio.CancelScope()
    stall = _Stall(options.stall_timeout)
    failures: list[Exception] = []

    async def read() -> None:
        with reading:
            while not requests.done:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise ConnectionError(
                        f"the server closed with {requests.outstanding} requests unanswered"
                    )
                now = loops.now()
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
                    due = loops.now()  # closed loop: a request is due when it can be sent
                else:
                    due = requests.due()
                    await loops.sleep_until(due)  # open loop: on schedule, whatever answers
                answered = trio.Event()
                message = requests.next(due)
                if message is None:  # the payload's --duration is over
                    break
                sending = len(message)
                stall.arm(loops.now())
                await stream.send_all(message)  # as a chunk is sent, in _send_payload
                sending = 0
                now = loops.now()
                account.feed(message, now)
                progress(len(message))
                stall.moved(now)
                if rate is None:
                    await answered.wait()
        except BaseException:  # Cancelled too: a stall, the reader's failure, a signal
            account.unfinished(sending, _kernel_took(stream))
            raise
        if not requests.outstanding:  # the reader would wait for answers to nothing
            reading.cancel()

    async def run(task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except (OSError, EchoMismatch, trio.BrokenResourceError) as exc:
            # Kept, not raised: the nursery would raise it in an exception group.
            failures.append(exc)
            nursery.cancel_scope.cancel()

    with stall.scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, read)
            nursery.start_soon(run, write)
    stall.check()
    if failures:
        raise failures[0]


async def _close(options: SendOptions, stream: Stream, requests: Requests | None) -> None:
    """Half-close after the last byte, and wait ``close_timeout`` for the server's close,
    which it sends only once it has read everything up to our EOF: the receipt."""
    try:
        with trio.fail_after(options.close_timeout):
            if isinstance(stream, trio.SSLStream):
                # SSLStream has no send_eof() (TLS has no half-close), and aclose() only
                # sends close_notify: unwrap() sends ours, then reads until the sink's
                # (trio/_ssl.py, unwrap). A sink sends its close_notify only once it has
                # read ours, after every byte before it: so the receipt is as over TCP, and
                # its close without one fails here (BrokenResourceError, SSLEOFError).
                transport, _ = await stream.unwrap()
                await transport.aclose()
                return
            await stream.send_eof()  # half-close: the kernel sends FIN after our bytes
            # The sink closes only after reading our EOF: its close is the receipt.
            while data := await stream.receive_some(READ_SIZE):
                if requests is not None:  # nothing more was asked: EchoMismatch
                    requests.answered(data, loops.now())
            await stream.aclose()
    except trio.TooSlowError:
        raise CloseTimeout(options.close_timeout) from None


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a task each in
    one nursery, with the ticker beside them; on SIGINT or SIGTERM stop them, saying how
    many bytes went out."""
    delay = LoopDelay()
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    requests: list[Requests] = []
    failures: list[BaseException] = []
    pending = iter(accounts)
    context = client_context(options.tls) if options.tls is not None else None  # one per run

    async def transfers() -> None:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                for account in pending:  # the next transfer, when done with one
                    try:
                        answered = await send_one(options, context, account, progress)
                    except (
                        OSError,  # StallTimeout and CloseTimeout too, and ssl.SSLError
                        PayloadError,
                        EchoMismatch,
                        trio.BrokenResourceError,
                    ) as exc:
                        # Kept, not raised: the first failure stops the others, and is the
                        # one reported (trio would raise them all in an exception group).
                        failures.append(loops.cause(exc))
                        nursery.cancel_scope.cancel()
                        return
                    if answered is not None:
                        requests.append(answered)

            for _ in range(options.at_once):
                nursery.start_soon(run)

    try:
        async with trio.open_nursery() as ticking:
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
    """Send under trio; raise SendFailed if any transfer fails."""
    return loops.run(functools.partial(send_all, options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    # loops.run is trio.run that raises a nursery's one failure as itself, not in a group.
    standalone.run_client(
        lambda options: loops.run(functools.partial(main, options), options.loop),
    )
