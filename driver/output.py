"""What ``nbio`` prints: one line to stdout (:func:`out`) or stderr (:func:`say`), a
server's and a client's events as JSON lines or text, and a progress bar on a terminal.

Standard output may go away (``nbio serve --json | head -1``), fill up (a full disk) or
not be read at all: :func:`out` then raises :class:`StdoutGone`; a server
(:class:`ServerOutput`) says so once on stderr and stops as SIGTERM would, or, while
nobody reads, holds its events up to a bound and refuses new connections, never blocking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import usage
from .common.events import AcceptPaused, Event, Listening, Stopped, describe, to_json
from .common.interface import Progress
from .common.results import error_text
from .common.sink import OUTPUT_NOT_READ

__all__ = [
    "OUTPUT_NOT_READ",
    "ServerOutput",
    "StdoutGone",
    "out",
    "printer",
    "progress",
    "say",
    "text_of",
    "write_within",
]


class StdoutGone(OSError):
    """Standard output cannot be written (a closed pipe, a full disk)."""


def out(text: str) -> None:
    """Print a line to stdout now, or raise :class:`StdoutGone`."""
    try:
        print(text, flush=True)
    except OSError as exc:
        # What was not written would fail again at exit: send the rest to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise StdoutGone(exc.errno, f"cannot write to stdout: {error_text(exc)}") from None


def say(line: str) -> None:
    """One line on stderr, if stderr can still take it."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: stderr closed (None)
        print(line, file=sys.stderr, flush=True)


def text_of(event: Event, as_json: bool) -> str:
    """An event as a JSON line, or as text for people."""
    return to_json(event) if as_json else describe(event)


#: Events a server holds for a stdout that is not read before it stops taking connections
#: (``accept_paused``, reason "output not read": each new connection is refused, counted,
#: until the reader has taken half of them)...
PAUSE_AT = 1000
#: ...and the most it holds at all: past it an event is dropped, and counted in ``stopped``.
HELD = 10_000
#: Seconds a stopping server, or a client that is done, waits for a stuck stdout to take
#: what it holds before it says how much it could not write, and exits.
FLUSH_TIMEOUT = 2.0


class ServerOutput:
    """A server's events on their way to stdout, written by a thread of their own, so that a
    stdout nobody reads (``nbio serve --json | sleep 600``) never blocks the loop: it held
    a server frozen in a pipe write after 192 connections, deaf even to SIGTERM. The loop
    only queues; while :data:`PAUSE_AT` events wait, :meth:`backlogged` says so and the
    sink refuses connections (``common.sink``); past :data:`HELD`, events are dropped and
    counted. The server's resident size at ``listening`` and its peak RSS and CPU at
    ``stopped`` are added here, the same way for every implementation."""

    def __init__(self, as_json: bool, command: str) -> None:
        self._as_json = as_json
        self._command = command
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._paused = False
        self.dropped = 0
        self._gone = False
        self._listening_cpu = 0.0
        self._thread = threading.Thread(target=self._write, name="stdout", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Listening):
            self._listening_cpu = usage.cpu_seconds()
            event = dataclasses.replace(event, rss_kib=usage.rss_kib())
        elif isinstance(event, Stopped):
            event = dataclasses.replace(
                event,
                peak_rss_kib=usage.peak_rss_kib(),
                cpu_s=usage.cpu_seconds() - self._listening_cpu,
                dropped_events=self.dropped,
            )
        if isinstance(event, AcceptPaused) and not self._as_json:
            say(f"{self._command}: {describe(event)}")  # news for whoever runs it, not output
            return
        if self._gone:
            return
        if self._queue.qsize() >= HELD:
            self.dropped += 1
            return
        self._queue.put(text_of(event, self._as_json) + "\n")

    def backlogged(self) -> bool:
        """Whether stdout is so far behind that the server should take no new connection:
        from :data:`PAUSE_AT` events held until half of them are written."""
        held = self._queue.qsize()
        self._paused = held >= (PAUSE_AT // 2 if self._paused else PAUSE_AT)
        return self._paused

    def _write(self) -> None:
        while (line := self._queue.get()) is not None:
            data = line.encode()
            try:
                while data:  # os.write on the descriptor: sys.stdout's lock stays free
                    data = data[os.write(sys.stdout.fileno(), data) :]
            except OSError as exc:
                self._gone = True
                say(f"nbio serve: cannot write to stdout: {error_text(exc)}: stopping")
                os.kill(os.getpid(), signal.SIGTERM)  # as `nbio serve | head -1` should stop
                return

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Write what is held, waiting at most ``timeout`` seconds for a stuck reader; say
        on stderr how many events could not be written."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            left = self._queue.qsize()
            say(f"{self._command}: stdout not read: {left} event(s) not written")


def printer(as_json: bool, command: str) -> Callable[[Event], None]:
    """Print each event now, as a JSON line or as text (a client prints one, at its end)."""

    def emit(event: Event) -> None:
        out(text_of(event, as_json))

    return emit


def write_within(text: str, timeout: float) -> bool:
    """Print ``text`` to stdout, giving up after ``timeout`` seconds if nobody reads it:
    return whether it was written. Raises :class:`StdoutGone` if stdout is closed."""
    failure: list[StdoutGone] = []

    def write() -> None:
        try:
            out(text)
        except StdoutGone as exc:
            failure.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout)
    if failure:
        raise failure[0]
    return not writer.is_alive()


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr closed (None), or its file closed
        return False


@contextmanager
def progress(total: int | None, enabled: bool, unit: str = "bytes") -> Iterator[Progress]:
    """A progress bar on stderr while sending or comparing, when stderr is a terminal
    (``total`` None: of unknown length, a send that lasts ``--duration``)."""
    if not enabled or not _on_terminal():
        yield lambda count: None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, TransferSpeedColumn
    from rich.progress import Progress as Bar

    columns = (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else ()
    with Bar(
        *Bar.get_default_columns(),
        *columns,
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("sending" if unit == "bytes" else "comparing", total=total)
        yield lambda count: bar.advance(task, count)
