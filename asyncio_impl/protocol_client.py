"""Large-payload client on asyncio's Protocol API: write while the transport accepts,
stop at ``pause_writing()``, go on at ``resume_writing()``; then ``write_eof()``, and the
sink's own close (``eof_received()``, then ``connection_lost()``) is the receipt. In echo
mode each request goes out from a callback (the last answer's, or a timer's on a
schedule) and ``data_received()`` checks the answers.

The same client as client.py, one level down: the transport's flow-control callbacks that
``drain()`` is built on, used directly, and ``call_later()`` timers for every wait. The
client and run sections are client.py's, line for line: a deliberate copy, so that each
file reads whole beside its siblings.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import cast

from ..common.accounting import SendAccount
from ..common.burst import Burst
from ..common.echo import EchoMismatch, Requests
from ..common.interface import Progress
from ..common.loopdelay import LoopDelay
from ..common.options import SendOptions
from ..common.payload import PayloadError
from ..common.results import CloseTimeout, SendFailed, SendResult, StallTimeout, error_text
from ..edge import standalone
from ..edge.tls import version_and_cipher
from . import loops
from .ticker import start_ticker

__all__ = ["PayloadProtocol", "main", "send", "send_all", "send_one"]

# --- connection -------------------------------------------------------------------------


class PayloadProtocol(asyncio.Protocol):
    """Writes a payload as fast as the transport takes it (in echo mode, its requests,
    each answer checked), half-closes, and waits at most ``close_timeout`` seconds for the
    sink to close in turn. Waits longer than ``stall_timeout`` without progress fail."""

    def __init__(self, options: SendOptions, account: SendAccount, progress: Progress) -> None:
        self._options = options
        self._chunks = options.payload.chunks(options.chunk_size)
        self._account = account
        self._progress = progress
        self.requests: Requests | None = None  # echo mode, from connection_made()
        self._paused = False
        self._finished = False
        self._give_up: asyncio.TimerHandle | None = None  # the close timeout
        self._stall: asyncio.TimerHandle | None = None  # runs while we wait for progress
        self._progress_at = 0.0  # the loop's time of the last progress
        self._next_due: asyncio.TimerHandle | None = None  # open loop: the next request
        self._ssl_object: ssl.SSLObject | None = None
        self._failure: Exception | None = None  # why we aborted, if we did
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._loop = asyncio.get_running_loop()
        self._ssl_object = transport.get_extra_info("ssl_object")
        if self._ssl_object is not None:  # TLS: called once the handshake is done
            self._account.secured(*version_and_cipher(self._ssl_object))
        echo = self._options.echo
        if echo is None:
            self._write_more()  # nothing else will start us: the transport only pauses and resumes
            return
        chunks = self._options.payload.messages(echo.message_size)
        self.requests = Requests(echo, chunks, start=time.monotonic())
        self._ask()

    def pause_writing(self) -> None:
        # Called from inside write() once the transport holds more than its high-water mark.
        self._paused = True
        self._progressed()  # it took that write: the wait for the next starts now

    def resume_writing(self) -> None:
        # Called once the transport has sent enough to drop below its low-water mark.
        self._paused = False
        self._progressed()
        # Not _write_more() here: closing the transport from inside its own resume_writing()
        # makes the selector loop call connection_lost() twice. Go on in the next iteration.
        self._loop.call_soon(self._ask if self.requests is not None else self._write_more)

    def data_received(self, data: bytes) -> None:
        if self.requests is None:
            return  # a sink says nothing: whatever comes is dropped
        try:
            self.requests.answered(data, time.monotonic())
        except EchoMismatch as exc:
            self._abort(exc)
            return
        self._progressed()
        if self.requests.echo.rate is None and not self.requests.outstanding:
            self._ask()  # closed loop: this answer is whole, the next request goes out
        elif self.requests.done:
            self._finish()

    def eof_received(self) -> bool:
        return False  # the sink closed after reading everything: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._give_up, self._stall, self._next_due):
            if timer is not None:
                timer.cancel()
        if self.done.done():
            return
        exc = self._failure or exc
        if self._finished and type(exc) is TimeoutError:
            # TLS, 3.11+: asyncio's own wait for close_notify ran out first
            # (ssl_shutdown_timeout, set to ours): the same close timeout.
            exc = CloseTimeout(self._options.close_timeout)
        elif self._finished and exc is None and not loops.close_notify_received(self._ssl_object):
            # A TLS sink that closed without close_notify may not have read everything: on
            # CPython's loop eof_received() came all the same (see close_notify_received).
            # What the ssl module raises at such a FIN (suppress_ragged_eofs=False).
            exc = ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")
        if exc is not None:
            self._account.buffered = loops.held(self._transport)
            self.done.set_exception(exc)
        elif not self._finished:
            self.done.set_exception(BrokenPipeError("closed by peer before the payload was sent"))
        else:
            self._account.end(time.monotonic())
            self.done.set_result(None)

    def _write_more(self) -> None:
        burst = Burst()
        while not self._paused and not self._transport.is_closing() and not self._finished:
            try:
                chunk = next(self._chunks, None)
            except PayloadError as exc:  # the file changed under us: say so, not "reset"
                self._abort(exc)
                return
            if chunk is None:
                self._finish()
                return
            self._send(chunk)
            if burst.add(len(chunk)):
                # The kernel took it all without pausing us: a reader as fast as we are.
                # Let the loop run its other callbacks (the ticker) before writing on.
                self._loop.call_soon(self._write_more)
                return

    def _ask(self) -> None:
        """Echo: send the requests that are due (closed loop: the next one, once nothing
        is outstanding), and schedule the next one (open loop)."""
        requests = self.requests
        assert requests is not None
        if self._next_due is not None:  # called early (resume_writing): one schedule only
            self._next_due.cancel()
            self._next_due = None
        burst = Burst()
        while not self._paused and not self._transport.is_closing() and not self._finished:
            if requests.echo.rate is None:
                if requests.outstanding:
                    return  # data_received() asks the next
                due = time.monotonic()
            else:
                due = requests.due()
                if requests.all_sent or due > time.monotonic():
                    break
            message = requests.next(due)
            if message is None:
                break
            self._send(message)
            self._progressed()  # an answer is awaited from now
            if burst.add(len(message)):  # behind schedule, every request is due at once
                self._loop.call_soon(self._ask)
                return
        if requests.done:
            self._finish()
        elif not requests.all_sent and not self._paused:
            # Open loop: the next request goes out at its time, whatever the answers do.
            delay = max(0.0, requests.due() - time.monotonic())
            self._next_due = self._loop.call_later(delay, self._ask)

    def _send(self, chunk: bytes) -> None:
        """Write a chunk, or a request's message, counted as handed to the transport."""
        self._transport.write(chunk)
        self._account.feed(chunk, time.monotonic())
        self._progress(len(chunk))

    def _finish(self) -> None:
        """Half-close after the last byte, and wait for the sink's close: the receipt."""
        if self._finished:
            return
        self._finished = True
        if self._stall is not None:
            self._stall.cancel()  # from now on the close timeout governs
        try:
            if self._transport.can_write_eof():
                self._transport.write_eof()  # half-close, once the transport has sent it
            else:
                # TLS: asyncio has no half-close. close() sends our close_notify after what
                # the transport holds and waits for the sink's, which it sends once it read
                # everything up to ours; asyncio then closes, and connection_lost() checks.
                self._transport.close()
        except OSError as exc:  # reset meanwhile: 3.12's shutdown() raises ENOTCONN
            self._abort(exc)
            return
        self._give_up = self._loop.call_later(self._options.close_timeout, self._abort_late)

    def _waiting(self) -> bool:
        """Whether we wait for progress: on a paused transport, or for an answer."""
        answers = self.requests is not None and self.requests.outstanding > 0
        return not self._finished and (self._paused or answers)

    def _progressed(self) -> None:
        """The kernel took bytes, or answer bytes came: the stall clock starts over. Only a
        time is noted: the one timer, when it fires, sees it and waits the rest, so that
        no timer is made and cancelled for every read."""
        self._progress_at = self._loop.time()
        if self._stall is None and self._waiting():
            self._stall = self._loop.call_later(self._options.stall_timeout, self._check_stall)

    def _check_stall(self) -> None:
        self._stall = None
        if not self._waiting():
            return
        quiet = self._loop.time() - self._progress_at
        if quiet >= self._options.stall_timeout:
            self._abort(StallTimeout(self._options.stall_timeout))
        else:
            rest = self._options.stall_timeout - quiet
            self._stall = self._loop.call_later(rest, self._check_stall)

    def _abort_late(self) -> None:
        self._abort(CloseTimeout(self._options.close_timeout))

    def _abort(self, failure: Exception) -> None:
        self._failure = failure
        self._transport.abort()  # connection_lost() follows, with the failure


