"""Large-payload client on Eventlet: ``eventlet.connect``, then ``sendall`` for every
chunk, which parks this green thread in the hub while the kernel's buffer is full: that is
the backpressure. Then ``shutdown(SHUT_WR)``, and the sink's own close is the receipt.
"""

from __future__ import annotations

import socket
import time

import eventlet
from eventlet.greenthread import GreenThread

from ..common.accounting import SendAccount
from ..common.burst import Burst
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


def send_one(options: SendOptions, account: SendAccount, progress: Progress) -> None:
    """Stream the payload over one connection (in its own green thread)."""
    # The family of the host asked for: eventlet.connect() takes IPv4 unless told.
    family, _, _, _, address = socket.getaddrinfo(
        options.host, options.port, type=socket.SOCK_STREAM
    )[0]
    account.connecting(time.monotonic())
    with eventlet.connect(address, family=family) as sock:
        burst = Burst()
        sending = 0
        try:
            for chunk in options.payload.chunks(options.chunk_size):
                sending = len(chunk)
                # Parks this green thread, not the process, until the kernel has taken all
                # of it. If it fails, it does not say how much of the chunk went out: the
                # kernel does.
                sock.sendall(chunk)
                sending = 0
                account.feed(chunk, time.monotonic())
                progress(len(chunk))
                if burst.add(len(chunk)):
                    # A kernel that takes every chunk at once never makes sendall() wait,
                    # and a green thread that never waits never lets the hub run: yield
                    # once per burst.
                    eventlet.sleep(0)
        except BaseException:  # GreenletExit too: killed on a signal or a sibling's failure
            account.unfinished(sending, kernel_took(sock))
            raise
        sock.shutdown(socket.SHUT_WR)  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        with eventlet.Timeout(options.close_timeout, CloseTimeout(options.close_timeout)):
            drop = memoryview(bytearray(64 * 1024))
            while loops.recv_into(sock, drop):  # a sink says nothing; what comes is dropped
                pass
    account.end(time.monotonic())


# --- client -----------------------------------------------------------------------------


def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a green thread
    each at a time, with the ticker beside them; on SIGINT or SIGTERM stop them, saying how
    many bytes went out."""
    delay = LoopDelay()
    stop_ticker = start_ticker(eventlet.hubs.get_hub(), delay)
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]

    pending = iter(accounts)  # each green thread takes the next transfer when done with one

    def run() -> Exception | None:
        for account in pending:
            try:
                send_one(options, account, progress)
            except (OSError, PayloadError, CloseTimeout) as exc:
                return exc  # returned, not raised: the hub prints what a green thread raises
        return None

    threads: list[GreenThread] = [eventlet.spawn(run) for _ in range(options.at_once)]
    try:
        interrupted = loops.wait_or_signal(threads, signals)
    finally:
        stop_ticker()
        signals.close()
    went_out = sum(account.handed_to_kernel for account in accounts)
    if interrupted is not None:
        raise SendFailed.interrupted(interrupted, went_out)
    failures = [t.wait() for t in threads if t.dead and t.wait() is not None]
    if failures:
        raise SendFailed(error_text(failures[0]), went_out)
    return SendResult.from_accounts(accounts, delay.stats())


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the hub that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(lambda: send_all(options, progress), options.loop)


def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(main)
