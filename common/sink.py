"""What every sink server keeps, whatever its framework: its live connections, their
accounting, the loop delay each one saw, and the totals it reports when it stops.

A framework's server calls :meth:`Sink.open` when a connection arrives (``None`` means
refuse it, with a reset: ``--max-connections`` are open), :meth:`Connection.feed` for each
read and :meth:`Sink.close` when it ends; its ticker calls :meth:`Sink.expire`, which aborts
the connections idle for longer than ``--idle-timeout``. Shutdown is :meth:`Sink.when_idle`
(wait out the grace period) then :meth:`Sink.abort_all`.

When the events are not read (a stdout nobody reads), the sink refuses new connections
until the reader catches up, the same way (``accept_paused``, reason "output not read").

When ``accept()`` fails for want of resources (descriptors, memory, a thread), the server
calls :meth:`Sink.accept_failed`, stops accepting for the delay it returns, and tries again:
the first failure of an episode is reported (``accept_paused``), the delay doubles from
0.1 s to 1 s, and the next connection opened ends the episode (``accept_resumed``). A
connection the framework accepted but could not keep is reported with :meth:`Sink.reject`.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .accounting import Buffer, ByteAccount
from .events import (
    ABORTED,
    MAX_CONNECTIONS,
    TIMEOUT,
    AcceptPaused,
    AcceptResumed,
    Event,
    Received,
    Rejected,
    Stopped,
)
from .loopdelay import DelayStats, LoopDelay

__all__ = [
    "ACCEPT_RETRY_FIRST",
    "ACCEPT_RETRY_MOST",
    "OUTPUT_NOT_READ",
    "Backlog",
    "Connection",
    "Sink",
    "out_of_resources",
]

#: The first pause of an episode of failed accepts, and the longest (it doubles between).
ACCEPT_RETRY_FIRST = 0.1
ACCEPT_RETRY_MOST = 1.0
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Why connections are refused while the events are not being read.
OUTPUT_NOT_READ = "output not read"


@runtime_checkable
class Backlog(Protocol):
    """Where events go, if it can fall behind: the command line's stdout, written by a
    thread, says when it holds so many that the server should take no new connection."""

    def backlogged(self) -> bool: ...


def out_of_resources(exc: BaseException | None) -> bool:
    """Whether ``accept()`` failed for want of descriptors or memory: a reason to pause
    accepting and try again, never to stop serving."""
    return isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS


class Connection:
    """One live sink connection."""

    __slots__ = (
        "_abort",
        "account",
        "active_at",
        "bytes_out",
        "forced",
        "mark",
        "peer",
        "tls_cipher",
        "tls_version",
    )

    def __init__(
        self,
        peer: str,
        digest: str,
        mark: int,
        abort: Callable[[], None],
        now: float,
        echo: bool = False,
    ) -> None:
        self.peer = peer
        self.account = ByteAccount(digest)
        self.mark = mark
        self.active_at = now  # the last time it sent anything (or opened)
        self.forced: str | None = None  # the outcome we imposed by closing it ourselves
        self.bytes_out: int | None = 0 if echo else None  # echo mode: bytes written back
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self._abort = abort

    def feed(self, data: Buffer, now: float) -> None:
        """Count bytes just read."""
        self.account.feed(data, now)
        self.active_at = now

    def echoed(self, count: int) -> None:
        """Count bytes written back (echo mode), once the framework took them."""
        if self.bytes_out is not None:
            self.bytes_out += count

    def secured(self, version: str | None, cipher: str | None) -> None:
        """The TLS handshake agreed on ``version`` and ``cipher``."""
        self.tls_version, self.tls_cipher = version, cipher

    def abort(self, outcome: str = ABORTED) -> None:
        """Close this connection now; it will end with ``outcome`` whatever its edge sees
        (an aborted transport usually looks like a clean EOF to the code reading it)."""
        if self.forced is None:
            self.forced = outcome
            self._abort()


class Sink:
    """The state of one sink server: live connections, totals, loop delay."""

    def __init__(
        self,
        digest: str,
        delay: LoopDelay,
        emit: Callable[[Event], None],
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        echo: bool = False,
    ) -> None:
        self.digest = digest
        self.echo = echo  # connections write back what they read
        self.delay = delay
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._emit = emit
        self._output = emit if isinstance(emit, Backlog) else None
        self._live: dict[Connection, None] = {}  # insertion-ordered set
        self._outcomes: Counter[str] = Counter()
        self._bytes = 0
        self._bytes_out = 0
        self._reads = 0
        self._rejected = 0
        self._idle: list[Callable[[], None]] = []
        self._next_scan = 0.0
        self._paused_at: float | None = None  # start of an episode of failed accepts
        self._retry = ACCEPT_RETRY_FIRST
        self._failures = 0
        # The span of every connection: the earliest first byte, the latest end, and the
        # process's usage at each (see Stopped).
        self._first: tuple[float, float | None, int | None] | None = None
        self._last: tuple[float, float | None, int | None] | None = None
        self._busy_mark: int | None = None  # the delay's mark when a busy period began
        self._busiest = DelayStats(ticks=0)

    @property
    def live(self) -> int:
        """How many connections are open now."""
        return len(self._live)

    def open(self, peer: str, now: float, abort: Callable[[], None]) -> Connection | None:
        """Start accounting a new connection; ``abort`` closes it at once if asked. Return
        None if ``max_connections`` are open, or if the events are not being read (the
        episode said once as ``accept_paused``): the caller resets it, and it is reported."""
        if self._output is not None and self._output.backlogged():
            self.accept_failed(OUTPUT_NOT_READ, now, retry_in=0.0)
            self.reject(peer, OUTPUT_NOT_READ)
            return None
        if self._paused_at is not None:
            self._emit(AcceptResumed(paused_s=now - self._paused_at, failures=self._failures))
            self._paused_at, self._retry, self._failures = None, ACCEPT_RETRY_FIRST, 0
        if self.max_connections is not None and len(self._live) >= self.max_connections:
            self.reject(peer, MAX_CONNECTIONS)
            return None
        connection = Connection(peer, self.digest, self.delay.mark(), abort, now, self.echo)
        if not self._live:  # a busy period begins
            self._busy_mark = connection.mark
        self._live[connection] = None
        return connection

    def reject(self, peer: str, reason: str) -> None:
        """Report a connection closed at once, with a reset, for ``reason``."""
        self._rejected += 1
        self._emit(Rejected(peer=peer, open=len(self._live), reason=reason))

    def accept_failed(self, reason: str, now: float, retry_in: float | None = None) -> float:
        """``accept()`` failed for ``reason`` (out of descriptors, memory or threads): return
        how long to stop accepting before trying again (``retry_in`` if the framework
        decides it). The first failure of an episode is reported, the others counted."""
        self._failures += 1
        delay = self._retry if retry_in is None else retry_in
        if self._paused_at is None:
            self._paused_at = now
            self._emit(AcceptPaused(reason=reason, open=len(self._live), retry_in=delay))
        self._retry = min(ACCEPT_RETRY_MOST, self._retry * 2)
        return delay

    @property
    def accepting(self) -> bool:
        """False while an episode of failed accepts lasts."""
        return self._paused_at is None

    def close(self, connection: Connection, outcome: str, now: float) -> Received:
        """Finish a connection's accounting, report it, and return the report."""
        if connection not in self._live:
            raise ValueError(f"connection from {connection.peer} is not open")
        del self._live[connection]
        if connection.forced is not None:
            outcome = connection.forced
        account = connection.account
        account.end(now)
        # A stall that ends with this connection shows only if we look at the pending tick.
        self.delay.sample(now)
        received = Received(
            peer=connection.peer,
            bytes=account.bytes,
            sha256=account.sha256,
            seconds=account.seconds,
            outcome=outcome,
            loop_delay=self.delay.stats(since=connection.mark),
            first_byte_at=account.first_byte_at,
            ended_at=account.ended_at if account.first_byte_at is not None else None,
            cpu_at_first_byte=account.cpu_at_first_byte,
            cpu_at_end=account.cpu_at_end if account.first_byte_at is not None else None,
            waits_at_first_byte=account.waits_at_first_byte,
            waits_at_end=account.waits_at_end if account.first_byte_at is not None else None,
            reads=account.reads,
            bytes_out=connection.bytes_out,
            tls_version=connection.tls_version,
            tls_cipher=connection.tls_cipher,
        )
        self._bytes += account.bytes
        if connection.bytes_out is not None:
            self._bytes_out += connection.bytes_out
        self._reads += account.reads
        self._outcomes[outcome] += 1
        self._extend_span(account)
        if not self._live and self._busy_mark is not None:  # the busy period ends
            busy = self.delay.stats(since=self._busy_mark)
            if busy.ticks >= self._busiest.ticks:
                self._busiest = busy
            self._busy_mark = None
        # Keep only the loop-delay samples that an open connection, or the busy period,
        # still needs. Marks grow in the order connections open, which is the live dict's
        # order: the first is the oldest, and the busy period began no later.
        if self._busy_mark is not None:
            oldest = self._busy_mark
        else:
            oldest = next(iter(self._live)).mark if self._live else self.delay.mark()
        self.delay.forget_before(oldest)
        self._emit(received)
        if not self._live:
            callbacks, self._idle = self._idle, []
            for callback in callbacks:
                callback()
        return received

    def _extend_span(self, account: ByteAccount) -> None:
        if account.first_byte_at is None or account.ended_at is None:
            return
        if self._first is None or account.first_byte_at < self._first[0]:
            self._first = (
                account.first_byte_at,
                account.cpu_at_first_byte,
                account.waits_at_first_byte,
            )
        if self._last is None or account.ended_at > self._last[0]:
            self._last = (account.ended_at, account.cpu_at_end, account.waits_at_end)

    def expire(self, now: float) -> int:
        """Abort the connections idle for longer than ``idle_timeout`` (outcome
        ``timeout``); return how many. Cheap to call on every tick: it scans at most four
        times per timeout."""
        if self.idle_timeout is None or now < self._next_scan:
            return 0
        self._next_scan = now + self.idle_timeout / 4
        stale = [c for c in self._live if now - c.active_at > self.idle_timeout]
        for connection in stale:
            connection.abort(TIMEOUT)
        return len(stale)

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no connection is open (now, if none is)."""
        if self._live:
            self._idle.append(callback)
        else:
            callback()

    def abort_all(self) -> int:
        """Abort every open connection; return how many there were."""
        connections = list(self._live)
        for connection in connections:
            connection.abort()
        return len(connections)

    def stopped(self) -> Stopped:
        """Return the totals: the sums of every ``received`` event reported."""
        first = self._first or (None, None, None)
        last = self._last or (None, None, None)
        return Stopped(
            connections=sum(self._outcomes.values()),
            bytes=self._bytes,
            outcomes=dict(self._outcomes),
            rejected=self._rejected,
            first_byte_at=first[0],
            ended_at=last[0],
            cpu_at_first_byte=first[1],
            cpu_at_end=last[1],
            waits_at_first_byte=first[2],
            waits_at_end=last[2],
            loop_delay=self._busiest,
            reads=self._reads,
            bytes_out=self._bytes_out if self.echo else None,
        )
