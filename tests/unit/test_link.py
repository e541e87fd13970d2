"""The link of ``compare --link``: rates as people type them, what privileges it needs, and
(as root, with iproute2) real namespaces that carry a transfer at no more than the rate and
are gone afterwards, whatever ended the ``with``."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbio import link
from nbio.link import Link, capability_problem, format_rate, parse_rate

# The capability sets of /proc/self/status: root's (every capability of 6.x), and root's
# with CAP_NET_ADMIN (bit 12) or CAP_SYS_ADMIN (bit 21) taken away, as setpriv does.
ROOT_CAPS = 0x1FFFFFFFFFF
STATUS = """Name:\tpython3
Umask:\t0022
State:\tR (running)
Uid:\t0\t0\t0\t0
CapInh:\t0000000000000000
CapPrm:\t{caps:016x}
CapEff:\t{caps:016x}
CapBnd:\t{caps:016x}
CapAmb:\t0000000000000000
NoNewPrivs:\t0
"""
WAIT = 60.0


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("1gbit", 10**9),
        ("10gbit", 10**10),
        ("500mbit", 500 * 10**6),
        ("1000kbit", 10**6),
        ("2500000bit", 2_500_000),
        ("1GBit", 10**9),
        ("2.5gbit", 2_500_000_000),
        (" 100 mbit ", 10**8),
        ("100gbit", 100 * 10**9),
    ],
)
def test_parse_rate_reads_tc_style_si_rates(text: str, bits: int) -> None:
    """tc's units, SI and case-insensitive: 1gbit is 10**9 bits per second."""
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a rate"),
        ("fast", "not a rate"),
        ("gbit", "not a rate"),
        ("1gbit2", "not a rate"),
        ("-1gbit", "negative"),
        ("0gbit", "above zero"),
        ("0", "unknown unit ''"),
        ("1000000", "unknown unit ''"),
        ("5xbit", "unknown unit 'xbit'"),
        ("1gib", "unknown unit"),
        ("1gbps", "bytes per second"),
        ("\u0661gbit", "not a rate"),  # ARABIC-INDIC DIGIT ONE
        ("\uff11gbit", "not a rate"),  # FULLWIDTH DIGIT ONE
        ("1.5bit", "whole number"),
        ("100kbit", "below the minimum of 1 Mbit/s"),
        ("999999bit", "below the minimum"),
        ("101gbit", "above the maximum of 100 Gbit/s"),
        ("1tbit", "above the maximum"),
    ],
)
def test_parse_rate_refuses_with_a_one_line_reason(text: str, message: str) -> None:
    """Each bad rate names what is wrong with it, in one line."""
    with pytest.raises(ValueError, match=message) as refused:
        parse_rate(text)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("bits", "text"),
    [
        (10**9, "1 Gbit/s"),
        (10**10, "10 Gbit/s"),
        (2_500_000_000, "2.5 Gbit/s"),
        (500 * 10**6, "500 Mbit/s"),
        (100_000, "100 kbit/s"),
        (999, "999 bit/s"),
    ],
)
def test_format_rate_is_for_people(bits: int, text: str) -> None:
    """The largest unit the rate reaches, without trailing zeros."""
    assert format_rate(bits) == text


@given(st.integers(min_value=1, max_value=100_000))
def test_format_rate_reads_back_for_whole_megabits(megabits: int) -> None:
    """A rate of whole Mbit/s prints exactly, and its text, written as tc writes it, reads
    back as the same rate."""
    bits = megabits * 10**6
    assert parse_rate(format_rate(bits).removesuffix("/s").replace(" ", "")) == bits


@pytest.mark.parametrize(
    "caps",
    [
        0,
        ROOT_CAPS & ~(1 << 12),  # no CAP_NET_ADMIN: no veth, no qdisc
        ROOT_CAPS & ~(1 << 21),  # no CAP_SYS_ADMIN: ip netns add cannot mount
        1 << 12,
    ],
)
def test_a_process_without_both_capabilities_is_told_why(caps: int) -> None:
    """CapEff without CAP_NET_ADMIN or without CAP_SYS_ADMIN: one line naming them."""
    reason = capability_problem(STATUS.format(caps=caps))
    assert reason is not None
    assert "CAP_NET_ADMIN" in reason and "root" in reason and "\n" not in reason


