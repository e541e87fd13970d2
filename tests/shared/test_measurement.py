"""What every figure rests on, checked per implementation and loop: the settings reach the
processes and their events say so; spans, CPU and loop delay measure what their labels say.

A stall is made by stopping a process with SIGSTOP for 300 ms: its ticker must report it,
whether the stall ends in the middle of a transfer or only with the peer's EOF."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time

from harness import (
    LOCALHOST,
    WAIT,
    ClogSink,
    NeutralSink,
    ServerProcess,
    Target,
    neutral_send,
    run_client,
    run_nbio,
    wait_until,
)
from nbio.bench import command
from nbio.common.events import Listening, Received, Sent, Stopped
from nbio.common.loopdelay import DelayStats
from nbio.common.payload import Payload
from nbio.transfer import Transfer

MiB = 1024 * 1024
STALL = 0.3  # seconds a process is stopped for: the stimulus, not a synchronisation
SEEN = 250.0  # ms of loop delay that must show for it


def _stop(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped: kill() returns before
    a thread busy or blocked in a system call has, and one of them could otherwise still
    read what the test sends next (seen with the threaded server on a loaded machine)."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: _all_stopped(pid), what="every thread stopped")


def _all_stopped(pid: int) -> bool:
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/stat"
        with contextlib.suppress(OSError), open(path, encoding="ascii") as file:
            states.append(file.read().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def _stalled(pid: int) -> None:
    _stop(pid)
    time.sleep(STALL)
    os.kill(pid, signal.SIGCONT)


def _one_open(server: ServerProcess) -> socket.socket:
    """A connection the server's sink has opened, which we know because with
    ``--max-connections 1`` a second connection is then rejected and reported."""
    held = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
    held.sendall(b"x" * MiB)
    # The server's reset can beat connect()'s own return (seen in CI, twisted-asyncio, and
    # under load with gevent on libuv): either way, that is the rejection.
    with contextlib.suppress(ConnectionResetError):
        socket.create_connection((LOCALHOST, server.port), timeout=WAIT).close()
    assert server.next_event()["event"] == "rejected"
    return held


def test_a_server_stall_mid_transfer_shows_in_its_loop_delay(target: Target) -> None:
    """The server is stopped for 300 ms while a connection is open and sends more after:
    that connection's loop-delay max is at least 250 ms."""
    with ServerProcess(target, "--max-connections", "1") as server:
        held = _one_open(server)
        _stalled(server.proc.pid)
        held.sendall(b"x" * MiB)
        held.close()
        (received,) = server.received()
        server.stop()
    assert received["bytes"] == 2 * MiB
    assert received["loop_delay_ms"]["max"] >= SEEN, received


def test_a_server_stall_that_ends_with_eof_shows_in_its_loop_delay(target: Target) -> None:
    """The server is stopped, and the peer sends its last bytes and closes meanwhile: when
    it resumes the EOF is handled before its overdue tick fires, and the close samples it."""
    with ServerProcess(target, "--max-connections", "1") as server:
        held = _one_open(server)
        _stop(server.proc.pid)
        try:
            held.sendall(b"x" * 1000)  # fits in the kernel's buffers: nothing blocks
            held.close()
            time.sleep(STALL)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        (received,) = server.received()
        server.stop()
    assert received["bytes"] == MiB + 1000
    assert received["loop_delay_ms"]["max"] >= SEEN, received


