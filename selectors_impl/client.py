"""Large-payload client on our own selectors loop: the talk's client done properly.

A non-blocking ``send`` may take part of a chunk (a partial send) or nothing (EAGAIN); then
the task waits until the socket is writable, in ``select()``, instead of spinning. After the
last byte, ``shutdown(SHUT_WR)`` half-closes, and the sink's own close is the receipt. In
echo mode a writer task sends requests and a reader task reads their answers; over TLS the
bytes pass through an ``ssl.SSLObject`` this loop drives (streams.py), close_notify is the
EOF and the sink's close_notify the receipt. No wait outlasts ``--stall-timeout``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Coroutine
from typing import Any

from ..common.accounting import SendAccount
from ..common.echo import Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.results import CloseTimeout, SendFailed, SendResult, StallTimeout, error_text
from ..edge import standalone
from ..edge.tls import client_context, version_and_cipher
from . import loops
from .mainloop import (
    Cancelled,
    Event,
    Loop,
    Task,
    TooSlow,
    current_loop,
    fail_after,
    sleep,
    sleep_until,
    wait_writable,
)
from .streams import Tcp, Tls
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

#: Bytes per recv_into() of an echo client's answers.
READ_SIZE = 64 * 1024

# --- connection -------------------------------------------------------------------------


async def _connect(host: str, port: int, patience: float) -> socket.socket:
    """Connect without blocking: start connecting, wait until writable (at most
    ``patience`` seconds), read the outcome."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            try:
                with fail_after(patience):
                    await wait_writable(sock)
            except TooSlow:
                raise StallTimeout(patience) from None
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))
    except BaseException:
        sock.close()
        raise
    return sock


async def send_one(
    options: SendOptions, account: SendAccount, progress: Progress
) -> Requests | None:
    """Stream the payload over one connection with non-blocking sends (echoing: send the
    requests and read their answers); then our EOF, and the sink's close as the receipt.
    Return the echo requests, answered."""
    loop = current_loop()
    account.connecting(loop.time())
    sock = await _connect(options.host, options.port, options.stall_timeout)
    stream = (
        Tcp(sock, options.stall_timeout)
        if options.tls is None
        else Tls(
            sock,
            client_context(options.tls),
            server_side=False,
            server_hostname=options.tls.server_hostname,
            patience=options.stall_timeout,
        )
    )
    try:
        await stream.handshake()
        if isinstance(stream, Tls):
            account.secured(*version_and_cipher(stream.ssl))
        requests = None
        if options.echo is None:
            await _stream_payload(options, stream, account, progress)
        else:
            requests = Requests(
                options.echo, options.payload.messages(options.echo.message_size), start=loop.time()
            )
            await _exchange(stream, requests, account, progress)
        await stream.send_eof()  # a FIN after our bytes (half-close); over TLS close_notify
        # The sink closes only after reading our EOF: its close is the receipt, which has
        # a timeout of its own.
        stream.patience = None
        try:
            with fail_after(options.close_timeout):
                await _until_eof(stream)
        except TooSlow:
            raise CloseTimeout(options.close_timeout) from None
        account.end(loop.time())
        return requests
    finally:
        stream.close()


async def _stream_payload(
    options: SendOptions, stream: Tcp, account: SendAccount, progress: Progress
) -> None:
    loop = current_loop()
    for chunk in options.payload.chunks(options.chunk_size):
        view = memoryview(chunk)
        while view:
            sent = await stream.send(view)  # may send part of the chunk
            account.feed(view[:sent], loop.time())
            view = view[sent:]
        progress(len(chunk))
        # A fast reader can keep the kernel taking every chunk: let the other tasks
        # (the ticker, the other connections) run between chunks, as the talk's yield did.
        await sleep(0)


async def _exchange(
    stream: Tcp, requests: Requests, account: SendAccount, progress: Progress
) -> None:
    """Send every request and read every answer, in a writer task and a reader task side
    by side: a large message's answer comes back while it is still going out, and reading
    only after writing would fill both directions' buffers. Closed loop, the writer waits
    for each answer; open loop, for each request's due time."""
    loop = current_loop()
    sent = Event()  # the writer sent a request, or is done: something to read for
    answered = Event()  # the reader has every answer to what was sent
    finished = False

    async def write() -> None:
        nonlocal finished
        try:
            while True:
                if requests.echo.rate is None:
                    due = loop.time()
                else:  # open loop: on the schedule, whatever the answers do
                    due = requests.due()
                    await sleep_until(due)
                message = requests.next(due)
                if message is None:
                    return
                answered.clear()
                sent.set()
                await stream.send_all(memoryview(message))
                account.feed(message, loop.time())
                progress(len(message))
                if requests.echo.rate is None:
                    await answered.wait()
        finally:
            finished = True
            sent.set()

    async def read() -> None:
        buffer = memoryview(bytearray(READ_SIZE))
        while requests.outstanding or not finished:
            if not requests.outstanding:  # nothing to wait for before the next request
                sent.clear()
                await sent.wait()
                continue
            count = await stream.recv_into(buffer)
            if not count:
                raise ConnectionError("the server closed before answering every request")
            requests.answered(buffer[:count], loop.time())
            if not requests.outstanding:
                answered.set()

    await _side_by_side(write(), read())


async def _side_by_side(*coros: Coroutine[Any, Any, None]) -> None:
    """Run ``coros`` as tasks until every one is done; the first failure cancels the others
    and is raised."""
    loop = current_loop()
    tasks = [loop.spawn(coro) for coro in coros]
    finished = Event()

    def on_done(task: Task) -> None:
        if task.error is not None or all(t.done for t in tasks):
            finished.set()

    for task in tasks:
        task.add_done_callback(on_done)
    try:
        await finished.wait()
    finally:
        for task in tasks:
            task.cancel()
    for task in tasks:
        if task.error is not None and not isinstance(task.error, Cancelled):
            raise task.error


async def _until_eof(stream: Tcp) -> None:
    """Read until the peer closes; a sink says nothing, so whatever comes is dropped."""
    buffer = memoryview(bytearray(64 * 1024))
    while await stream.recv_into(buffer):
        pass


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
    answered: list[Requests] = []  # echo: every connection's requests, answered

    async def worker() -> None:
        for account in pending:
            requests = await send_one(options, account, progress)
            if requests is not None:
                answered.append(requests)

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
    return SendResult.from_accounts(accounts, delay.stats(), requests=answered)


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
