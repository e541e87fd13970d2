"""Every sink server, driven by the neutral stdlib-socket client."""

from __future__ import annotations

import random
import signal
import socket
import threading
import time

import pytest

from harness import LOCALHOST, ServerProcess, Target, neutral_send
from nbio.common.payload import TALK_SIZE, Payload

SIZES = [0, 1, 65535, 65536, 65537, *sorted(random.Random(863).sample(range(2, 8 << 20), 3))]


@pytest.mark.readiness
def test_sink_counts_every_byte(target: Target) -> None:
    """The sink counts exactly the bytes a plain socket client sent, and hashes them right,
    for each size (around a 64 KiB read, and random ones), one connection after another."""
    with ServerProcess(target, "--digest", "sha256") as server:
        for size in SIZES:
            payload = Payload(size, pattern="random", seed=size)
            assert neutral_send(server.port, payload) == size
            (received,) = server.received()
            assert (received["bytes"], received["outcome"]) == (size, "eof"), size
            assert received["sha256"] == payload.sha256(), size
        server.stop()


def test_sink_counts_the_talks_payload(target: Target) -> None:
    """The talk's 73,400,320 bytes of foobar arrive whole, in order."""
    payload = Payload(TALK_SIZE)
    with ServerProcess(target, "--digest", "sha256") as server:
        neutral_send(server.port, payload)
        (received,) = server.received()
        server.stop()
    assert (received["bytes"], received["sha256"]) == (TALK_SIZE, payload.sha256())


@pytest.mark.readiness
def test_sink_serves_100_concurrent_connections(target: Target) -> None:
    """A hundred clients at once each get their own exact count."""
    payload = Payload(64 * 1024 + 7, pattern="random")
    with ServerProcess(target, "--digest", "sha256") as server:
        barrier = threading.Barrier(100)
        errors: list[BaseException] = []

        def client() -> None:
            try:
                barrier.wait(timeout=30)
                neutral_send(server.port, payload)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        received = server.received(100)
        stopped = server.stop()
    assert {(r["bytes"], r["sha256"], r["outcome"]) for r in received} == {
        (payload.size, payload.sha256(), "eof")
    }
    assert len({r["peer"] for r in received}) == 100
    assert stopped["connections"] == 100
    assert stopped["bytes"] == 100 * payload.size


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sink_stops_on_signal_with_totals(target: Target, signum: int) -> None:
    """A signal stops the sink with exit 0 and totals equal to the per-connection events."""
    with ServerProcess(target) as server:
        for size in (10, 20_000, 300_000):
            neutral_send(server.port, Payload(size))
        received = server.received(3)
        stopped = server.stop(signum)
    assert stopped["connections"] == 3
    assert stopped["bytes"] == sum(r["bytes"] for r in received) == 320_010
    assert stopped["outcomes"] == {"eof": 3}


def test_sink_names_its_loop_and_listens_on_loopback(target: Target) -> None:
    """The listening event names the implementation and loop, on 127.0.0.1 by default."""
    with ServerProcess(target) as server:
        listening = server.listening
        server.stop()
    assert listening["impl"] == target.impl
    assert listening["loop"] == target.loop
    assert listening["host"] == LOCALHOST
    assert 0 < listening["port"] < 65536
    assert listening["loop_impl"]


@pytest.mark.readiness
def test_sink_ticks_while_a_connection_is_open(target: Target) -> None:
    """The server's 10 ms ticker keeps firing while a client trickles data for at least
    0.3 s, and each received event carries that connection's loop-delay figures."""
    with ServerProcess(target) as server:
        with socket.create_connection((LOCALHOST, server.port), timeout=30) as sock:
            opened = time.monotonic()
            while time.monotonic() - opened < 0.3:  # paces the client; nothing waits on it
                sock.sendall(b"foobar\n")
                time.sleep(0.01)
        (received,) = server.received()
        server.stop()
    delay = received["loop_delay_ms"]
    assert set(delay) == {"p50", "p99", "max"}
    assert delay["p50"] <= delay["max"]
    assert delay["p99"] is None  # fewer than 100 ticks: no p99 that is only the max
    assert received["ticks"] >= 5  # 30 are due; a starved loop would have far fewer
