"""Echo mode, every implementation and loop: ``nbio serve --mode echo`` writes back every
byte it reads, in order, through its framework's own write path and flow control, and
``nbio send --mode echo`` sends requests and checks every answer, timing each in a
histogram: closed loop by default, open loop (from the schedule) with ``--rate``."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

from neutral import EchoServer, echo_exchange, messages

from harness import (
    LOCALHOST,
    WAIT,
    ServerProcess,
    Target,
    open_fds,
    reset,
    run_client,
    wait_until,
)

KiB, MiB = 1024, 1024 * 1024


def test_echo_server_returns_every_byte_in_order(target: Target) -> None:
    """One byte, 65,537 bytes and 1 MiB, each on a connection of its own, and 1000
    messages of 1 KiB sent back to back without waiting (many in flight): each comes back
    whole and in order, and each connection reports the bytes in and out, ending ``eof``."""
    cases = [[b"x"], messages(65537, 1), messages(MiB, 1), messages(KiB, 1000)]
    with ServerProcess(target, "--mode", "echo") as server:
        assert server.listening["mode"] == "echo"
        for sent in cases:
            assert echo_exchange(server.port, sent) == b"".join(sent)
            (received,) = server.received()
            total = sum(len(m) for m in sent)
            assert received["outcome"] == "eof", received
            assert received["bytes"] == received["bytes_out"] == total, received
        stopped = server.stop()
    assert stopped["bytes_out"] == stopped["bytes"] == sum(len(m) for c in cases for m in c)


def test_echo_client_checks_every_answer(target: Target) -> None:
    """Against a neutral echo server: 1-byte, 65,537-byte and 1 MiB requests on several
    connections, every one answered and timed; the ``sent`` event counts them, gives
    their latency percentiles and keeps the histogram."""
    with EchoServer() as server:
        for size, requests, connections in ((1, 200, 3), (65537, 10, 2), (MiB, 3, 1)):
            run = run_client(
                target, server.port, "--mode", "echo", "--message-size", str(size),
                "--requests", str(requests), "--connections", str(connections),
            )  # fmt: skip
            sent = run.sent
            count = requests * connections
            assert sent["mode"] == "echo" and sent["message_size"] == size, sent
            assert sent["bytes"] == size * count
            assert sent["request_latency_count"] == count
            latency = sent["request_latency_ms"]
            assert 0 < latency["p50"] <= latency["max"], latency
            assert sent["histogram"] and sent["requests_per_s"] > 0
            assert server.ended.get(timeout=WAIT) == "eof"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_peer_that_stops_reading_answers_holds_the_server_small(target: Target) -> None:
    """A peer writes 64 MiB and never reads what comes back: the server stops reading it
    (its writes are full), so its memory stays bounded, and another connection is served
    meanwhile; the peer's reset then ends its connection ``reset``."""
    with ServerProcess(target, "--mode", "echo") as server:
        before = _rss_kib(server.proc.pid)
        stuck = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        # Short waits, so that the flood can be stopped: a close while another thread is
        # blocked in send() leaves the socket alive, and its reset unsent, until that send
        # returns (seen: the reset went out at the socket's 60 s timeout).
        stuck.settimeout(0.2)
        written = [0]
        stop = threading.Event()

        def flood() -> None:
            chunk = memoryview(b"z" * (256 * KiB))
            while written[0] < 64 * MiB and not stop.is_set():
                try:
                    written[0] += stuck.send(chunk)
                except TimeoutError:
                    continue
                except OSError:
                    return

        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        try:
            # Both directions' buffers fill and the flood stops: the server read no more.
            wait_until(lambda: written[0] > 0, what="the flood to begin")
            settled = -1
            while settled != written[0]:
                settled = written[0]
                time.sleep(0.5)  # the flood is still (a rate, not a correctness check)
            assert written[0] < 64 * MiB, "the server read everything without echoing"
            sent = messages(KiB, 10)
            assert echo_exchange(server.port, sent) == b"".join(sent)
            (other,) = server.received()
            assert other["outcome"] == "eof" and other["bytes_out"] == 10 * KiB
            grown = _rss_kib(server.proc.pid) - before
            assert grown < 48 * 1024, f"grew {grown} KiB holding a peer that does not read"
        finally:
            stop.set()
            flooding.join(WAIT)
            reset(stuck)
        (ended,) = server.received()
        assert ended["outcome"] in ("reset", "error"), ended
        server.stop()


