"""Large-payload client on our own selectors loop: the talk's client done properly.

A non-blocking ``send`` may take part of a chunk (a partial send) or nothing (EAGAIN); then
the task waits until the socket is writable, in ``select()``, instead of spinning. After the
last byte, ``shutdown(SHUT_WR)`` half-closes, and the sink's own close is the receipt.
"""

from __future__ import annotations

import errno
import socket

from ..common.accounting import SendAccount
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.results import CloseTimeout, SendFailed, SendResult, error_text
from ..edge import standalone
from . import loops
from .mainloop import (
    Loop,
    TooSlow,
    current_loop,
    fail_after,
    sleep,
    wait_readable,
    wait_writable,
)
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


async def _connect(host: str, port: int) -> socket.socket:
    """Connect without blocking: start connecting, wait until writable, read the outcome."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            await wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection with non-blocking sends."""
    loop = current_loop()
    account.connecting(loop.time())
    sock = await _connect(options.host, options.port)
    try:
        for chunk in options.payload.chunks(options.chunk_size):
            view = memoryview(chunk)
            while view:
                try:
                    sent = sock.send(view)  # may send part of the chunk
                except BlockingIOError:  # EAGAIN: the kernel's buffer is full
                    await wait_writable(sock)
                    continue
                account.feed(view[:sent], loop.time())
                view = view[sent:]
            progress(len(chunk))
            # A fast reader can keep the kernel taking every chunk: let the other tasks
            # (the ticker, the other connections) run between chunks, as the talk's yield did.
            await sleep(0)
        sock.shutdown(socket.SHUT_WR)  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        try:
            with fail_after(options.close_timeout):
                await _until_eof(sock)
        except TooSlow:
            raise CloseTimeout(options.close_timeout) from None
        account.end(loop.time())
    finally:
        sock.close()


async def _until_eof(sock: socket.socket) -> None:
    """Read until the peer closes; a sink says nothing, so whatever comes is dropped."""
    while True:
        try:
            if not sock.recv(64 * 1024):
                return
        except BlockingIOError:
            await wait_readable(sock)


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, on this loop,
    with the ticker beside them; on SIGINT or SIGTERM stop them, saying how many bytes went
    out."""
    loop = current_loop()
    delay = LoopDelay()
    stop_ticker = start_ticker(loop, delay)
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    pending = iter(accounts)  # each worker takes the next transfer when it is done with one

    async def worker() -> None:
        for account in pending:
            await send_one(options, account, progress)

    tasks = [loop.spawn(worker()) for _ in range(options.at_once)]
    try:
        interrupted, error = await loops.wait_or_signal(tasks, signals)
    finally:
        stop_ticker()
        signals.close()
    went_out = sum(account.handed_to_kernel for account in accounts)
    if interrupted is not None:
        raise SendFailed.interrupted(interrupted, went_out)
    if error is not None:
        raise SendFailed(error_text(error), went_out)
    return SendResult.from_accounts(accounts, delay.stats())


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the selector that ``options.loop`` names; raise SendFailed if any transfer
    fails."""
    return loops.run(send_all(options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(lambda options: Loop().run(main(options)))
