"""Large-payload client on Tornado: ``TCPClient().connect()``, then ``await stream.write(chunk)``
for every chunk, then a half-close and the sink's own close, then ``close()``.

The write future resolves when that chunk has reached the kernel: awaiting it is the flow
control that Tornado's maintainers recommend (tornado issue 1939), since
``max_write_buffer_size`` is unlimited by default.
"""

from __future__ import annotations

import asyncio
import socket
import time

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

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

__all__ = ["main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection, one awaited write at a time."""
    account.connecting(time.monotonic())
    stream = await TCPClient().connect(options.host, options.port)
    burst = Burst()
    try:
        for chunk in options.payload.chunks(options.chunk_size):
            # write() sends inline until EAGAIN; the future resolves once the kernel has it.
            written = stream.write(chunk)
            if not written.done():
                # Shielded: cancelling us (on a signal) must not cancel Tornado's own
                # future, whose callback would log the CancelledError; close() fails it.
                await asyncio.shield(written)
            account.feed(chunk, time.monotonic())  # counted once the kernel took it
            progress(len(chunk))
            if burst.add(len(chunk)):
                # When the kernel took the chunk inline, write() returned a future already
                # resolved, and awaiting it did not yield to the IOLoop: a fast reader would
                # let us starve the loop (226 ms late ticks, measured). Yield once per
                # burst, as Tornado's gen.moment does.
                await asyncio.sleep(0)
        # IOStream has no half-close: reach for its socket. Every write future resolved, so
        # the kernel has every byte and the shutdown goes out after them.
        if stream.socket is None:  # a reset closed the stream after its last write
            raise stream.error if stream.error is not None else StreamClosedError()
        stream.socket.shutdown(socket.SHUT_WR)
        # The sink closes only after reading our EOF: its close is the receipt.
        try:
            await asyncio.wait_for(stream.read_until_close(), options.close_timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
            raise CloseTimeout(options.close_timeout) from None
        if stream.error is not None:  # read_until_close() ends on a reset too: it is here
            raise stream.error
        account.end(time.monotonic())
    finally:
        stream.close()  # on failure: drop what is buffered


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
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    pending = iter(accounts)  # each worker takes the next transfer when it is done with one

    async def worker() -> None:
        for account in pending:
            await send_one(options, account, progress)

    tasks = [asyncio.ensure_future(worker()) for _ in range(options.at_once)]
    try:
        interrupted = await loops.wait_or_signal(asyncio.gather(*tasks), signals)
    except (OSError, StreamClosedError, PayloadError) as exc:
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
    return SendResult.from_accounts(accounts, delay.stats())


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(send_all(options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(lambda options: asyncio.run(main(options)))
