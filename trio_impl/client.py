"""Large-payload client on trio: ``trio.open_tcp_stream``, then ``await send_all(chunk)``
for every chunk, which returns once the kernel has taken all of it: that wait is the
backpressure. Then ``send_eof()``, and the sink's own close (``receive_some`` returning
``b""``) is the receipt.
"""

from __future__ import annotations

import functools

import trio

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
    account.connecting(loops.now())
    stream = await trio.open_tcp_stream(options.host, options.port)
    async with stream:
        sending = 0
        try:
            for chunk in options.payload.chunks(options.chunk_size):
                sending = len(chunk)
                # A checkpoint, then as many send() calls as the kernel needs, parking this
                # task while its buffer is full. If it fails or is cancelled, it does not
                # say how much of the chunk went out: the kernel does.
                await stream.send_all(chunk)
                sending = 0
                account.feed(chunk, loops.now())
                progress(len(chunk))
        except BaseException:  # Cancelled too: on a signal or a sibling's failure
            account.unfinished(sending, kernel_took(stream.socket))
            raise
        await stream.send_eof()  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        try:
            with trio.fail_after(options.close_timeout):
                while await stream.receive_some(64 * 1024):  # a sink says nothing
                    pass
        except trio.TooSlowError:
            raise CloseTimeout(options.close_timeout) from None
    account.end(loops.now())


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a task each in
    one nursery, with the ticker beside them; on SIGINT or SIGTERM stop them, saying how
    many bytes went out."""
    delay = LoopDelay()
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    failures: list[BaseException] = []
    pending = iter(accounts)

    async def transfers() -> None:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                for account in pending:  # the next transfer, when done with one
                    try:
                        await send_one(options, account, progress)
                    except (OSError, PayloadError, trio.BrokenResourceError) as exc:
                        # Kept, not raised: the first failure stops the others, and is the
                        # one reported (trio would raise them all in an exception group).
                        failures.append(loops.cause(exc))
                        nursery.cancel_scope.cancel()
                        return

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
    return SendResult.from_accounts(accounts, delay.stats())


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
