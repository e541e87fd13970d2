"""Large-payload client on Tornado: ``TCPClient().connect()``, then ``await stream.write(chunk)``
for every chunk, then ``close()``.

The write future resolves when that chunk has reached the kernel: awaiting it is the flow
control that Tornado's maintainers recommend (tornado issue 1939), since
``max_write_buffer_size`` is unlimited by default. Siblings: asyncio_impl/client.py,
twisted_impl/client.py.
"""

from __future__ import annotations

import asyncio
import time

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from common.accounting import SendAccount
from common.interface import Progress, SendFailed, SendOptions, SendResult, describe_error
from common.loopdelay import LoopDelay
from common.payload import TALK_SIZE, Payload
from tornado_impl import loops
from tornado_impl.ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

#: Most bytes written without yielding to the IOLoop.
BURST_SIZE = 1024 * 1024

# --- connection -------------------------------------------------------------------------


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection, one awaited write at a time."""
    stream = await TCPClient().connect(options.host, options.port)
    since_yield = 0
    try:
        for chunk in options.payload.chunks(options.chunk_size):
            # write() sends inline until EAGAIN; the future resolves once the kernel has it.
            await stream.write(chunk)
            account.feed(chunk, time.monotonic())  # counted once the kernel took it
            progress(len(chunk))
            since_yield += len(chunk)
            if since_yield >= BURST_SIZE:
                # When the kernel took the chunk inline, write() returned a future already
                # resolved, and awaiting it did not yield to the IOLoop: a fast reader would
                # let us starve the loop (226 ms late ticks, measured). Yield once per MiB,
                # as Tornado's gen.moment does.
                await asyncio.sleep(0)
                since_yield = 0
        # Tornado has no half-close: close() shuts both directions. Every write future has
        # resolved by now, so nothing buffered is dropped.
        stream.close()
        account.end(time.monotonic())
    finally:
        stream.close()  # on failure: drop what is buffered


def describe_stream_error(exc: BaseException) -> str:
    """The same short message as the other clients give; a StreamClosedError carries the
    socket error underneath as ``real_error``."""
    if isinstance(exc, StreamClosedError):
        if exc.real_error is not None:
            return describe_error(exc.real_error)
        return "connection closed by peer before the payload was sent"
    return describe_error(exc)


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers at once on this IOLoop, with the ticker beside
    them."""
    io_loop = IOLoop.current()
    delay = LoopDelay()
    stop_ticker = start_ticker(io_loop, delay)
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    tasks = [asyncio.ensure_future(send_one(options, a, progress)) for a in accounts]
    try:
        await asyncio.gather(*tasks)
    except (OSError, StreamClosedError) as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(describe_stream_error(exc), went_out) from None
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
