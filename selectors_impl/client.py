"""Large-payload client on our own selectors loop: the talk's client done properly.

A non-blocking ``send`` may take part of a chunk (a partial send) or nothing (EAGAIN); then
the task waits until the socket is writable, in ``select()``, instead of spinning.
Siblings: asyncio_impl/client.py, twisted_impl/client.py, tornado_impl/client.py.
"""

from __future__ import annotations

import errno
import socket

from common.accounting import SendAccount
from common.interface import Progress, SendFailed, SendOptions, SendResult, describe_error
from common.loopdelay import LoopDelay
from common.payload import TALK_SIZE, Payload
from selectors_impl import loops
from selectors_impl.loop import Cancelled, Event, Loop, Task, current_loop, sleep, wait_writable
from selectors_impl.ticker import start_ticker

__all__ = ["connect", "main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


async def connect(host: str, port: int) -> socket.socket:
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
    sock = await connect(options.host, options.port)
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
        sock.close()  # the kernel still sends what it holds, then FIN
        account.end(loop.time())
    finally:
        sock.close()


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers at once on this loop, with the ticker beside
    them."""
    loop = current_loop()
    delay = LoopDelay()
    stop_ticker = start_ticker(loop, delay)
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    tasks = [loop.spawn(send_one(options, account, progress)) for account in accounts]
    try:
        error = await _wait_all(tasks)
    finally:
        stop_ticker()
    if error is not None:
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(describe_error(error), went_out)
    return SendResult.from_accounts(accounts, delay.stats())


async def _wait_all(tasks: list[Task]) -> BaseException | None:
    """Wait until every task is done; on the first failure cancel the rest. Return it."""
    finished = Event()
    failures: list[BaseException] = []

    def on_done(task: Task) -> None:
        if task.error is not None and not isinstance(task.error, Cancelled):
            failures.append(task.error)
            for other in tasks:
                other.cancel()
        if all(t.done for t in tasks):
            finished.set()

    for task in tasks:
        task.add_done_callback(on_done)
    await finished.wait()
    return failures[0] if failures else None


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the selector that ``options.loop`` names; raise SendFailed if any transfer
    fails."""
    return loops.run(send_all(options, progress), options.loop)


def main() -> None:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` to 127.0.0.1:1234."""
    result = Loop().run(send_all(SendOptions(Payload(TALK_SIZE)), lambda count: None))
    print(f"sent {result.bytes} bytes in {result.seconds:.3f} s")


if __name__ == "__main__":
    main()
