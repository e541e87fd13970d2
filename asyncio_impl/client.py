"""Large-payload client on asyncio streams: ``writer.write(chunk)``, then
``await writer.drain()``, for every chunk; then ``write_eof()``, and the sink's own close
(read as EOF) before ``close()`` and ``await wait_closed()``. In echo mode each request is
written and its answer read back (closed loop), or requests go out on a schedule while a
second task reads the answers (open loop). Over TLS the half-close is close_notify: see
``_close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections.abc import Awaitable
from typing import TypeVar

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

#: Bytes asked of each read() of answers: more than the StreamReader holds, as server.py's.
READ_SIZE = 1024 * 1024

T = TypeVar("T")

# --- connection -------------------------------------------------------------------------


async def send_one(
    options: SendOptions, account: SendAccount, progress: Progress
) -> Requests | None:
    """Stream the payload over one connection, waiting whenever the transport is full (in
    echo mode, ask its requests and check every answer: return them)."""
    account.connecting(time.monotonic())
    tls = loops.tls_client(options.tls, options.close_timeout)
    # A connect (and a TLS handshake) that does not complete is a stall too.
    opening = asyncio.open_connection(options.host, options.port, **tls)
    reader, writer = await _within(
        options.stall_timeout, opening, StallTimeout(options.stall_timeout)
    )
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is not None:
        account.secured(*version_and_cipher(ssl_object))
    try:
        if options.echo is None:
            await _stream(options, account, progress, writer)
            requests = None
        else:
            requests = await _ask(options, account, progress, reader, writer)
        await _close(options, reader, writer)
        account.end(time.monotonic())
        return requests
    except BaseException:
        account.buffered = loops.held(writer.transport)
        writer.transport.abort()
        # As after close(): wait_closed(). It re-raises what ended the connection, the error
        # being raised here; unread, 3.10 could log it as never retrieved when its wait_for
        # cycles were collected (seen in 2 of 3 runs of a reset).
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        raise


async def _stream(
    options: SendOptions, account: SendAccount, progress: Progress, writer: asyncio.StreamWriter
) -> None:
    burst = Burst()
    high = writer.transport.get_write_buffer_limits()[1]
    for chunk in options.payload.chunks(options.chunk_size):
        writer.write(chunk)
        account.feed(chunk, time.monotonic())
        progress(len(chunk))
        await _drain(writer, high, options.stall_timeout)
        if burst.add(len(chunk)):
            # So when the kernel keeps taking every chunk inline, nothing ever yields:
            # ticks came 8 ms late (22 ms on uvloop). Yield once per burst.
            await asyncio.sleep(0)


async def _drain(writer: asyncio.StreamWriter, high: int, stall_timeout: float) -> None:
    """``await writer.drain()``, failing with StallTimeout if the transport is not below its
    low-water mark within ``stall_timeout`` seconds; ``high`` is its high-water mark (read
    once: 3.10's SSL transport cannot say it once its connection is gone)."""
    if loops.held(writer.transport) < high:
        # drain() waits only while the protocol is paused, and a transport pauses it once
        # its buffer reaches the high-water mark (set_write_buffer_limits' documented
        # contract: the selector transport pauses above it, the SSL one at it). Below, it
        # returns at once: no timeout to set, and none is, since one costs a timer even so
        # (11 us a call with timeout(), 30 with 3.11's wait_for; 0.1 for drain(); measured).
        await writer.drain()
        return
    await _within(stall_timeout, writer.drain(), StallTimeout(stall_timeout))


async def _ask(
    options: SendOptions,
    account: SendAccount,
    progress: Progress,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> Requests:
    """Echo: send every request and read its answer back, checked and timed."""
    assert options.echo is not None
    echo, stall = options.echo, options.stall_timeout
    chunks = options.payload.messages(echo.message_size)
    requests = Requests(echo, chunks, start=time.monotonic())

    def ask(due: float) -> bool:
        message = requests.next(due)
        if message is None:
            return False
        writer.write(message)
        account.feed(message, time.monotonic())
        progress(len(message))
        return True

    if echo.rate is None:  # closed loop: each answer whole before the next request
        while ask(time.monotonic()):
            # No drain(): the transport sends the request while we read its answer.
            while requests.outstanding:
                answer = reader.read(READ_SIZE)
                requests.answered(await _answer(answer, stall, stall), time.monotonic())
        return requests

    async def ask_on_schedule() -> None:
        burst = Burst()
        high = writer.transport.get_write_buffer_limits()[1]
        while not requests.all_sent:
            due = requests.due()
            early = due - time.monotonic()
            if early > 0:
                await asyncio.sleep(early)  # on the loop's timer
            if not ask(due):
                break
            await _drain(writer, high, stall)  # whatever the answers do, not past full buffers
            if burst.add(echo.message_size):  # behind schedule, every request is due at once
                await asyncio.sleep(0)

    async def read_answers() -> None:
        while not requests.done:
            # With nothing outstanding, no answer can be late before the next request.
            idle = 0.0 if requests.outstanding else max(0.0, requests.due() - time.monotonic())
            answer = reader.read(READ_SIZE)
            requests.answered(await _answer(answer, idle + stall, stall), time.monotonic())

    tasks = {asyncio.ensure_future(ask_on_schedule()), asyncio.ensure_future(read_answers())}
    try:
        running = tasks
        # Until both end, or one fails; or the payload ended (--duration) with every
        # request answered, which leaves the reader waiting for nothing.
        while running and not requests.done:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        # Ended before the reader is read again (_close): a cancelled read() still waiting
        # makes the StreamReader refuse the next ("already waiting for incoming data"),
        # which a --duration that ends between two requests did.
        await asyncio.wait(tasks)
    return requests


async def _answer(read: Awaitable[bytes], timeout: float, stall_timeout: float) -> bytes:
    """The next answer bytes, within ``timeout`` seconds (a stall of ``stall_timeout``)."""
    data = await _within(timeout, read, StallTimeout(stall_timeout))
    if not data:
        raise BrokenPipeError("closed by peer before every answer came")
    return data


async def _close(
    options: SendOptions, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Half-close, and wait for the sink's close: the receipt."""
    if writer.can_write_eof():
        writer.write_eof()  # half-close, once the transport has sent what it holds
        # The sink closes only after reading our EOF: its close is the receipt.
        await _within(
            options.close_timeout, _until_eof(reader), CloseTimeout(options.close_timeout)
        )
        writer.close()
        await writer.wait_closed()
        return
    # TLS: asyncio has no half-close (can_write_eof() is False). close() sends our
    # close_notify after what the transport holds, then waits for the sink's, which it
    # sends once it read everything up to ours; asyncio closes the socket at it, and
    # wait_closed() returns. A sink that closes without it may not have read everything:
    # the TLS layer tells (loops.close_notify_received), asyncio's callbacks do not.
    ssl_object = writer.get_extra_info("ssl_object")
    writer.close()
    await _within(options.close_timeout, writer.wait_closed(), CloseTimeout(options.close_timeout))
    if not loops.close_notify_received(ssl_object):
        # What the ssl module raises at a FIN without close_notify (suppress_ragged_eofs).
        raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")


async def _within(seconds: float, work: Awaitable[T], failure: TimeoutError) -> T:
    """``work``, or ``failure`` raised if it takes longer than ``seconds``."""
    try:
        if sys.version_info >= (3, 11):
            # Not wait_for(): on 3.11 it runs the work in a task of its own, a loop turn
            # more for each answer read (1 KiB echoes, median p50 of 5 runs: 0.093 ms,
            # against 0.084 with timeout() and 0.069 with no timeout; measured). 3.12
            # rebuilt wait_for() on timeout().
            async with asyncio.timeout(seconds):
                return await work
        return await asyncio.wait_for(work, seconds)
    # The builtin TimeoutError from 3.11 (not on 3.10). From a TLS wait_closed(), it is
    # also asyncio's own 'SSL shutdown timed out': its ssl_shutdown_timeout is ours.
    except asyncio.TimeoutError:
        raise failure from None


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read until the peer closes; a sink says nothing, so whatever comes is dropped."""
    while await reader.read(64 * 1024):
        pass


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, on this loop,
    with the ticker beside them; on SIGINT or SIGTERM stop them, saying how many bytes went
    out."""
    loop = asyncio.get_running_loop()
    delay = LoopDelay()
    stop_ticker = start_ticker(loop, delay)
    signals = loops.Signals(loop)
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    pending = iter(accounts)  # each worker takes the next transfer when it is done with one
    asked: list[Requests] = []  # echo mode: every connection's requests, answered

    async def worker() -> None:
        for account in pending:
            requests = await send_one(options, account, progress)
            if requests is not None:
                asked.append(requests)

    tasks = [asyncio.ensure_future(worker()) for _ in range(options.at_once)]
    try:
        interrupted = await loops.wait_or_signal(asyncio.gather(*tasks), signals)
    except (OSError, PayloadError, EchoMismatch) as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(error_text(exc), went_out) from None
    finally:
        stop_ticker()
        signals.close()
    if interrupted is not None:
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed.interrupted(interrupted, went_out)
    return SendResult.from_accounts(accounts, delay.stats(), requests=asked)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(send_all(options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(lambda options: asyncio.run(main(options)))
