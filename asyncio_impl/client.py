"""Large-payload client on asyncio streams: ``writer.write(chunk)``, then
``await writer.drain()``, for every chunk; then ``close()`` and ``await wait_closed()``.

Siblings: protocol_client.py (asyncio's Protocol API with pause_writing/resume_writing),
twisted_impl/client.py, tornado_impl/client.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from asyncio_impl import loops
from asyncio_impl.ticker import start_ticker
from common.accounting import SendAccount
from common.interface import Progress, SendFailed, SendOptions, SendResult, describe_error
from common.loopdelay import LoopDelay
from common.payload import TALK_SIZE, Payload

__all__ = ["main", "send", "send_all", "send_one"]

#: Most bytes written without yielding to the loop.
BURST_SIZE = 1024 * 1024

SendOne = Callable[[SendOptions, SendAccount, Progress], Awaitable[None]]

# --- connection -------------------------------------------------------------------------


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection, waiting whenever the transport is full."""
    _, writer = await asyncio.open_connection(options.host, options.port)
    since_yield = 0
    try:
        for chunk in options.payload.chunks(options.chunk_size):
            writer.write(chunk)
            account.feed(chunk, time.monotonic())
            progress(len(chunk))
            # Waits only while the transport holds more than its high-water mark (64 KiB);
            # below it, drain() returns at once without yielding to the loop.
            await writer.drain()
            since_yield += len(chunk)
            if since_yield >= BURST_SIZE:
                # So when the kernel keeps taking every chunk inline, nothing ever yields:
                # ticks came 8 ms late (22 ms on uvloop). Yield once per MiB.
                await asyncio.sleep(0)
                since_yield = 0
        writer.close()  # sends what the transport still holds, then FIN
        await writer.wait_closed()
        account.end(time.monotonic())
    except BaseException:
        account.buffered = writer.transport.get_write_buffer_size()
        writer.transport.abort()
        raise


# --- client -----------------------------------------------------------------------------


async def send_all(
    options: SendOptions, progress: Progress, send_one: SendOne = send_one
) -> SendResult:
    """Run ``options.connections`` transfers at once on this loop, with the ticker beside them."""
    loop = asyncio.get_running_loop()
    delay = LoopDelay()
    stop_ticker = start_ticker(loop, delay)
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    tasks = [asyncio.ensure_future(send_one(options, a, progress)) for a in accounts]
    try:
        await asyncio.gather(*tasks)
    except OSError as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(describe_error(exc), went_out) from None
    finally:
        stop_ticker()
    return SendResult.from_accounts(accounts, delay.stats())


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(send_all(options, progress), options.loop)


async def main() -> None:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` to 127.0.0.1:1234."""
    result = await send_all(SendOptions(Payload(TALK_SIZE)), lambda count: None)
    print(f"sent {result.bytes} bytes in {result.seconds:.3f} s")


if __name__ == "__main__":
    asyncio.run(main())
