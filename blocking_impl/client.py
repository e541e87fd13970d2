"""Large-payload client on blocking sockets: one thread per connection, each calling
``sendall(chunk)``, which returns once the kernel has taken the whole chunk, then
``shutdown(SHUT_WR)`` and a ``recv`` that returns b"" when the sink closes: the receipt. The
main thread ticks meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

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


def send_one(
    options: SendOptions, account: SendAccount, progress: Progress, sockets: list[socket.socket]
) -> None:
    """Stream the payload over one connection (in this connection's thread)."""
    account.connecting(time.monotonic())
    with socket.create_connection((options.host, options.port)) as sock:
        sockets.append(sock)  # so that another thread's failure can stop this one
        sending = 0
        try:
            for chunk in options.payload.chunks(options.chunk_size):
                sending = len(chunk)
                # Blocks until the kernel has taken all of it. If it fails, it does not say
                # how much of the chunk went out: the kernel does.
                sock.sendall(chunk)
                sending = 0
                account.feed(chunk, time.monotonic())
                progress(len(chunk))
        except BaseException:
            account.unfinished(sending, kernel_took(sock))
            raise
        sock.shutdown(socket.SHUT_WR)  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        sock.settimeout(options.close_timeout)
        try:
            while sock.recv(64 * 1024):  # a sink says nothing; whatever comes is dropped
                pass
        except TimeoutError:
            raise CloseTimeout(options.close_timeout) from None
    account.end(time.monotonic())


# --- client -----------------------------------------------------------------------------


def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a thread each
    at a time, ticking in this one; on SIGINT or SIGTERM stop them, saying how many bytes
    went out."""
    lock = threading.RLock()  # what the ticker takes: no worker reads the delay here
    delay = LoopDelay()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    sockets: list[socket.socket] = []
    failures: list[BaseException] = []

    # Each thread takes the next transfer when it is done with one: next() on a list's
    # iterator is one C call, atomic under the GIL.
    pending = iter(accounts)

    def run() -> None:
        for account in pending:
            if failures:
                return
            try:
                send_one(options, account, progress, sockets)
            except (OSError, PayloadError) as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=run, daemon=True) for _ in range(options.at_once)]
    ticker = start_ticker(lock, delay)
    signals = loops.Signals()
    try:
        for thread in threads:
            thread.start()
        ticker.run_until(
            lambda: bool(failures or signals.arrived) or not any(t.is_alive() for t in threads)
        )
    finally:
        signals.close()
    if failures or signals.arrived:
        for sock in list(sockets):  # stop the others: their sendall() fails at once
            with contextlib.suppress(OSError):  # it may have finished already
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join()
        went_out = sum(account.handed_to_kernel for account in accounts)
        if signals.arrived:
            raise SendFailed.interrupted(signals.arrived[0], went_out)
        raise SendFailed(error_text(failures[0]), went_out)
    ticker.stop()
    with lock:
        return SendResult.from_accounts(accounts, delay.stats())


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send in threads; raise SendFailed if any transfer fails."""
    return loops.run(lambda: send_all(options, progress), options.loop)


def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(main)
