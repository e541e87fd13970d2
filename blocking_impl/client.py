"""Large-payload client on blocking sockets: one thread per connection, each calling
``sendall(chunk)``, which returns once the kernel has taken the whole chunk, then
``shutdown(SHUT_WR)`` and a ``recv`` that returns b"" when the sink closes: the receipt. The
main thread ticks meanwhile.

Echo mode sends each request with ``sendall`` and reads its answer with ``recv_into``, in
the same thread. TLS is the standard library's ``SSLContext.wrap_socket``; after the last
byte, ``unwrap()`` sends our close_notify and waits for the sink's: the receipt. Every call
that waits has a timeout (``settimeout``): a peer that takes nothing, or answers nothing,
for ``--stall-timeout`` seconds fails the transfer.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import threading
import time

from ..common.accounting import SendAccount
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import (
    CloseTimeout,
    SendFailed,
    SendResult,
    StallTimeout,
    error_text,
    stalls,
)
from ..edge import standalone
from ..edge.kernel import kernel_took
from ..edge.tls import client_context, version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = ["main", "send", "send_all", "send_one"]

#: Bytes per recv_into() of an echo server's answers.
READ_SIZE = 256 * 1024

# --- connection -------------------------------------------------------------------------


def send_one(
    options: SendOptions,
    account: SendAccount,
    progress: Progress,
    sockets: list[socket.socket],
    context: ssl.SSLContext | None,
) -> Requests | None:
    """Stream the payload over one connection, or ask its echo requests (in this
    connection's thread), over TLS with ``context``; return those requests when echoing."""
    account.connecting(time.monotonic())
    with stalls(options.stall_timeout):
        # The timeout stays the socket's: every sendall() and every wait for an answer
        # gives up after it too.
        sock = socket.create_connection((options.host, options.port), options.stall_timeout)
        if context is not None:
            sock = context.wrap_socket(
                sock,
                server_hostname=options.tls.server_hostname if options.tls else None,
                do_handshake_on_connect=False,  # below, once another thread can stop it
                suppress_ragged_eofs=False,  # a FIN without close_notify raises SSLEOFError
            )
    with sock:
        sockets.append(sock)  # so that another thread's failure can stop this one
        requests = None
        with stalls(options.stall_timeout):
            if isinstance(sock, ssl.SSLSocket):
                sock.do_handshake()
                account.secured(*version_and_cipher(sock))
            if options.echo is None:
                for chunk in options.payload.chunks(options.chunk_size):
                    _send(sock, chunk, account, progress)
            else:
                requests = _ask(sock, options, account, progress)
        _close(sock, options, requests)
    account.end(time.monotonic())
    return requests


def _send(sock: socket.socket, chunk: bytes, account: SendAccount, progress: Progress) -> None:
    """``sendall(chunk)`` (a chunk of the payload, or a request), counted once the kernel
    has taken all of it."""
    try:
        # Blocks until the kernel has taken all of it, at most the socket's timeout: since
        # Python 3.5 it bounds the whole call, progress or not.
        sock.sendall(chunk)
    except BaseException:
        # A sendall that fails does not say how much of it went out: the kernel does. Not
        # under TLS, whose count is of records, not of our bytes: whole chunks only there.
        took = None if isinstance(sock, ssl.SSLSocket) else kernel_took(sock)
        account.unfinished(len(chunk), took)
        raise
    account.feed(chunk, time.monotonic())
    progress(len(chunk))


def _ask(
    sock: socket.socket, options: SendOptions, account: SendAccount, progress: Progress
) -> Requests:
    """Send each echo request and read its answer whole, in this thread: one after the
    other (closed loop), or each when due whatever the answers do (open loop)."""
    assert options.echo is not None
    echo = options.echo
    requests = Requests(echo, options.payload.messages(echo.message_size), time.monotonic())
    buffer = memoryview(bytearray(READ_SIZE))
    if echo.rate is None:
        while (message := requests.next(time.monotonic())) is not None:
            # The whole message, then its answer: one that the kernel's buffers both ways
            # cannot hold (16 MiB here; 8 MiB passed) leaves both sides writing, neither
            # reading, until the stall timeout says so.
            _send(sock, message, account, progress)
            while requests.outstanding:
                _answer(sock, buffer, requests)
        return requests
    # Open loop, still in one thread: a writer thread beside this one would read and write
    # one SSL object at once, which OpenSSL forbids (openssl/openssl#20446) and CPython's
    # SSLSocket does not prevent. So this thread reads answers until the next request is
    # due, and when it is due already, only those already here: answers never pile up in
    # both directions' buffers behind a sendall() that would then wait forever.
    stall = options.stall_timeout
    heard = time.monotonic()  # an answer's last byte, or since when one is awaited
    while not requests.done:
        now = time.monotonic()
        due = math.inf if requests.all_sent else requests.due()
        wait = max(0.0, due - now)
        if requests.outstanding:
            if now - heard >= stall:
                raise StallTimeout(stall)
            wait = min(wait, heard + stall - now)
        if _answers_within(sock, buffer, requests, wait):
            heard = time.monotonic()
        elif due <= time.monotonic():
            if not requests.outstanding:
                heard = time.monotonic()
            if (message := requests.next(due)) is not None:
                sock.settimeout(stall)
                _send(sock, message, account, progress)
    return requests


def _answer(sock: socket.socket, buffer: memoryview, requests: Requests) -> None:
    """Read what came back and check it against the requests waiting for it."""
    count = sock.recv_into(buffer)
    if not count:
        raise EchoMismatch(f"the server closed with {requests.outstanding} requests unanswered")
    requests.answered(buffer[:count], time.monotonic())


def _answers_within(
    sock: socket.socket, buffer: memoryview, requests: Requests, seconds: float
) -> bool:
    """Read what comes back within ``seconds`` (0: what is here now); False if nothing."""
    sock.settimeout(seconds)
    try:
        _answer(sock, buffer, requests)
    except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):  # 0 s: non-blocking
        return False
    return True