@pytest.mark.parametrize("caps", [ROOT_CAPS, (1 << 12) | (1 << 21)])
def test_root_or_both_capabilities_is_enough(caps: int) -> None:
    """Root's capabilities, or just the two the link needs: nothing missing."""
    assert capability_problem(STATUS.format(caps=caps)) is None


@pytest.mark.parametrize("status", ["", "Name:\tx\n", "CapEff:\tnot-hex\n"])
def test_a_status_without_readable_capabilities_is_not_taken_for_root(status: str) -> None:
    """No CapEff line (not Linux), or one that cannot be read: a reason, not None."""
    assert capability_problem(status) is not None


def test_missing_iproute2_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the capabilities but without ip or tc on PATH, the reason is iproute2."""
    monkeypatch.setattr(link, "capability_problem", lambda status: None)
    monkeypatch.setattr("shutil.which", lambda name: None if name == "tc" else "/bin/ip")
    assert link.missing_privileges() == "--link needs ip and tc from iproute2"


def test_the_payload_ceiling_is_the_share_of_payload_in_each_frame() -> None:
    """tbf counts 1514-byte frames that carry 1448 bytes of payload each: 95.6 % of the
    rate, 119.55 MB/s at 1gbit."""
    ceiling = Link(10**9).payload_ceiling
    assert ceiling == 10**9 * 1448 // (8 * 1514) == 119_550_858


def test_the_bucket_always_holds_a_whole_gso_packet() -> None:
    """At every rate the bucket is at least 128 KiB (a 64 KiB GSO packet and its
    segments' headers fit, so tbf never segments in software) and at most 16 MiB (the
    first fill passes unshaped)."""
    for bits in (link.MIN_RATE, 10**8, 10**9, 10**10, link.MAX_RATE):
        assert 128 * 1024 <= link.burst_for(bits) <= 16 * 1024 * 1024
    assert link.burst_for(10**9) == 4_000_000  # 32 ms of 1gbit


def test_two_processes_get_different_addresses() -> None:
    """Each pid has its own /30 of 10.0.0.0/8, up to the largest pid Linux allows."""
    pairs = {pid: link._addresses(pid) for pid in (1, 2, 12345, 4194303)}
    assert len({server for server, _ in pairs.values()}) == len(pairs)
    assert pairs[1] == ("10.0.0.5", "10.0.0.6")
    assert pairs[4194303] == ("10.255.255.253", "10.255.255.254")


# -- Real namespaces: root (or both capabilities) and iproute2 only. --------------------

_MISSING = link.missing_privileges()
needs_link = pytest.mark.skipif(_MISSING is not None, reason=f"{_MISSING}: not running as root?")


def _namespaces() -> set[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=WAIT
    )
    return {line.split(" ", 1)[0] for line in listed.stdout.splitlines() if line}


def _ours(made: Link) -> set[str]:
    return {made.server_namespace, made.client_namespace} & _namespaces()


@needs_link
@pytest.mark.timeout(60)
def test_a_link_is_there_while_open_and_gone_after() -> None:
    """Entering makes both namespaces, with tbf at the rate on both ends; exiting leaves
    none of them behind."""
    made = Link(parse_rate("1gbit"))
    with made:
        assert _ours(made) == {made.server_namespace, made.client_namespace}
        for namespace, device in (
            (made.server_namespace, "nbio-s"),
            (made.client_namespace, "nbio-c"),
        ):
            qdisc = subprocess.run(
                ["tc", "-n", namespace, "qdisc", "show", "dev", device],
                capture_output=True,
                text=True,
                check=True,
                timeout=WAIT,
            ).stdout
            assert "tbf" in qdisc and "rate 1Gbit" in qdisc
    assert _ours(made) == set()


@needs_link
@pytest.mark.timeout(60)
def test_an_exception_inside_the_with_leaves_nothing_behind() -> None:
    """The exception goes through, and the namespaces are gone."""
    made = Link(parse_rate("100mbit"))
    with pytest.raises(KeyboardInterrupt), made:
        raise KeyboardInterrupt
    assert _ours(made) == set()


@needs_link
@pytest.mark.timeout(60)
def test_two_links_of_one_process_are_apart() -> None:
    """Two links open at once have namespaces of their own, and both go."""
    with Link(10**9) as first, Link(10**8) as second:
        assert first.server_namespace != second.server_namespace
        assert len(_ours(first) | _ours(second)) == 4
    assert _ours(first) | _ours(second) == set()


# A process that holds a link as nbio does: its handlers turn SIGINT and SIGTERM into a
# KeyboardInterrupt. It says "entering" just before it enters, and once the interrupt is
# through, while it still runs (before any atexit hook could help), which of its pid's
# namespaces are left.
_HOLDER = """
import os, signal, subprocess, sys, time
from nbio.link import Link
def stop(signum, frame):
    raise KeyboardInterrupt(signum)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