def test_a_client_stall_mid_transfer_shows_in_its_loop_delay(target: Target) -> None:
    """The client is stopped for 300 ms while it waits for a clogged sink: its loop-delay
    max is at least 250 ms, and every byte still arrives."""
    with ClogSink() as sink:
        client = subprocess.Popen(
            command("send", target, "--port", str(sink.port), "--size", "64MiB"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert sink.connected.wait(WAIT)  # it connected: its loop and ticker run
            _stalled(client.pid)
            sink.release()
            stdout, stderr = client.communicate(timeout=WAIT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        (arrival,) = sink.wait()
    assert client.returncode == 0, stderr
    sent = json.loads(stdout.splitlines()[-1])
    assert arrival.bytes == sent["bytes"] == 64 * MiB
    assert sent["loop_delay_ms"]["max"] >= SEEN, sent


def test_a_client_stall_that_ends_with_the_sinks_close_shows_in_its_loop_delay(
    target: Target,
) -> None:
    """The client has sent everything and waits for the sink's close; it is stopped, the
    sink closes meanwhile, and it resumes: it sees the close before its overdue tick fires,
    and stopping its ticker samples that tick."""
    with socket.create_server((LOCALHOST, 0)) as listener:
        client = subprocess.Popen(
            command("send", target, "--port", str(listener.getsockname()[1]), "--size", "64KiB"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            listener.settimeout(WAIT)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                while conn.recv(65536):  # everything, up to the client's half-close
                    pass
                _stop(client.pid)
            time.sleep(STALL)  # closed while the client is stopped
            client.send_signal(signal.SIGCONT)
            stdout, stderr = client.communicate(timeout=WAIT)
        finally:
            if client.poll() is None:
                client.send_signal(signal.SIGCONT)
                client.kill()
                client.wait()
    assert client.returncode == 0, stderr
    sent = json.loads(stdout.splitlines()[-1])
    assert sent["loop_delay_ms"]["max"] >= SEEN, sent


def test_every_connection_reports_its_span_so_throughput_is_over_the_wall_span(
    target: Target,
) -> None:
    """Two connections served one after the other each report when their first byte came
    and when they ended; the run's throughput is every byte over the span from the first to
    the last, which is at least the two connections' own times added up."""
    with ServerProcess(target) as server:
        listening = server.listening
        received = []
        for _ in range(2):
            neutral_send(server.port, Payload(8 * MiB))
            received += server.received()
        stopped = server.stop()
    transfer = Transfer(
        Listening.from_json(listening),
        Sent(bytes=0, sha256=None, seconds=0.0, connections=0, loop_delay=DelayStats(ticks=0)),
        [Received.from_json(r) for r in received],
        Stopped.from_json(stopped),
    )
    first, second = received
    assert first["ended_at"] <= second["first_byte_at"]
    assert transfer.server_seconds >= first["seconds"] + second["seconds"]
    assert transfer.server_mb_per_s <= 16 * MiB / (first["seconds"] + second["seconds"]) / 1e6


def test_client_cpu_is_the_transfers_not_its_start_up(target: Target) -> None:
    """A client's CPU runs from its first write (after imports, after its loop exists) to
    its last close: for 1 MiB, well under what the whole process used."""
    with NeutralSink() as sink:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = run_client(target, sink.port, "--size", "1MiB")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sink.wait()
    whole = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    assert 0 < run.sent["cpu_s"] < whole / 2, (run.sent["cpu_s"], whole)


def test_server_cpu_is_the_transfers_not_its_idling(target: Target) -> None:
    """A server's CPU over its connection's span leaves out the time it idled, ticking,
    before the connection came, which its CPU from listening to stopped includes."""
    with ServerProcess(target) as server:
        time.sleep(0.3)  # the idle time being left out: the stimulus, not a synchronisation
        neutral_send(server.port, Payload(1000))
        (received,) = server.received()
        stopped = server.stop()
    span = received["cpu_at_end"] - received["cpu_at_first_byte"]
    assert 0 <= span < stopped["cpu_s"], (span, stopped["cpu_s"])


def test_a_tune_knob_acts_and_is_in_the_events(target: Target) -> None:
    """--tune sets the attribute it names before the transfer, and each process says so:
    with MIN_TICKS_FOR_P99 set to 1, transfers too short for 100 ticks report a p99."""
    knob = "nbio.common.loopdelay.MIN_TICKS_FOR_P99"
    with ServerProcess(target, "--tune", f"{knob}=1") as server:
        with socket.create_connection((LOCALHOST, server.port), timeout=WAIT) as sock:
            opened = time.monotonic()
            while time.monotonic() - opened < 0.1:  # paces the client; nothing waits on it
                sock.sendall(b"foobar\n")
                time.sleep(0.01)
        (received,) = server.received()
        server.stop()
    with NeutralSink() as sink:
        run = run_client(target, sink.port, "--size", "256MiB", "--tune", f"{knob}=1")
        sink.wait()
    assert server.listening["tune"] == run.sent["tune"] == {knob: 1}
    for ticked in (received, run.sent):
        assert 0 < ticked["ticks"] < 100 and ticked["loop_delay_ms"]["p99"] is not None


def test_a_tune_knob_that_does_not_exist_is_bad_input() -> None:
    """A knob that names no whole-number attribute is refused before anything runs."""
    done = run_nbio("send", "--tune", "nbio.common.loopdelay.NO_SUCH_KNOB=1", "--port", "1")
    assert done.returncode == 2 and "no such whole-number attribute" in done.stderr
    assert done.stderr.count("\n") == 1