def _close(sock: socket.socket, options: SendOptions, requests: Requests | None) -> None:
    """End the stream, and wait at most ``close_timeout`` for the sink's receipt."""
    sock.settimeout(options.close_timeout)
    try:
        if isinstance(sock, ssl.SSLSocket):
            # Our close_notify, then the sink's, which it sends only once it has read
            # everything up to ours: the receipt. unwrap() does both, and raises
            # SSLEOFError on a FIN without close_notify (a sink cut short is no receipt).
            sock.unwrap()
            return
        sock.shutdown(socket.SHUT_WR)  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        while data := sock.recv(64 * 1024):
            if requests is not None:  # every answer came: more is an echo server's error
                requests.answered(data, time.monotonic())
            # a sink says nothing; whatever comes is dropped
    except TimeoutError:
        raise CloseTimeout(options.close_timeout) from None


# --- client -----------------------------------------------------------------------------


def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a thread each
    at a time, ticking in this one; on SIGINT or SIGTERM stop them, saying how many bytes
    went out."""
    lock = threading.RLock()  # what the ticker takes: no worker reads the delay here
    delay = LoopDelay()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    context = client_context(options.tls) if options.tls is not None else None
    sockets: list[socket.socket] = []
    failures: list[BaseException] = []
    asked: list[Requests] = []  # echo: each connection's requests

    # Each thread takes the next transfer when it is done with one: next() on a list's
    # iterator is one C call, atomic under the GIL.
    pending = iter(accounts)

    def run() -> None:
        for account in pending:
            if failures:
                return
            try:
                requests = send_one(options, account, progress, sockets, context)
            except (OSError, PayloadError, EchoMismatch) as exc:
                failures.append(exc)
                return
            if requests is not None:
                asked.append(requests)  # one C call, atomic under the GIL

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
                # The socket's own: SSLSocket.shutdown() would drop the TLS layer under
                # the thread that uses it (a ValueError there, not an end).
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for thread in threads:
            thread.join()
        went_out = sum(account.handed_to_kernel for account in accounts)
        if signals.arrived:
            raise SendFailed.interrupted(signals.arrived[0], went_out)
        raise SendFailed(error_text(failures[0]), went_out)
    ticker.stop()
    with lock:
        return SendResult.from_accounts(accounts, delay.stats(), requests=asked)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send in threads; raise SendFailed if any transfer fails."""
    return loops.run(lambda: send_all(options, progress), options.loop)


def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(main)
