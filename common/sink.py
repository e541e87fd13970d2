"""What every sink server keeps, whatever its framework: its live connections, their
accounting, the loop delay each one saw, and the totals it reports when it stops.

A framework's server calls :meth:`Sink.open` when a connection arrives (``None`` means
refuse it: ``--max-connections`` are open), :meth:`Connection.feed` for each read and
:meth:`Sink.close` when it ends; its ticker calls :meth:`Sink.expire`, which aborts the
connections idle for longer than ``--idle-timeout``. Shutdown is :meth:`Sink.when_idle`
(wait out the grace period) then :meth:`Sink.abort_all`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from common.accounting import Buffer, ByteAccount
from common.events import ABORTED, TIMEOUT, Event, Received, Rejected, Stopped
from common.loopdelay import LoopDelay

__all__ = ["Connection", "Sink"]


class Connection:
    """One live sink connection."""

    __slots__ = ("_abort", "account", "active_at", "forced", "mark", "peer")

    def __init__(
        self, peer: str, digest: str, mark: int, abort: Callable[[], None], now: float
    ) -> None:
        self.peer = peer
        self.account = ByteAccount(digest)
        self.mark = mark
        self.active_at = now  # the last time it sent anything (or opened)
        self.forced: str | None = None  # the outcome we imposed by closing it ourselves
        self._abort = abort

    def feed(self, data: Buffer, now: float) -> None:
        """Count bytes just read."""
        self.account.feed(data, now)
        self.active_at = now

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
    ) -> None:
        self.digest = digest
        self.delay = delay
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._emit = emit
        self._live: dict[Connection, None] = {}  # insertion-ordered set
        self._outcomes: Counter[str] = Counter()
        self._bytes = 0
        self._rejected = 0
        self._idle: list[Callable[[], None]] = []
        self._next_scan = 0.0

    @property
    def live(self) -> int:
        """How many connections are open now."""
        return len(self._live)

    def open(self, peer: str, now: float, abort: Callable[[], None]) -> Connection | None:
        """Start accounting a new connection; ``abort`` closes it at once if asked. Return
        None if ``max_connections`` are open: the caller closes it, and it is reported."""
        if self.max_connections is not None and len(self._live) >= self.max_connections:
            self._rejected += 1
            self._emit(Rejected(peer=peer, open=len(self._live)))
            return None
        connection = Connection(peer, self.digest, self.delay.mark(), abort, now)
        self._live[connection] = None
        return connection

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
        )
        self._bytes += account.bytes
        self._outcomes[outcome] += 1
        # Keep only the loop-delay samples that an open connection still needs. Marks grow
        # in the order connections open, which is the live dict's order: the first is oldest.
        oldest = next(iter(self._live)).mark if self._live else self.delay.mark()
        self.delay.forget_before(oldest)
        self._emit(received)
        if not self._live:
            callbacks, self._idle = self._idle, []
            for callback in callbacks:
                callback()
        return received

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
        return Stopped(
            connections=sum(self._outcomes.values()),
            bytes=self._bytes,
            outcomes=dict(self._outcomes),
            rejected=self._rejected,
        )
