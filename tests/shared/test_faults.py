"""The failure half of the shared suite: every implementation and loop, when things go wrong.
Each case is checked on the side that must cope, against a neutral stdlib peer that
misbehaves on purpose. No correctness depends on a sleep: waits poll against deadlines."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time

import pytest
from harness import (
    LOCALHOST,
    WAIT,
    ClogSink,
    ResettingSink,
    ServerProcess,
    Target,
    neutral_send,
    open_fds,
    reset,
    run_client,
    wait_until,
)

from common import registry
from common.payload import Payload

MiB = 1024 * 1024


def test_client_reports_a_server_reset_and_how_much_went_out(target: Target) -> None:
    """The sink resets after 1 MiB: the client exits 1 with one line saying how many bytes
    went out, and its error event agrees."""
    sink = ResettingSink(after=MiB)
    try:
        run = run_client(target, sink.port, "--size", "256MiB")
    finally:
        sink.close()
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "bytes sent" in run.stderr
    (error,) = run.events
    assert error["event"] == "error"
    assert error["message"] in (
        "connection reset by peer",
        "connection closed by peer (broken pipe)",
    )
    assert sink.received <= error["bytes"] < 256 * MiB


def test_sink_reports_a_client_reset_and_keeps_serving(target: Target) -> None:
    """A client resets after 1 MiB: that connection ends 'reset' with at most what it sent,
    while a transfer beside it completes exactly and the server serves on.

    Twisted's asyncio reactor on uvloop never hears of a reset that arrives before it
    starts reading (uvloop issue 552: connection_lost not called under Twisted): only the
    idle timeout ends that connection, so there the outcome is 'timeout'."""
    missed_by_framework = target == Target("twisted", "uvloop")
    with ServerProcess(target, "--digest", "sha256", "--idle-timeout", "3") as server:
        steady = Payload(8 * MiB, pattern="random")
        beside = threading.Thread(target=neutral_send, args=(server.port, steady, 64 * 1024))
        beside.start()
        with socket.create_connection((LOCALHOST, server.port), timeout=WAIT) as sock:
            sock.sendall(b"x" * MiB)
            reset(sock)
        beside.join(WAIT)
        events = server.received(2)
        after = neutral_send(server.port, Payload(1000))
        (last,) = server.received()
        stopped = server.stop()
    by_outcome = {e["outcome"]: e for e in events}
    expected = {"timeout", "eof"} if missed_by_framework else {"reset", "eof"}
    assert set(by_outcome) <= {"reset", "timeout", "eof"}
    assert set(by_outcome) == expected or (
        missed_by_framework and set(by_outcome) == {"reset", "eof"}
    ), events
    ended = by_outcome.get("reset") or by_outcome["timeout"]
    assert ended["bytes"] <= MiB
    eof = by_outcome["eof"]
    assert (eof["bytes"], eof["sha256"]) == (steady.size, steady.sha256())
    assert (last["bytes"], last["outcome"]) == (after, "eof")
    assert stopped["bytes"] == sum(e["bytes"] for e in [*events, last])


def test_idle_timeout_closes_a_stalled_client_only(target: Target) -> None:
    """A client that goes silent is closed with outcome 'timeout' after --idle-timeout;
    one that keeps sending is not affected."""
    with ServerProcess(target, "--idle-timeout", "0.5") as server:
        with socket.create_connection((LOCALHOST, server.port), timeout=WAIT) as stalled:
            stalled.sendall(b"foobar\n")
            neutral_send(server.port, Payload(4 * MiB))
            events = server.received(2)
        stopped = server.stop()
    by_outcome = {e["outcome"]: e for e in events}
    assert by_outcome["timeout"]["bytes"] == 7
    assert by_outcome["eof"]["bytes"] == 4 * MiB
    assert stopped["outcomes"] == {"timeout": 1, "eof": 1}


def test_client_waits_for_a_clogged_sink_without_growing(target: Target) -> None:
    """The sink stops reading for a second: the client blocks with bounded memory, keeps
    ticking, and completes exactly once the sink reads again."""
    with ClogSink() as sink:
        result: list[object] = []
        sender = threading.Thread(
            target=lambda: result.append(run_client(target, sink.port, "--size", "256MiB"))
        )
        sender.start()
        assert sink.connected.wait(WAIT)
        time.sleep(1.0)  # the clog lasts a while (pacing the scenario, not synchronising)
        sink.release()
        sender.join(WAIT)
        (arrival,) = sink.wait()
    (run,) = result
    sent = run.sent  # type: ignore[attr-defined]
    assert arrival.bytes == sent["bytes"] == 256 * MiB
    assert sent["peak_rss_kib"] < 96 * 1024, sent  # a buffered payload would be 256 MiB more
    assert sent["ticks"] >= max(30, sent["seconds"] / 0.010 / 3), sent


def test_server_holds_1000_concurrent_connections(target: Target) -> None:
    """1000 connections × 256 KiB at once: every byte counted, nothing refused."""
    limit = registry.get(target.impl).loop(target.loop).max_connections
    if limit is not None and limit < 1000:
        pytest.skip(f"the {target.loop} loop watches at most {limit} connections (FD_SETSIZE)")
    with ServerProcess(target) as server:
        run = run_client(
            target, server.port, "--size", "256KiB", "--connections", "1000", timeout=300
        )
        events = server.received(1000, timeout=300)
        stopped = server.stop()
    assert run.sent["bytes"] == 1000 * 256 * 1024
    assert all(e["bytes"] == 256 * 1024 and e["outcome"] == "eof" for e in events)
    assert (stopped["connections"], stopped["bytes"], stopped["rejected"]) == (
        1000,
        1000 * 256 * 1024,
        0,
    )


def test_server_refuses_beyond_max_connections_and_serves_on(target: Target) -> None:
    """With --max-connections 3, a fourth connection is closed at once and reported;
    once the others end, new connections are served again."""
    with ServerProcess(target, "--max-connections", "3") as server:
        baseline = open_fds(server.proc.pid)
        held = [socket.create_connection((LOCALHOST, server.port), timeout=WAIT) for _ in range(3)]
        for sock in held:
            sock.sendall(b"x")
        wait_until(lambda: open_fds(server.proc.pid) >= baseline + 3, what="three accepted")
        extra = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        rejected = server.next_event()
        with contextlib.suppress(ConnectionResetError):  # Twisted aborts with an RST
            assert extra.recv(1) == b""  # the others close with a FIN
        extra.close()
        for sock in held:
            sock.close()
        server.received(3)
        after = neutral_send(server.port, Payload(1000))
        (last,) = server.received()
        stopped = server.stop()
    assert rejected["event"] == "rejected" and rejected["open"] == 3
    assert (last["bytes"], last["outcome"]) == (after, "eof")
    assert stopped["rejected"] == 1 and stopped["connections"] == 4


def _slow_send(port: int, pieces: int, started: threading.Event) -> None:
    with socket.create_connection((LOCALHOST, port), timeout=WAIT) as sock:
        for _ in range(pieces):
            sock.sendall(b"x" * 1000)
            started.set()
            time.sleep(0.05)  # a slow client, by design


def test_shutdown_honours_the_grace_period(target: Target) -> None:
    """SIGTERM with transfers in flight: a transfer that ends within --grace ends 'eof',
    one that would not is 'aborted' after it, and the totals match the events."""
    with ServerProcess(target, "--grace", "2") as server:
        baseline = open_fds(server.proc.pid)
        started = threading.Event()
        finishing = threading.Thread(target=_slow_send, args=(server.port, 10, started))
        finishing.start()
        stalled = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        stalled.sendall(b"foobar\n")
        assert started.wait(WAIT)
        wait_until(lambda: open_fds(server.proc.pid) >= baseline + 2, what="both accepted")
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        events = server.received(2)
        stopped = server.stop_event()
        waited = time.monotonic() - signalled
        finishing.join(WAIT)
        stalled.close()
    by_outcome = {e["outcome"]: e for e in events}
    assert by_outcome["eof"]["bytes"] == 10_000
    assert by_outcome["aborted"]["bytes"] == 7
    assert 1.5 <= waited < 2 + WAIT / 2
    assert stopped["connections"] == 2
    assert stopped["bytes"] == sum(e["bytes"] for e in events)


def test_a_second_signal_stops_at_once(target: Target) -> None:
    """A second signal cuts a long grace period short: the stalled transfer is aborted."""
    with ServerProcess(target, "--grace", "60") as server:
        baseline = open_fds(server.proc.pid)
        stalled = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        stalled.sendall(b"foobar\n")
        wait_until(lambda: open_fds(server.proc.pid) >= baseline + 1, what="accepted")
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # two distinct signals, not one coalesced pair
        server.proc.send_signal(signal.SIGINT)
        (event,) = server.received()
        stopped = server.stop_event()
        stalled.close()
    assert event["outcome"] == "aborted"
    assert time.monotonic() - signalled < 30
    assert stopped["outcomes"] == {"aborted": 1}


def test_server_memory_stays_bounded_under_a_fast_sender(target: Target) -> None:
    """A client sending as fast as it can cannot grow the server: it counts and drops."""
    with ServerProcess(target) as server:
        neutral_send(server.port, Payload(512 * MiB, pattern="zeros"), 1024 * 1024)
        server.received()
        stopped = server.stop()
    assert stopped["peak_rss_kib"] < 80 * 1024, stopped
