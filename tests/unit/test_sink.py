"""The framework-free sink state: connections, totals, abort and idle, with no sockets."""

from __future__ import annotations

from nbio.common.events import Event, Received
from nbio.common.loopdelay import LoopDelay
from nbio.common.sink import Sink


def _sink() -> tuple[Sink, list[Event]]:
    events: list[Event] = []
    delay = LoopDelay()
    return Sink("sha256", delay, events.append), events


def test_totals_are_the_sums_of_the_received_events() -> None:
    """stopped() adds up exactly what was reported per connection."""
    sink, events = _sink()
    first = sink.open("a:1", 0.0, lambda: None)
    second = sink.open("b:2", 0.0, lambda: None)
    first.feed(b"x" * 10, 1.0)
    second.feed(b"y" * 5, 1.0)
    sink.close(first, "eof", 2.0)
    sink.close(second, "reset", 2.0)
    stopped = sink.stopped()
    received = [e for e in events if isinstance(e, Received)]
    assert stopped.bytes == sum(r.bytes for r in received) == 15
    assert stopped.connections == 2
    assert stopped.outcomes == {"eof": 1, "reset": 1}


def test_abort_all_marks_connections_aborted_and_calls_back_when_idle() -> None:
    """Aborted connections report 'aborted' whatever their edge saw; idle fires at the end."""
    sink, events = _sink()
    aborted: list[str] = []
    connection = sink.open("a:1", 0.0, lambda: aborted.append("a"))
    idle: list[bool] = []
    sink.when_idle(lambda: idle.append(True))
    assert sink.abort_all() == 1
    assert aborted == ["a"] and idle == []
    sink.close(connection, "eof", 1.0)  # a transport closed by abort() looks like EOF
    assert idle == [True]
    assert isinstance(events[-1], Received) and events[-1].outcome == "aborted"


def _tick(sink: Sink, due: float, fired: float) -> None:
    sink.delay.expect(due)
    sink.delay.tick(fired)


def test_loop_delay_history_is_kept_only_for_open_connections() -> None:
    """Samples older than every open connection are forgotten."""
    sink, _ = _sink()
    now = 0.0
    for _ in range(100):
        now += 0.01
        _tick(sink, now, now)
    connection = sink.open("a:1", now, lambda: None)
    _tick(sink, now + 0.01, now + 0.5)
    received = sink.close(connection, "eof", now + 1)
    assert received.loop_delay.ticks == 1
    assert received.loop_delay.max_ms is not None and received.loop_delay.max_ms > 400
    assert sink.delay.stats().ticks == 0


def test_a_stall_that_ends_with_the_connection_is_reported() -> None:
    """The loop stalls 300 ms and the connection's EOF is handled before the overdue tick
    fires: the close samples that tick, so the stall is in the connection's report."""
    sink, _ = _sink()
    connection = sink.open("a:1", 0.0, lambda: None)
    sink.delay.expect(0.01)
    connection.feed(b"x", 0.005)
    received = sink.close(connection, "eof", 0.31)
    assert received.loop_delay.ticks == 1
    assert received.loop_delay.max_ms is not None and received.loop_delay.max_ms >= 299


def test_received_carries_the_span_on_both_clocks() -> None:
    """A received event says when its first byte came and when it ended, on the monotonic
    clock and on the process's CPU clock, so spans of several connections can be joined."""
    sink, _ = _sink()
    connection = sink.open("a:1", 0.0, lambda: None)
    connection.feed(b"x", 1.0)
    received = sink.close(connection, "eof", 2.0)
    assert (received.first_byte_at, received.ended_at) == (1.0, 2.0)
    assert received.cpu_at_first_byte is not None and received.cpu_at_end is not None
    assert 0 <= received.cpu_at_end - received.cpu_at_first_byte < 1


def test_max_connections_refuses_and_counts_the_rest() -> None:
    """Beyond max_connections, open() returns None and reports a rejected event."""
    events: list[Event] = []
    delay = LoopDelay()
    sink = Sink("none", delay, events.append, max_connections=1)
    assert sink.open("a:1", 0.0, lambda: None) is not None
    assert sink.open("b:2", 0.0, lambda: None) is None
    assert [type(e).__name__ for e in events] == ["Rejected"]
    assert sink.stopped().rejected == 1


def test_expire_times_out_only_idle_connections() -> None:
    """A connection silent for longer than idle_timeout is aborted with outcome timeout;
    one that keeps sending is not."""
    events: list[Event] = []
    delay = LoopDelay()
    sink = Sink("none", delay, events.append, idle_timeout=1.0)
    closed: list[str] = []
    quiet = sink.open("quiet:1", 0.0, lambda: closed.append("quiet"))
    busy = sink.open("busy:2", 0.0, lambda: closed.append("busy"))
    assert quiet is not None and busy is not None
    busy.feed(b"x", 0.9)
    assert sink.expire(1.5) == 1
    assert closed == ["quiet"]
    sink.close(quiet, "eof", 1.5)
    assert isinstance(events[-1], Received) and events[-1].outcome == "timeout"
