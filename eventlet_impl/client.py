"""Large-payload client on Eventlet: ``eventlet.connect``, then ``sendall`` for every
chunk, which parks this green thread in the hub while the kernel's buffer is full: that is
the backpressure. Then ``shutdown(SHUT_WR)``, and the sink's own close is the receipt.

Echo mode sends each request with ``sendall`` and reads its answer with ``recv_into``; with
a rate, a writer green thread sends on the schedule while a reader green thread takes the
answers. TLS is Eventlet's ``GreenSSLSocket``; after the last byte ``unwrap()`` sends our
close_notify and waits for the sink's: the receipt. Every wait has the socket's timeout: a
peer that takes nothing, or answers nothing, for ``--stall-timeout`` seconds fails the
transfer.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import eventlet
import eventlet.queue
from eventlet.event import Event
from eventlet.green import ssl as gssl
from eventlet.greenthread import GreenThread

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
    context: ssl.SSLContext | None,
) -> Requests | None:
    """Stream the payload over one connection, or ask its echo requests (in its own green
    thread), over TLS with ``context``; return those requests when echoing."""
    # The family of the host asked for: eventlet.connect() takes IPv4 unless told.
    family, _, _, _, address = socket.getaddrinfo(
        options.host, options.port, type=socket.SOCK_STREAM
    )[0]
    account.connecting(time.monotonic())
    # eventlet.connect() takes no timeout: an eventlet.Timeout around it, once.
    with eventlet.Timeout(options.stall_timeout, StallTimeout(options.stall_timeout)):
        sock = eventlet.connect(address, family=family)
    # Then the socket's: each wait in the hub of every sendall() and every read of an
    # answer gives up after it (eventlet/greenio/base.py, _send_loop), no timer otherwise.
    sock.settimeout(options.stall_timeout)
    if context is not None:
        # Eventlet's GreenSSLSocket, as GreenSSLContext.wrap_socket makes it (eventlet/green/
        # ssl.py): the stdlib context's own wrap_socket would make the stdlib's, whose
        # calls block the whole hub. It keeps the green socket's timeout.
        sock = gssl.GreenSSLSocket(
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
                        # wait, and a green thread that never waits never lets the hub
                        # run: yield once per burst.
                        eventlet.sleep(0)
            else:
                requests = _ask(sock, options, account, progress)
        _close(sock, options, requests)
    account.end(time.monotonic())
    return requests


def _send(sock: Any, chunk: bytes, account: SendAccount, progress: Progress) -> None:
    """``sendall(chunk)`` (a chunk of the payload, or a request), counted once the kernel
    has taken all of it."""
    try:
        # Parks this green thread, not the process, until the kernel has taken all of it;
        # each wait at most the socket's timeout.
        sock.sendall(chunk)
    except BaseException:  # GreenletExit too: killed on a signal or a sibling's failure
        # A sendall that fails does not say how much of it went out: the kernel does. Not
        # under TLS, whose count is of records, not of our bytes: whole chunks only there.
        took = None if isinstance(sock, gssl.GreenSSLSocket) else kernel_took(sock)
        account.unfinished(len(chunk), took)
        raise
    account.feed(chunk, time.monotonic())
    progress(len(chunk))


def _ask(sock: Any, options: SendOptions, account: SendAccount, progress: Progress) -> Requests:
    """Send each echo request and read its answer whole: one after the other in this
    green thread (closed loop), or each when due whatever the answers do, a writer green
    thread and a reader green thread side by side (open loop)."""
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
    # Each green thread waits in the hub on its own readiness: the hub lets one green thread
    # read a socket while another writes it (not two of either).
    sent = Event()  # sent by the writer after each request, and when it is done
    writer = eventlet.spawn(
        _failure_of, _write_on_schedule, sock, requests, account, progress, sent
    )
    reader = eventlet.spawn(_failure_of, _read_answers, sock, requests, sent)
    finished: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
    for thread in (writer, reader):
        thread.link(finished.put)
    try:
        for _ in range(2):
            failure = finished.get().wait()
            if failure is not None:
                raise failure
    finally:
        writer.kill()
        reader.kill()
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
                eventlet.sleep(wait)
                burst.reset()
            elif burst.add(0):
                eventlet.sleep(0)  # behind the schedule, sendall() may never wait: yield anyway
            if (message := requests.next(due)) is None:
                break  # the payload ran out (--duration)
            _send(sock, message, account, progress)
            _notify(sent)
    finally:
        _notify(sent)  # the reader looks again: every request may be answered already


def _notify(event: Event) -> None:
    """Wake the reader: an Eventlet Event is sent once until reset, where gevent's is set."""
    if not event.ready():
        event.send()


def _read_answers(sock: Any, requests: Requests, sent: Event) -> None:
    """Open loop: read the answers as they come, while the writer sends."""
    buffer = memoryview(bytearray(READ_SIZE))
    while not requests.done:
        if requests.outstanding:
            # At most the socket's timeout, read only while an answer is awaited: the stall.
            _answer(sock, buffer, requests)
        else:  # nothing awaited until the writer's next request
            sent.wait()
            sent.reset()


def _failure_of(function: Callable[..., None], *args: Any) -> Exception | None:
    """Run ``function``; return what it failed with, not raise it: the hub prints a traceback
    for every green thread that dies of an exception."""
    try:
        function(*args)
    except (OSError, EchoMismatch) as exc:
        return exc
    return None


def _answer(sock: Any, buffer: memoryview, requests: Requests) -> None:
    """Read what came back and check it against the requests waiting for it."""
    count = loops.recv_into(sock, buffer)  # a reset raises, where a green socket's reads 0
    if not count:
        raise EchoMismatch(f"the server closed with {requests.outstanding} requests unanswered")
    requests.answered(buffer[:count], time.monotonic())


def _close(sock: Any, options: SendOptions, requests: Requests | None) -> None:
    """End the stream, and wait at most ``close_timeout`` for the sink's receipt."""
    sock.settimeout(None)  # the close timeout bounds this wait, not the stall timeout
    with eventlet.Timeout(options.close_timeout, CloseTimeout(options.close_timeout)):
        if isinstance(sock, gssl.GreenSSLSocket):
            # Our close_notify, then the sink's, which it sends only once it has read
            # everything up to ours: the receipt. unwrap() does both: it retries the stdlib's
            # in the hub on SSL_ERROR_WANT_READ and raises anything else, SSLEOFError on a
            # FIN without close_notify among them (eventlet/green/ssl.py, _call_trampolining).
            sock.unwrap()
            return
        sock.shutdown(socket.SHUT_WR)  # half-close: the kernel sends FIN after our bytes
        # The sink closes only after reading our EOF: its close is the receipt.
        drop = memoryview(bytearray(64 * 1024))
        while count := loops.recv_into(sock, drop):
            if requests is not None:  # every answer came: more is an echo server's error
                requests.answered(drop[:count], time.monotonic())
            # a sink says nothing; whatever comes is dropped


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
    context = client_context(options.tls) if options.tls is not None else None
    asked: list[Requests] = []  # echo: each connection's requests

    def run() -> Exception | None:
        for account in pending:
            try:
                requests = send_one(options, account, progress, context)
            except (OSError, PayloadError, EchoMismatch) as exc:
                return exc  # returned, not raised: the hub prints what a green thread raises
            if requests is not None:
                asked.append(requests)
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
    return SendResult.from_accounts(accounts, delay.stats(), requests=asked)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the hub that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(lambda: send_all(options, progress), options.loop)


def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(main)