try:
    print("entering", flush=True)  # in the try: a signal can land as print() returns
    with Link(10**9):
        time.sleep(30)
except KeyboardInterrupt:
    pass
listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
print([name for name in listed.split() if name.startswith(f"nbio-{os.getpid()}-")])
"""


@needs_link
@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_setup_or_use_leaves_nothing_behind(signum: int) -> None:
    """A signal at any moment from just before setup to well into the ``with`` (setup
    takes about 20 ms): once the interrupt is through, no namespace of the process is
    left, and none after it exits."""
    for delay in (0.0, 0.002, 0.005, 0.008, 0.012, 0.02, 0.05, 0.2):
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        assert holder.stdout.readline() == "entering\n"
        time.sleep(delay)
        holder.send_signal(signum)
        left_inside = holder.stdout.read()
        holder.wait(WAIT)
        holder.stdout.close()
        assert left_inside == "[]\n", f"signalled after {delay} s"
        left = {name for name in _namespaces() if name.startswith(f"nbio-{holder.pid}-")}
        assert left == set(), f"signalled after {delay} s"


@needs_link
@pytest.mark.timeout(60)
def test_the_namespaces_of_a_dead_process_are_removed_on_enter() -> None:
    """A process killed with SIGKILL runs nothing: the next Link removes what it left."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(WAIT)
    stale = f"nbio-{dead.pid}-0-s"
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=WAIT)
    try:
        with Link(10**9):
            assert stale not in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, timeout=WAIT)


# The sink: binds in the server's namespace, hashes and counts until EOF, times first byte
# to EOF. The sender: connects from the client's namespace, sends, half-closes, waits for
# the sink's close.
_SINK = """
import hashlib, json, socket, sys, time
server = socket.create_server((sys.argv[1], 0))
server.settimeout(30)
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.settimeout(30)
digest, count, first, buffer = hashlib.sha256(), 0, None, bytearray(256 * 1024)
while n := conn.recv_into(buffer):
    first = first or time.monotonic()
    digest.update(buffer[:n])
    count += n
end = time.monotonic()
conn.close()
print(json.dumps({"bytes": count, "sha256": digest.hexdigest(), "seconds": end - first}))
"""
_SENDER = """
import socket, sys
payload = bytes(range(256)) * (int(sys.argv[3]) // 256)
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
conn.sendall(payload)
conn.shutdown(socket.SHUT_WR)
assert conn.recv(1) == b""
"""


@needs_link
@pytest.mark.timeout(60)
def test_a_transfer_across_the_link_arrives_whole_at_no_more_than_the_rate() -> None:
    """8 MiB from a process in the client's namespace to one in the server's: every byte
    arrives, and no faster than the link allows. The bound is the link's own arithmetic:
    tbf sends the frames that carry the payload at the rate, less the bucket's first fill
    (it passes unshaped), with 10 % for the clocks."""
    size = 8 * 1024 * 1024
    with Link(parse_rate("100mbit")) as made:
        sink = subprocess.Popen(
            [*made.server_prefix, sys.executable, "-c", _SINK, made.server_host],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sink.stdout is not None
            port = sink.stdout.readline().strip()
            subprocess.run(
                [
                    *made.client_prefix,
                    sys.executable,
                    "-c",
                    _SENDER,
                    made.server_host,
                    port,
                    str(size),
                ],
                check=True,
                timeout=WAIT,
            )
            report = json.loads(sink.stdout.read())
            assert sink.wait(WAIT) == 0
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
            if sink.stdout is not None:
                sink.stdout.close()
    assert report["bytes"] == size
    assert report["sha256"] == hashlib.sha256(bytes(range(256)) * (size // 256)).hexdigest()
    frames = size * link.FRAME / link.MSS
    fastest = size / ((frames - made.burst) / (made.rate_bits / 8))
    assert size / report["seconds"] <= 1.1 * fastest
