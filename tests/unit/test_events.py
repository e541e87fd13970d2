"""The JSON lines: the documented fields, in one object per line."""

from __future__ import annotations

import json

import pytest

from nbio.common.events import (
    AcceptPaused,
    AcceptResumed,
    Error,
    Listening,
    Received,
    Rejected,
    Sent,
    Stopped,
    describe,
    from_json,
    to_json,
)
from nbio.common.loopdelay import DelayStats
from nbio.common.percentiles import Percentiles

STATS = DelayStats(ticks=300, early=2, p50_ms=0.5, p99_ms=2.25, max_ms=3.0)
DELAY = {"loop_delay_ms", "ticks", "early_ticks"}


def test_json_has_the_documented_fields() -> None:
    """Each event's JSON carries the fields the README and the issue name."""
    cases = [
        (
            Listening("asyncio-streams", "default", "127.0.0.1", 1234, "x"),
            {"event", "impl", "loop", "host", "port", "loop_impl", "digest", "tune", "rss_kib"}
            | {"mode", "tls", "tls_ca"},
        ),
        (
            Received("127.0.0.1:5", 10, None, 0.5, "eof", STATS),
            {"event", "peer", "bytes", "sha256", "seconds", "outcome", *DELAY}
            | {"first_byte_at", "ended_at", "cpu_at_first_byte", "cpu_at_end"}
            | {"waits_at_first_byte", "waits_at_end", "reads"}
            | {"bytes_out", "tls_version", "tls_cipher"},
        ),
        (
            Stopped(1, 10, {"eof": 1}, 2048, 0.5),
            {"event", "connections", "bytes", "outcomes", "rejected", "peak_rss_kib", "cpu_s"}
            | {"first_byte_at", "ended_at", "cpu_at_first_byte", "cpu_at_end", *DELAY}
            | {"waits_at_first_byte", "waits_at_end", "reads", "bytes_out", "dropped_events"},
        ),
        (Rejected("127.0.0.1:6", 10), {"event", "peer", "open", "reason"}),
        (AcceptPaused("too many open files", 60, 0.1), {"event", "reason", "open", "retry_in"}),
        (AcceptResumed(1.5, 12), {"event", "paused_s", "failures"}),
        (
            Sent(10, "ab", 0.5, 1, STATS, "sha256", 65536, 1),
            {"event", "bytes", "sha256", "seconds", "connections", *DELAY}
            | {"digest", "chunk_size", "chunks", "tune", "first_byte_at", "ended_at"}
            | {"cpu_s", "waits", "rss_kib", "peak_rss_kib", "concurrency"}
            | {"latency_ms", "latency_count", "duration", "mode", "tls_version", "tls_cipher"}
            | {"message_size", "requests", "rate", "request_latency_ms"}
            | {"request_latency_count", "requests_per_s", "histogram"},
        ),
        (Error("connection refused", 0), {"event", "message", "bytes"}),
    ]
    for event, fields in cases:
        line = to_json(event)
        assert "\n" not in line
        data = json.loads(line)
        assert set(data) == fields
        assert data["event"] == event.event
        assert describe(event)


def test_loop_delay_is_reported_in_milliseconds() -> None:
    """loop_delay_ms holds p50, p99 and max; ticks and early ticks stand beside it."""
    data = json.loads(to_json(Sent(1, None, 1.0, 1, STATS)))
    assert data["loop_delay_ms"] == {"p50": 0.5, "p99": 2.25, "max": 3.0}
    assert (data["ticks"], data["early_ticks"]) == (300, 2)


def test_no_ticks_is_null_not_zero() -> None:
    """A process that never ticked reports null figures, which no table can read as 0."""
    data = json.loads(to_json(Sent(1, None, 1.0, 1, DelayStats(ticks=0))))
    assert (data["loop_delay_ms"], data["ticks"]) == (None, 0)


def test_every_event_reads_back_as_itself() -> None:
    """from_json is to_json's reverse, field for field: a stored report is read as typed
    events, so a misspelt field is a type error, not a KeyError in a report."""
    latency = Percentiles(count=120, p50_ms=1.5, p99_ms=9.0, max_ms=12.0)
    events = [
        Listening("trio", "default", "::1", 5, "epoll", "sha256", {"x.Y": 3}, 2048),
        Received("127.0.0.1:5", 10, "ab", 0.5, "reset", STATS, 1.0, 1.5, 0.1, 0.2, 3, 4, 7),
        Stopped(2, 20, {"eof": 2}, 1, 4096, 0.25, 1.0, 2.0, 0.1, 0.3, 1, 9, STATS, 12),
        Rejected("[::1]:7", 10, "max connections"),
        AcceptPaused("too many open files", 60, 0.1),
        AcceptResumed(1.5, 12),
        Sent(
            10,
            "ab",
            0.5,
            2,
            STATS,
            "sha256",
            512,
            20,
            {},
            1.0,
            1.5,
            0.2,
            5,
            100,
            200,
            3,
            latency,
            1.2,
        ),
        Error("connection refused", 0),
    ]
    for event in events:
        assert from_json(json.loads(to_json(event))) == event
    with pytest.raises(ValueError, match="not an nbio event"):
        from_json({"event": "nonsense"})
