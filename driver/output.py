"""What ``nbio`` prints: one line to stdout (:func:`out`) or stderr (:func:`say`), a
server's and a client's events as JSON lines or text, and a progress bar on a terminal.

Standard output may go away (``nbio serve --json | head -1``) or fill up (a full disk):
:func:`out` then raises :class:`StdoutGone`, and a server says so once on stderr and
stops as SIGTERM would stop it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import usage
from .common.events import AcceptPaused, Event, Listening, Stopped, describe, to_json
from .common.interface import Progress
from .common.results import error_text

__all__ = ["StdoutGone", "out", "printer", "progress", "say", "stop_when_stdout_goes", "with_usage"]


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


def printer(as_json: bool, command: str) -> Callable[[Event], None]:
    """Print each event as a JSON line, or as text for people (an ``accept_paused`` then
    goes to stderr: it is news for whoever runs the server, not output)."""

    def emit(event: Event) -> None:
        if isinstance(event, AcceptPaused) and not as_json:
            say(f"{command}: {describe(event)}")
            return
        out(to_json(event) if as_json else describe(event))

    return emit


def stop_when_stdout_goes(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """A server whose stdout went away (``nbio serve --json | head -1``) says so once on
    stderr and stops as SIGTERM would stop it; nothing more is printed."""
    gone = [False]

    def emit_or_stop(event: Event) -> None:
        if gone[0]:
            return
        try:
            emit(event)
        except StdoutGone as exc:
            gone[0] = True
            say(f"nbio serve: {exc.strerror}: stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    return emit_or_stop


def with_usage(emit: Callable[[Event], None]) -> Callable[[Event], None]:
    """Add the server's resident size at ``listening`` (the baseline its growth is
    measured from) and, to ``stopped``, its peak RSS and CPU since listening, the same way
    for every implementation."""
    listening_cpu = [0.0]

    def emit_with_usage(event: Event) -> None:
        if isinstance(event, Listening):
            listening_cpu[0] = usage.cpu_seconds()
            event = dataclasses.replace(event, rss_kib=usage.rss_kib())
        elif isinstance(event, Stopped):
            event = dataclasses.replace(
                event,
                peak_rss_kib=usage.peak_rss_kib(),
                cpu_s=usage.cpu_seconds() - listening_cpu[0],
            )
        emit(event)

    return emit_with_usage


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
