"""Large-payload client on gevent: ``gevent.socket.create_connection``, then ``sendall`` for
every chunk, which blocks this greenlet while the kernel's buffer is full: that is the
backpressure. Then ``shutdown(SHUT_WR)``, and the sink's own close is the receipt.

Echo mode sends each request with ``sendall`` and reads its answer with ``recv_into``; with
a rate, a writer greenlet sends on the schedule while a reader greenlet takes the answers.
TLS is gevent's own ``SSLSocket``; after the last byte our close_notify, then the sink's, is
the receipt. Every wait has the socket's timeout: a peer that takes nothing, or answers
nothing, for ``--stall-timeout`` seconds fails the transfer.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.ssl
from gevent import socket as gsocket
from gevent.event import Event

from ..common.accounting import SendAccount
from ..common.burst import Burst
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import (
    CloseTimeout,
    SendFailed,
    SendResult,
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
    context: ssl.SSLContext | None,
) -> Requests | None:
    """Stream the payload over one connection, or ask its echo requests (in its own
    greenlet), over TLS with ``context``; return those requests when echoing."""
    account.connecting(time.monotonic())
    with stalls(options.stall_timeout):
        # The timeout stays the socket's: every sendall() and every wait for an answer gives
        # up after it too. Not a gevent.Timeout around each call: that doubled what a 1-byte
        # sendall() costs (2.2 to 4.8 µs, measured), where the socket's timeout adds 0.2.
        sock = gsocket.create_connection((options.host, options.port), options.stall_timeout)
        if context is not None:
            # gevent's SSLSocket, as gevent.ssl.SSLContext.wrap_socket makes it (gevent/
            # ssl.py): the stdlib context's own wrap_socket would make the stdlib's, whose
            # calls block the whole hub.
            sock = gevent.ssl.SSLSocket(
                sock,
                server_hostname=options.tls.server_hostname if options.tls else None,
                do_handshake_on_connect=False,  # below, inside the with
                suppress_ragged_eofs=False,  # a FIN without close_notify raises SSLEOFError
                _context=context,
            )
    with sock:
        requests = None
        with stalls(options.stall_timeout):
            if context is not None:
                sock.do_handshake()
                account.secured(*version_and_cipher(sock))
            if options.echo is None:
                burst = Burst()
                for chunk in options.payload.chunks(options.chunk_size):
                    _send(sock, chunk, account, progress)
                    if burst.add(len(chunk)):
                        # A kernel that takes every chunk at once never makes sendall()
                        # wait, and a greenlet that never waits never lets the hub run:
                        # yield once per burst. idle(), not sleep(0): sleep(0) lets other
                        # greenlets run, not the loop's timers (the ticker was 40 ms late
                        # with a write per byte, measured).
                        gevent.idle()
            else:
                requests = _ask(sock, options, account, progress)
        _close(sock, options, requests)
    account.end(time.monotonic())
    return requests


def _send(sock: Any, chunk: bytes, account: SendAccount, progress: Progress) -> None:
    """``sendall(chunk)`` (a chunk of the payload, or a request), counted once the kernel
    has taken all of it."""
    try:
        # Blocks this greenlet, not the process, until the kernel has taken all of it, at
        # most the socket's timeout, which bounds the whole call (gevent/_socketcommon.py,
        # _sendall), as the standard library's does.
        sock.sendall(chunk)
    except BaseException:  # GreenletExit too: killed on a signal or a sibling's failure
        # A sendall that fails does not say how much of it went out: the kernel does. Not
        # under TLS, whose count is of records, not of our bytes: whole chunks only there.
        took = None if isinstance(sock, gevent.ssl.SSLSocket) else kernel_took(sock)
        account.unfinished(len(chunk), took)
        raise
    account.feed(chunk, time.monotonic())
    progress(len(chunk))


def _ask(sock: Any, options: SendOptions, account: SendAccount, progress: Progress) -> Requests:
    """Send each echo request and read its answer whole: one after the other in this
    greenlet (closed loop), or each when due whatever the answers do, a writer greenlet and
    a reader greenlet side by side (open loop)."""
    assert options.echo is not None
    echo = options.echo
    requests = Requests(echo, options.payload.messages(echo.message_size), time.monotonic())
    if echo.rate is None:
        buffer = memoryview(bytearray(READ_SIZE))
        while (message := requests.next(time.monotonic())) is not None:
            # The whole message, then its answer: one that the kernel's buffers both ways
            # cannot hold (16 MiB here; 8 MiB passed) leaves both sides writing, neither
            # reading, until the stall timeout says so.
            _send(sock, message, account, progress)
            while requests.outstanding:
                _answer(sock, buffer, requests)
        return requests
    # Each greenlet waits in the hub on its own readiness: gevent lets one greenlet read a
    # socket while another writes it (not two of either).
    sent = Event()  # set by the writer after each request, and when it is done
    writer = gevent.spawn(_failure_of, _write_on_schedule, sock, requests, account, progress, sent)
    reader = gevent.spawn(_failure_of, _read_answers, sock, requests, sent)
    try:
        for finished in gevent.iwait([writer, reader]):
            if finished.value is not None:
                raise finished.value
    finally:
        gevent.killall([writer, reader])
    return requests


def _write_on_schedule(
    sock: Any, requests: Requests, account: SendAccount, progress: Progress, sent: Event
) -> None:
    """Open loop: send each request when it is due, whatever the answers do."""
    burst = Burst()
    try:
        while not requests.all_sent:
            due = requests.due()
            if (wait := due - time.monotonic()) > 0:
                gevent.sleep(wait)
                burst.reset()
            elif burst.add(0):
                gevent.idle()  # behind the schedule, sendall() may never wait: yield anyway
            if (message := requests.next(due)) is None:
                break  # the payload ran out (--duration)
            _send(sock, message, account, progress)
            sent.set()
    finally:
        sent.set()  # the reader looks again: every request may be answered already


def _read_answers(sock: Any, requests: Requests, sent: Event) -> None:
    """Open loop: read the answers as they come, while the writer sends."""
    buffer = memoryview(bytearray(READ_SIZE))
    while not requests.done:
        if requests.outstanding:
            # At most the socket's timeout, read only while an answer is awaited: the stall.
            _answer(sock, buffer, requests)
        else:  # nothing awaited until the writer's next request
            sent.wait()
            sent.clear()


def _failure_of(function: Callable[..., None], *args: Any) -> Exception | None:
    """Run ``function``; return what it failed with, not raise it: the hub prints a traceback
    for every greenlet that dies of an exception."""
    try:
        function(*args)
    except (OSError, EchoMismatch) as exc:
        return exc
    return None


def _answer(sock: Any, buffer: memoryview, requests: Requests) -> None:
    """Read what came back and check it against the requests waiting for it."""
    count = sock.recv_into(buffer)
    if not count:
        raise EchoMismatch(f"the server closed with {requests.outstanding} requests unanswered")
    requests.answered(buffer[:count], time.monotonic())


def _close(sock: Any, options: SendOptions, requests: Requests | None) -> None:
    """End the stream, and wait at most ``close_timeout`` for the sink's receipt."""
    sock.settimeout(None)  # the close timeout bounds this wait, not the stall timeout
    with gevent.Timeout(options.close_timeout, CloseTimeout(options.close_timeout)):
        if isinstance(sock, gevent.ssl.SSLSocket):
            _close_notify(sock)
            return
        sock.shutdown(socket.SHUT_WR)  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        while data := sock.recv(64 * 1024):
            if requests is not None:  # every answer came: more is an echo server's error
                requests.answered(data, time.monotonic())
            # a sink says nothing; whatever comes is dropped


