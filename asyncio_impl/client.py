"""Large-payload client on asyncio streams: ``writer.write(chunk)``, then
``await writer.drain()``, for every chunk; then ``write_eof()``, and the sink's own close
(read as EOF) before ``close()`` and ``await wait_closed()``.
"""

from __future__ import annotations

import asyncio
import time

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
    """Stream the payload over one connection, waiting whenever the transport is full."""
    account.connecting(time.monotonic())
    reader, writer = await asyncio.open_connection(options.host, options.port)
    burst = Burst()
    try:
        for chunk in options.payload.chunks(options.chunk_size):
            writer.write(chunk)
            account.feed(chunk, time.monotonic())
            progress(len(chunk))
            # Waits only while the transport holds more than its high-water mark (64 KiB);
            # below it, drain() returns at once without yielding to the loop.
            await writer.drain()
            if burst.add(len(chunk)):
                # So when the kernel keeps taking every chunk inline, nothing ever yields:
                # ticks came 8 ms late (22 ms on uvloop). Yield once per burst.
                await asyncio.sleep(0)
        writer.write_eof()  # half-close, once the transport has sent what it holds
        # The sink closes only after reading our EOF: its close is the receipt.
        try:
            await asyncio.wait_for(_until_eof(reader), options.close_timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
            raise CloseTimeout(options.close_timeout) from None
        writer.close()
        await writer.wait_closed()
        account.end(time.monotonic())
    except BaseException:
        account.buffered = writer.transport.get_write_buffer_size()
        writer.transport.abort()
        raise


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

    async def worker() -> None:
        for account in pending:
            await send_one(options, account, progress)

    tasks = [asyncio.ensure_future(worker()) for _ in range(options.at_once)]
    try:
        interrupted = await loops.wait_or_signal(asyncio.gather(*tasks), signals)
    except (OSError, PayloadError) as exc:
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
