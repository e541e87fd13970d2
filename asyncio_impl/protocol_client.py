"""Large-payload client on asyncio's Protocol API: write while the transport accepts,
stop at ``pause_writing()``, go on at ``resume_writing()``; then ``write_eof()``, and the
sink's own close (``eof_received()``, then ``connection_lost()``) is the receipt.

The same client as client.py, one level down: the transport's flow-control callbacks that
``drain()`` is built on, used directly. The client and run sections are client.py's, line
for line: a deliberate copy, so that each file reads whole beside its siblings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import cast

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

__all__ = ["PayloadProtocol", "main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


class PayloadProtocol(asyncio.Protocol):
    """Writes a payload as fast as the transport takes it, half-closes, and waits at most
    ``close_timeout`` seconds for the sink to close in turn."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        account: SendAccount,
        progress: Progress,
        close_timeout: float,
    ) -> None:
        self._chunks = chunks
        self._account = account
        self._progress = progress
        self._close_timeout = close_timeout
        self._paused = False
        self._finished = False
        self._give_up: asyncio.TimerHandle | None = None
        self._failure: Exception | None = None  # why we aborted, if we did
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
        return False  # the sink closed after reading everything: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._give_up is not None:
            self._give_up.cancel()
        if self.done.done():
            return
        exc = self._failure or exc
        if exc is not None:
            self._account.buffered = self._transport.get_write_buffer_size()
            self.done.set_exception(exc)
        elif not self._finished:
            self.done.set_exception(BrokenPipeError("closed by peer before the payload was sent"))
        else:
            self._account.end(time.monotonic())
            self.done.set_result(None)

    def _write_more(self) -> None:
        burst = Burst()
        while not self._paused and not self._transport.is_closing() and not self._finished:
            try:
                chunk = next(self._chunks, None)
            except PayloadError as exc:  # the file changed under us: say so, not "reset"
                self._abort(exc)
                return
            if chunk is None:
                self._finished = True
                try:
                    self._transport.write_eof()  # half-close, once the transport has sent it
                except OSError as exc:  # reset meanwhile: 3.12's shutdown() raises ENOTCONN
                    self._abort(exc)
                    return
                self._give_up = self._loop.call_later(self._close_timeout, self._abort_late)
                return
            self._transport.write(chunk)
            self._account.feed(chunk, time.monotonic())
            self._progress(len(chunk))
            if burst.add(len(chunk)):
                # The kernel took it all without pausing us: a reader as fast as we are.
                # Let the loop run its other callbacks (the ticker) before writing on.
                self._loop.call_soon(self._write_more)
                return

    def _abort_late(self) -> None:
        self._abort(CloseTimeout(self._close_timeout))

    def _abort(self, failure: Exception) -> None:
        self._failure = failure
        self._transport.abort()  # connection_lost() follows, with the failure


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection through a :class:`PayloadProtocol`."""
    chunks = options.payload.chunks(options.chunk_size)
    account.connecting(time.monotonic())
    transport, protocol = await asyncio.get_running_loop().create_connection(
        lambda: PayloadProtocol(chunks, account, progress, options.close_timeout),
        options.host,
        options.port,
    )
    try:
        await protocol.done
    except BaseException:
        account.buffered = transport.get_write_buffer_size()
        transport.abort()
        raise


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