def _close_notify(sock: Any) -> None:
    """Send our close_notify and wait for the sink's, which it sends only once it has read
    everything up to ours: the receipt."""
    # Not sock.unwrap(): gevent's ends on a FIN as on the sink's close_notify (gevent 26.9,
    # gevent/ssl.py, SSLSocket.unwrap: `except SSLEOFError: break`), so a sink cut short
    # would pass for one that read everything. This is its loop without that: the
    # shutdown() of the SSL object under it (what the stdlib's unwrap() calls) raises
    # SSLEOFError on a FIN.
    while True:
        try:
            sock._sslobj.shutdown()  # the one private name of the package: see above
            return
        except ssl.SSLWantReadError:
            gsocket.wait_read(sock.fileno())
        except ssl.SSLWantWriteError:
            gsocket.wait_write(sock.fileno())


# --- client -----------------------------------------------------------------------------


def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, a greenlet each
    at a time, with the ticker beside them; on SIGINT or SIGTERM stop them, saying how many
    bytes went out."""
    delay = LoopDelay()
    stop_ticker = start_ticker(gevent.get_hub(), delay)
    signals = loops.Signals()
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]

    pending = iter(accounts)  # each greenlet takes the next transfer when done with one
    context = client_context(options.tls) if options.tls is not None else None
    asked: list[Requests] = []  # echo: each connection's requests

    def run() -> Exception | None:
        for account in pending:
            try:
                requests = send_one(options, account, progress, context)
            except (OSError, PayloadError, EchoMismatch, gevent.Timeout) as exc:
                return exc  # returned, not raised: the hub prints what a greenlet raises
            if requests is not None:
                asked.append(requests)
        return None

    greenlets = [gevent.spawn(run) for _ in range(options.at_once)]
    try:
        interrupted = loops.wait_or_signal(greenlets, signals)
    finally:
        stop_ticker()
        signals.close()
    went_out = sum(account.handed_to_kernel for account in accounts)
    if interrupted is not None:
        raise SendFailed.interrupted(interrupted, went_out)
    failures = [g.value for g in greenlets if g.ready() and g.value is not None]
    if failures:
        raise SendFailed(error_text(failures[0]), went_out)
    return SendResult.from_accounts(accounts, delay.stats(), requests=asked)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(lambda: send_all(options, progress), options.loop)


def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(main)
