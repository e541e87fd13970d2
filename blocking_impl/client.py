"""Large-payload client on blocking sockets: one thread per connection, each calling
``sendall(chunk)``, which returns once the kernel has taken the whole chunk. The main thread
ticks meanwhile. Siblings: selectors_impl/client.py, asyncio_impl/client.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from blocking_impl.ticker import Ticker
from common.accounting import SendAccount
from common.interface import Progress, SendFailed, SendOptions, SendResult, describe_error
from common.loopdelay import LoopDelay
from common.payload import TALK_SIZE, Payload

__all__ = ["main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


def send_one(
    options: SendOptions, account: SendAccount, progress: Progress, sockets: list[socket.socket]
) -> None:
    """Stream the payload over one connection (in this connection's thread)."""
    with socket.create_connection((options.host, options.port)) as sock:
        sockets.append(sock)  # so that another thread's failure can stop this one
        for chunk in options.payload.chunks(options.chunk_size):
            # Blocks until the kernel has taken all of it. If it fails, some of the chunk
            # may have gone out: only whole chunks are counted, a lower bound.
            sock.sendall(chunk)
            account.feed(chunk, time.monotonic())
            progress(len(chunk))
    # Leaving the block closes the socket: the kernel still sends what it holds, then FIN.
    account.end(time.monotonic())


# --- client -----------------------------------------------------------------------------


def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers in as many threads, ticking in this one."""
    lock = threading.Lock()
    delay = LoopDelay()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    sockets: list[socket.socket] = []
    failures: list[BaseException] = []

    def run(account: SendAccount) -> None:
        try:
            send_one(options, account, progress, sockets)
        except OSError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in accounts]
    ticker = Ticker(delay, lock)
    for thread in threads:
        thread.start()
    ticker.run_until(lambda: bool(failures) or not any(t.is_alive() for t in threads))
    if failures:
        for sock in list(sockets):  # stop the others: their sendall() fails at once
            with contextlib.suppress(OSError):  # it may have finished already
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join()
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(describe_error(failures[0]), went_out)
    ticker.stop()
    with lock:
        return SendResult.from_accounts(accounts, delay.stats())


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send in threads; raise SendFailed if any transfer fails."""
    return send_all(options, progress)


def main() -> None:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` to 127.0.0.1:1234."""
    result = send_all(SendOptions(Payload(TALK_SIZE)), lambda count: None)
    print(f"sent {result.bytes} bytes in {result.seconds:.3f} s")


if __name__ == "__main__":
    main()
