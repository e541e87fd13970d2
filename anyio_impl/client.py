"""Large-payload client on anyio: ``anyio.connect_tcp``, then ``await send(chunk)`` for
every chunk, which returns once the kernel has taken all of it (on asyncio anyio sets the
transport's high-water mark to 0 and waits for it to drain): that wait is the
backpressure. Then ``send_eof()``, and the sink's own close (``EndOfStream``) is the
receipt.
"""

from __future__ import annotations

import errno
import functools
import time

import anyio
from anyio.abc import SocketAttribute

from ..common.accounting import SendAccount
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, error_text
from ..edge import standalone
from ..edge.kernel import kernel_took
from . import loops
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection (in its own task)."""
    account.connecting(time.monotonic())
    stream = await anyio.connect_tcp(options.host, options.port)
    # Asked now: once the transport has closed, extra() itself fails (its attribute table
    # calls getpeername() on a socket that is gone).
    try:
        raw_socket = stream.extra(SocketAttribute.raw_socket)
    except (OSError, AttributeError):  # reset already: the table's getpeername() fails
        await stream.aclose()
        raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer") from None
    async with stream:
        sending = 0
        try:
            for chunk in options.payload.chunks(options.chunk_size):
                sending = len(chunk)
                # Parks this task until the kernel has taken all of the chunk. If it fails
                # or is cancelled, it does not say how much of the chunk went out: the
                # kernel does.
                await stream.send(chunk)
                sending = 0
                account.feed(chunk, time.monotonic())
                progress(len(chunk))
        except BaseException:  # the backend's cancellation too: a signal, a sibling's failure
            account.unfinished(sending, kernel_took(raw_socket))
            raise
        try:
            await stream.send_eof()  # half-close: the kernel sends FIN after our bytes
        except RuntimeError:  # uvloop: a reset closed the transport under anyio
            raise BrokenPipeError(errno.EPIPE, "closed by peer before our EOF") from None
        # The sink closes only after reading our EOF: its close is the receipt.
        try:
            with anyio.fail_after(options.close_timeout):
                while True:
                    await stream.receive(64 * 1024)  # a sink says nothing; dropped
        except anyio.EndOfStream:
            pass
        except TimeoutError:  # fail_after() raises the builtin TimeoutError
            raise CloseTimeout(options.close_timeout) from None
    account.end(time.monotonic())


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a task each in
    one task group, with the ticker beside them; on SIGINT or SIGTERM stop them, saying how
    many bytes went out."""
    delay = LoopDelay()
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    failures: list[BaseException] = []
    pending = iter(accounts)

    async def transfers() -> None:
        async with anyio.create_task_group() as group:

            async def run() -> None:
                for account in pending:  # the next transfer, when done with one
                    try:
                        await send_one(options, account, progress)
                    except (OSError, PayloadError, anyio.BrokenResourceError) as exc:
                        # Kept, not raised: the first failure stops the others, and is the
                        # one reported (the task group would raise them all in a group).
                        failures.append(loops.cause(exc))
                        group.cancel_scope.cancel()
                        return

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
    return SendResult.from_accounts(accounts, delay.stats())


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