async def send_one(
    options: SendOptions, account: SendAccount, progress: Progress
) -> Requests | None:
    """Send over one connection through a :class:`PayloadProtocol` (in echo mode, return
    its requests, answered)."""
    account.connecting(time.monotonic())
    tls = loops.tls_client(options.tls, options.close_timeout)
    opening = asyncio.get_running_loop().create_connection(
        lambda: PayloadProtocol(options, account, progress), options.host, options.port, **tls
    )
    try:
        # A connect (and a TLS handshake) that does not complete is a stall too.
        transport, protocol = await asyncio.wait_for(opening, options.stall_timeout)
    except asyncio.TimeoutError:  # not the builtin TimeoutError on 3.10
        raise StallTimeout(options.stall_timeout) from None
    try:
        await protocol.done
    except BaseException:
        account.buffered = loops.held(transport)
        transport.abort()
        raise
    return protocol.requests


# --- client -----------------------------------------------------------------------------


async def send_all(options: SendOptions, progress: Progress) -> SendResult:
    """Run ``options.connections`` transfers, ``options.at_once`` at a time, on this loop,
    with the ticker beside them; on SIGINT or SIGTERM stop them, saying how many bytes went
    out."""
    loop = asyncio.get_running_loop()
    delay = LoopDelay()
    stop_ticker = start_ticker(loop, delay)
    signals = loops.Signals(loop)
    accounts = [SendAccount(options.digest) for _ in range(options.connections)]
    pending = iter(accounts)  # each worker takes the next transfer when it is done with one
    asked: list[Requests] = []  # echo mode: every connection's requests, answered

    async def worker() -> None:
        for account in pending:
            requests = await send_one(options, account, progress)
            if requests is not None:
                asked.append(requests)

    tasks = [asyncio.ensure_future(worker()) for _ in range(options.at_once)]
    try:
        interrupted = await loops.wait_or_signal(asyncio.gather(*tasks), signals)
    except (OSError, PayloadError, EchoMismatch) as exc:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed(error_text(exc), went_out) from None
    finally:
        stop_ticker()
        signals.close()
    if interrupted is not None:
        went_out = sum(account.handed_to_kernel for account in accounts)
        raise SendFailed.interrupted(interrupted, went_out)
    return SendResult.from_accounts(accounts, delay.stats(), requests=asked)


# --- run --------------------------------------------------------------------------------


def send(options: SendOptions, progress: Progress) -> SendResult:
    """Send on the loop that ``options.loop`` names; raise SendFailed if any transfer fails."""
    return loops.run(send_all(options, progress), options.loop)


async def main(options: SendOptions) -> SendResult:
    """Send the talk's 73,400,320 bytes of ``foobar\\n`` (or ``--size``) to the sink."""
    return await send_all(options, lambda count: None)


if __name__ == "__main__":
    standalone.run_client(lambda options: asyncio.run(main(options)))
