"""Large-payload client on Tornado: ``TCPClient().connect()``, then ``await stream.write(chunk)``
for every chunk, then a half-close and the sink's own close, then ``close()``. In echo mode,
requests and their answers (``read_into``); over TLS, ``start_tls`` and a close_notify.

The write future resolves when that chunk has reached the kernel: awaiting it is the flow
control that Tornado's maintainers recommend (tornado issue 1939), since
``max_write_buffer_size`` is unlimited by default. Every wait is bounded with
``gen.with_timeout``, which, unlike ``asyncio.wait_for``, never cancels the future it
watches: Tornado's own futures are left to Tornado.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from tornado import gen
from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from ..common.accounting import SendAccount
from ..common.burst import Burst
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, StallTimeout, error_text
from ..edge import standalone
from ..edge.tls import version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

T = TypeVar("T")
#: Bytes per read_into() of an echo client's answers, as the server's.
READ_SIZE = 64 * 1024

# --- connection -------------------------------------------------------------------------


async def send_one(
    options: SendOptions, account: SendAccount, progress: Progress
) -> Requests | None:
    """Stream the payload over one connection, one awaited write at a time (echoing: send
    the requests and read their answers); then our EOF, and the sink's close as the
    receipt. Return the echo requests, answered."""
    account.connecting(time.monotonic())
    stream = await _connect(options)
    try:
        if isinstance(stream, SSLIOStream):
            account.secured(*version_and_cipher(stream.socket))
            # The sink's FIN without its close_notify fails, never reads as the receipt.
            loops.refuse_ragged_eofs(stream.socket)
        requests = None
        if options.echo is None:
            await _stream_payload(options, stream, account, progress)
        else:
            requests = Requests(
                options.echo,
                options.payload.messages(options.echo.message_size),
                start=time.monotonic(),
            )
            await _exchange(options, stream, requests, account, progress)
        # The sink closes only after reading our EOF: its close is the receipt.
        try:
            await asyncio.wait_for(_receipt(stream), options.close_timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
            raise CloseTimeout(options.close_timeout) from None
        if stream.error is not None:  # read_until_close() ends on a reset too: it is here
            raise stream.error
        account.end(time.monotonic())
        return requests
    finally:
        stream.close()  # on failure: drop what is buffered


async def _connect(options: SendOptions) -> IOStream:
    """Connect, and over TLS shake hands, each within the stall timeout."""
    stall = timedelta(seconds=options.stall_timeout)  # with_timeout reads a float as a deadline
    try:
        stream = await TCPClient().connect(options.host, options.port, timeout=stall)
        if options.tls is None:
            return stream
        # TCPClient.connect(ssl_options=) would check the certificate against the host it
        # connects to (tcpclient.py: start_tls(..., server_hostname=host)); ours may name
        # another (--server-name), so take its two steps ourselves.
        handshake = stream.start_tls(
            False,
            ssl_options=loops.client_context(options.tls),
            server_hostname=options.tls.server_hostname,
        )
        try:
            secured: SSLIOStream = await gen.with_timeout(stall, handshake)
        finally:
            handshake.cancel()  # unfinished: closes the SSLIOStream (Tornado 6.6), as connect()
    except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
        raise StallTimeout(options.stall_timeout) from None
    return secured


async def _within(seconds: float, future: Awaitable[T]) -> T:
    """``future``'s result once it resolves, or StallTimeout after ``seconds``: a write
    future resolves once the kernel took the whole of its data, a read once a byte came."""
    if not (isinstance(future, Future) and future.done()):  # done: the kernel took it inline
        try:
            # Our cancellation (a signal) or timeout leaves Tornado's future alone, as
            # asyncio.shield would; it fails later, when we close the stream: quietly.
            await gen.with_timeout(
                timedelta(seconds=seconds), future, quiet_exceptions=StreamClosedError
            )
        except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
            raise StallTimeout(seconds) from None
    return await future  # resolved: no wait


async def _stream_payload(
    options: SendOptions, stream: IOStream, account: SendAccount, progress: Progress
) -> None:
    burst = Burst()
    for chunk in options.payload.chunks(options.chunk_size):
        # write() sends inline until EAGAIN; the future resolves once the kernel has it.
        await _within(options.stall_timeout, stream.write(chunk))
        account.feed(chunk, time.monotonic())  # counted once the kernel took it
        progress(len(chunk))
        if burst.add(len(chunk)):
            # When the kernel took the chunk inline, write() returned a future already
            # resolved, and awaiting it did not yield to the IOLoop: a fast reader would
            # let us starve the loop (226 ms late ticks, measured). Yield once per
            # burst, as Tornado's gen.moment does.
            await asyncio.sleep(0)


async def _exchange(
    options: SendOptions,
    stream: IOStream,
    requests: Requests,
    account: SendAccount,
    progress: Progress,
) -> None:
    """Send every request and read every answer: closed loop, each answered before the
    next goes; open loop, a writer on the schedule beside a reader."""
    if requests.echo.rate is not None:
        await _open_loop(options, stream, requests, account, progress)
        return
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    while (message := requests.next(time.monotonic())) is not None:
        # Not awaited yet: a large message's answer comes back while it is still going
        # out, and waiting for the write before reading would fill both directions'
        # buffers. IOStream keeps what the kernel did not take and sends it as it can.
        written = stream.write(message)
        while requests.outstanding:
            count = await _within(options.stall_timeout, stream.read_into(buffer, partial=True))
            requests.answered(view[:count], time.monotonic())
        await written  # resolved: the server answered every byte, so the kernel took them
        account.feed(message, time.monotonic())
        progress(len(message))


async def _open_loop(
    options: SendOptions,
    stream: IOStream,
    requests: Requests,
    account: SendAccount,
    progress: Progress,
) -> None:
    """Request i goes at its due time whatever the answers do; a reader beside the writer
    times each answer from that schedule."""
    sent = asyncio.Event()  # a request went out, or the writer is done: something to read for
    finished = False

    async def write_on_schedule() -> None:
        nonlocal finished
        try:
            while True:
                due = requests.due()
                while (early := due - time.monotonic()) > 0:  # uvloop's timers are in ms
                    await gen.sleep(early)
                message = requests.next(due)
                if message is None:
                    return
                sent.set()
                await _within(options.stall_timeout, stream.write(message))
                account.feed(message, time.monotonic())
                progress(len(message))
        finally:
            finished = True
            sent.set()

    async def read_answers() -> None:
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        while requests.outstanding or not finished:
            if not requests.outstanding:  # nothing to wait for before the next request
                sent.clear()
                await sent.wait()
                continue
            count = await _within(options.stall_timeout, stream.read_into(buffer, partial=True))
            requests.answered(view[:count], time.monotonic())

    tasks = [asyncio.ensure_future(write_on_schedule()), asyncio.ensure_future(read_answers())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        task.result()  # the first failure, if any


async def _receipt(stream: IOStream) -> None:
    """Send our EOF, and read until the sink's close (over TLS its close_notify), which it
    sends only once it read everything up to ours; a sink says nothing else."""
    await _send_eof(stream)
    await stream.read_until_close()


async def _send_eof(stream: IOStream) -> None:
    """Our EOF, after the last byte: every write future resolved, so the kernel has every
    byte and the EOF goes out after them."""
    if stream.socket is None:  # a reset closed the stream after its last write
        raise stream.error if stream.error is not None else StreamClosedError()
    if not isinstance(stream, SSLIOStream):
        # IOStream has no half-close: reach for its socket.
        stream.socket.shutdown(socket.SHUT_WR)
        return
    # Nor a close_notify: SSL_shutdown sends ours, then wants to read theirs, which
    # read_until_close() will, as its 0 (loops.TlsSocket). The kernel's buffer can be full
    # of our last bytes: IOStream cannot wait for writability on our behalf outside a
    # write, so try again shortly (the wait for the receipt bounds it).
    while True:
        try:
            stream.socket.unwrap()
        except ssl.SSLWantReadError:
            return  # ours is out
        except ssl.SSLWantWriteError:
            await gen.sleep(0.01)
        else:  # theirs had come already: both are done, and read_until_close() says so
            stream.close()
            return


def _stream_error_text(exc: BaseException) -> str:
    """The same short message as the other clients give; a StreamClosedError carries the
    socket error underneath as ``real_error``."""
    if isinstance(exc, StreamClosedError):
        if exc.real_error is not None:
            return error_text(exc.real_error)
        return "connection closed by peer before the payload was sent"
    return error_text(exc)


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, on this IOLoop,
    with the ticker beside them; on SIGINT or SIGTERM stop them, saying how many bytes went
    out."""
    io_loop = IOLoop.current()
    delay = LoopDelay()
    stop_ticker = start_ticker(io_loop, delay)
    signals = loops.Signals(asyncio.get_running_loop())
    loops.quiet_handshake_warnings()  # a failed handshake is our one line, said once
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    pending = iter(accounts)  # each worker takes the next transfer when it is done with one
    answered: list[Requests] = []  # echo: every connection's requests, answered

    async def worker() -> None:
        for account in pending:
            requests = await send_one(options, account, progress)
            if requests is not None:
                answered.append(requests)

    tasks = [asyncio.ensure_future(worker()) for _ in range(options.at_once)]
    try:
        interrupted = await loops.wait_or_signal(asyncio.gather(*tasks), signals)
    except (OSError, StreamClosedError, PayloadError, EchoMismatch) as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(_stream_error_text(exc), went_out) from None
    finally:
        stop_ticker()
        signals.close()
    if interrupted is not None:
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed.interrupted(interrupted, went_out)
    return SendResult.from_accounts(accounts, delay.stats(), requests=answered)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(send_all(options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(lambda options: asyncio.run(main(options)))
