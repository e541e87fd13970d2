"""Every large-payload client, sending to the neutral stdlib-socket sink."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness import NeutralSink, Target, free_port, run_client
from nbio.common.payload import TALK_SIZE, Payload

SIZES = [0, 1, 65535, 65536, 65537, *sorted(random.Random(1234).sample(range(2, 8 << 20), 3))]
#: The sizes also run on every other loop: the sweep's edges are the client's code, the same
#: on every loop, and each loop is driven by every other test of the suite.
LOOP_SIZES = {0, 65537, SIZES[-1]}
MiB = 1024 * 1024


@pytest.mark.readiness
@pytest.mark.parametrize("size", SIZES)
def test_client_delivers_every_byte(target: Target, size: int) -> None:
    """Every byte the client reports sent reaches a plain socket sink, in order (every size
    on the default loop, the empty, the just-over-64-KiB and the largest on the others)."""
    if target.loop != "default" and size not in LOOP_SIZES:
        pytest.skip("the whole size sweep runs on the default loop")
    payload = Payload(size, pattern="random", seed=7)
    with NeutralSink() as sink:
        run = run_client(
            target,
            sink.port,
            "--size",
            str(size),
            "--pattern",
            "random",
            "--seed",
            "7",
            "--digest",
            "sha256",
        )
        (arrival,) = sink.wait()
    assert run.sent["bytes"] == size
    assert run.sent["sha256"] == payload.sha256()
    assert (arrival.bytes, arrival.sha256, arrival.outcome) == (size, payload.sha256(), "eof")


def test_client_sends_the_talks_payload_by_default(target: Target) -> None:
    """With no size or pattern, the client sends the talk's 73,400,320 bytes of foobar."""
    with NeutralSink() as sink:
        run = run_client(target, sink.port, "--digest", "sha256")
        (arrival,) = sink.wait()
    expected = Payload(TALK_SIZE).sha256()
    assert run.sent["bytes"] == arrival.bytes == TALK_SIZE
    assert run.sent["sha256"] == arrival.sha256 == expected


@pytest.mark.parametrize("pattern", ["zeros", "file"])
def test_client_sends_other_payloads(target: Target, pattern: str, tmp_path: Path) -> None:
    """Zeros and a file's bytes arrive exactly as produced."""
    if pattern == "file":
        path = tmp_path / "payload.bin"
        path.write_bytes(random.Random(3).randbytes(3 * MiB + 5))
        args, expected = ["--file", str(path)], Payload.from_file(str(path))
    else:
        args, expected = ["--pattern", "zeros", "--size", "3MiB"], Payload(3 * MiB, "zeros")
    with NeutralSink() as sink:
        run = run_client(target, sink.port, *args, "--digest", "sha256")
        (arrival,) = sink.wait()
    assert (arrival.bytes, arrival.sha256) == (expected.size, expected.sha256())
    assert run.sent["sha256"] == expected.sha256()


@pytest.mark.readiness
def test_client_opens_100_concurrent_connections(target: Target) -> None:
    """A hundred connections from one client process each deliver the whole payload."""
    payload = Payload(64 * 1024 + 7)
    with NeutralSink() as sink:
        run = run_client(target, sink.port, "--size", str(payload.size), "--connections", "100")
        arrivals = sink.wait(100)
    assert run.sent["connections"] == 100
    assert run.sent["bytes"] == 100 * payload.size
    assert {(a.bytes, a.sha256, a.outcome) for a in arrivals} == {
        (payload.size, payload.sha256(), "eof")
    }


def test_client_runs_at_most_concurrency_connections_at_once(target: Target) -> None:
    """--concurrency 3: twelve connections, never more than three open at the sink at once
    (a fourth starts only after one ended); each reports its connect-to-close latency."""
    payload = Payload(4 * 1024 * 1024)
    with NeutralSink() as sink:
        args = ["--size", str(payload.size), "--connections", "12", "--concurrency", "3"]
        run = run_client(target, sink.port, *args)
        arrivals = sink.wait(12)
    assert sink.most_open <= 3
    assert {(a.bytes, a.outcome) for a in arrivals} == {(payload.size, "eof")}
    assert run.sent["concurrency"] == 3 and run.sent["bytes"] == 12 * payload.size
    assert run.sent["latency_count"] == 12
    assert 0 < run.sent["latency_ms"]["p50"] <= run.sent["latency_ms"]["max"]


@pytest.mark.readiness
def test_a_1GiB_send_keeps_ticking_and_buffers_nothing(target: Target) -> None:
    """The talk's other_task: the client's 10 ms ticker keeps firing while 1 GiB goes out
    (long enough for a dozen ticks even at 8 GB/s); and the client's peak RSS stays within
    10 MiB of its peak for 1 MiB: it streams the payload, never buffers it."""
    runs = {}
    for size in ("1MiB", "1GiB"):
        with NeutralSink() as sink:
            runs[size] = run_client(target, sink.port, "--size", size, timeout=120).sent
            (arrival,) = sink.wait(timeout=120)
        assert arrival.bytes == runs[size]["bytes"]
    sent = runs["1GiB"]
    due = sent["seconds"] / 0.010
    # Generous: a third of the ticks that were due (a starved loop gets a handful).
    assert sent["ticks"] >= max(3, due / 3), sent
    assert sent["loop_delay_ms"]["p50"] <= sent["loop_delay_ms"]["max"]
    peaks = {size: run["peak_rss_kib"] for size, run in runs.items()}
    assert peaks["1GiB"] - peaks["1MiB"] <= 10 * 1024, peaks


@pytest.mark.readiness
def test_client_reports_a_refused_connection(target: Target) -> None:
    """Nobody listening: exit 1, one line on stderr, and an error event saying 0 bytes."""
    run = run_client(target, free_port(), "--size", "1MiB")
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert "refused" in run.stderr and "Traceback" not in run.stderr
    assert run.events == [{"event": "error", "message": "connection refused", "bytes": 0}]
