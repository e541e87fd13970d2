"""Large-payload client on asyncio's Protocol API: write while the transport accepts,
stop at ``pause_writing()``, go on at ``resume_writing()``.

The same client as client.py, one level down: the transport's flow-control callbacks that
``drain()`` is built on, used directly. Siblings: client.py (streams), twisted_impl/client.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import cast

from asyncio_impl import loops
from asyncio_impl.client import send_all
from common.accounting import SendAccount
from common.interface import Progress, SendOptions, SendResult
from common.payload import TALK_SIZE, Payload

__all__ = ["PayloadProtocol", "main", "send", "send_one"]

#: Most bytes written in one callback before yielding to the loop, even if never paused.
BURST_SIZE = 1024 * 1024

# --- connection -------------------------------------------------------------------------


class PayloadProtocol(asyncio.Protocol):
    """Writes a payload as fast as the transport takes it, then closes."""

    def __init__(self, chunks: Iterator[bytes], account: SendAccount, progress: Progress) -> None:
        self._chunks = chunks
        self._account = account
        self._progress = progress
        self._paused = False
        self._finished = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._loop = asyncio.get_running_loop()
        self._write_more()  # nothing else will start us: the transport only pauses and resumes

    def pause_writing(self) -> None:
        # Called from inside write() once the transport holds more than its high-water mark.
        self._paused = True

    def resume_writing(self) -> None:
        # Called once the transport has sent enough to drop below its low-water mark.
        self._paused = False
        # Not _write_more() here: closing the transport from inside its own resume_writing()
        # makes the selector loop call connection_lost() twice. Go on in the next iteration.
        self._loop.call_soon(self._write_more)

    def eof_received(self) -> bool:
        return False  # a sink says nothing; if it closes early, connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is not None:
            self._account.buffered = self._transport.get_write_buffer_size()
            self.done.set_exception(exc)
        elif not self._finished:
            self.done.set_exception(BrokenPipeError("closed by peer before the payload was sent"))
        else:
            self._account.end(time.monotonic())
            self.done.set_result(None)

    def _write_more(self) -> None:
        burst = 0
        while not self._paused and not self._transport.is_closing():
            if burst >= BURST_SIZE:
                # The kernel took it all without pausing us: a reader as fast as we are.
                # Let the loop run its other callbacks (the ticker) before writing on.
                self._loop.call_soon(self._write_more)
                return
            chunk = next(self._chunks, None)
            if chunk is None:
                self._finished = True
                self._transport.close()  # sends what the transport still holds, then FIN
                return
            self._transport.write(chunk)
            self._account.feed(chunk, time.monotonic())
            self._progress(len(chunk))
            burst += len(chunk)


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection through a :class:`PayloadProtocol`."""
    chunks = options.payload.chunks(options.chunk_size)
    transport, protocol = await asyncio.get_running_loop().create_connection(
        lambda: PayloadProtocol(chunks, account, progress), options.host, options.port
    )
    try:
        await protocol.done
    except BaseException:
        account.buffered = transport.get_write_buffer_size()
        transport.abort()
        raise


# --- client -----------------------------------------------------------------------------

# Many connections on one loop, and the ticker beside them: client.send_all(send_one=...).

# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(send_all(options, progress, send_one), options.loop)


async def main() -> None:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` to 127.0.0.1:1234."""
    result = await send_all(SendOptions(Payload(TALK_SIZE)), lambda count: None, send_one)
    print(f"sent {result.bytes} bytes in {result.seconds:.3f} s")


if __name__ == "__main__":
    asyncio.run(main())