def test_a_reset_mid_answer_is_reported_and_disturbs_nothing(target: Target) -> None:
    """A peer sends 4 MiB, reads a little of the answer, and resets: its connection ends
    ``reset``, and the next connection is served whole."""
    with ServerProcess(target, "--mode", "echo") as server:
        sock = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        # Sent and read from this thread, never blocked in send(): the close() in reset()
        # does not end a send() another thread is blocked in, and the socket (and its
        # reset) then lives on until that send() returns, which it never does once the
        # server, its answers unread, stops reading (seen: ESTAB, 3.8 MB unsent, no event).
        sock.setblocking(False)
        flood = memoryview(b"r" * (4 * MiB))
        answer = b""
        while not answer:
            readable, writable, _ = select.select([sock], [sock] if flood else [], [], WAIT)
            assert readable or writable, "nothing sent or answered"
            if writable:
                flood = flood[sock.send(flood[: 256 * KiB]) :]
            if readable:
                answer = sock.recv(KiB)
        with contextlib.suppress(BlockingIOError):  # on until the kernel takes no more
            while flood:
                flood = flood[sock.send(flood[: 256 * KiB]) :]
        reset(sock)
        (ended,) = server.received()
        assert ended["outcome"] == "reset", ended
        sent = messages(KiB, 20)
        assert echo_exchange(server.port, sent) == b"".join(sent)
        (after,) = server.received()
        assert after["outcome"] == "eof"
        server.stop()


def test_open_loop_sends_at_its_rate(target: Target) -> None:
    """``--rate 200`` sends 200 requests a second on a fixed schedule: the neutral server
    sees them arrive at 200 ± 10 % a second."""
    with EchoServer(message_size=KiB) as server:
        run = run_client(
            target, server.port, "--mode", "echo", "--requests", "200", "--rate", "200"
        )
        assert run.sent["rate"] == 200 and run.sent["request_latency_count"] == 200
    assert len(server.arrivals) == 200
    # The median gap, not first to last: the schedule is absolute, so a client held up by a
    # busy machine sends the requests it owes at once and catches up, which one stall at
    # either end of the run would stretch into a lower rate (seen: 112/s, load 4 on 2 cores).
    gaps = sorted(b - a for a, b in itertools.pairwise(server.arrivals))
    rate = 1 / gaps[len(gaps) // 2]
    assert 180 <= rate <= 220, rate


def test_open_loop_with_a_duration_stops_on_time(target: Target) -> None:
    """``--duration 1`` with ``--rate 100``: no request is begun a second after the first,
    so about 100 are sent, however many ``--requests`` allows (the clock is read before
    each message: a stream's once per 256 would have sent 256, for 2.6 s)."""
    with EchoServer(message_size=KiB) as server:
        run = run_client(
            target, server.port, "--mode", "echo", "--requests", "100000", "--rate", "100",
            "--duration", "1",
        )  # fmt: skip
    count = run.sent["request_latency_count"]
    assert run.sent["duration"] == 1 and count == len(server.arrivals)
    # Request i is begun no earlier than i/100 s after the first: at most 101 are begun in
    # 1 s. At least some: a client held up by the machine sends late, never fewer than due.
    assert 10 <= count <= 101, count


def test_open_loop_latency_counts_a_stall_from_the_schedule(target: Target) -> None:
    """A server stopped for 200 ms in the middle of an open-loop run (1000 requests a
    second): the requests scheduled during the stall waited for it, and p99.9 shows it,
    where a closed loop would have sent them late and timed them from then."""
    stalled = Target("blocking")  # any server: the client's figures are under test
    with ServerProcess(stalled, "--mode", "echo") as server:
        before = open_fds(server.proc.pid)
        client = subprocess.Popen(
            [*_send(target, server.port), "--requests", "2000", "--rate", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: open_fds(server.proc.pid) > before, what="the client's connection")
        time.sleep(0.5)  # into the run: the stall's timing, not the test's correctness
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(0.2)
        os.kill(server.proc.pid, signal.SIGCONT)
        out, err = client.communicate(timeout=WAIT)
        assert client.returncode == 0, err
        server.received()
        server.stop()
    sent = json.loads(out.splitlines()[-1])
    assert sent["request_latency_count"] == 2000
    assert sent["request_latency_ms"]["p99.9"] >= 150, sent["request_latency_ms"]


def _send(target: Target, port: int) -> list[str]:
    from nbio.bench import command

    return command("send", target, "--port", str(port), "--mode", "echo")
