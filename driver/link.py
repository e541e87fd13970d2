"""A link of a chosen rate between two network namespaces: the mechanism of ``nbio compare
--link RATE``.

Over loopback, two processes on two shared cores race their schedulers, and the faster
framework is partly the one that happens to be scheduled better. Across a :class:`Link`
every framework meets the same bottleneck, a ``tbf`` qdisc at RATE, and what separates them
is the CPU each side spends per GiB to keep the link full (netperf's "service demand")::

    with Link(parse_rate("1gbit")) as link:
        server = subprocess.Popen([*link.server_prefix, *serve, "--host", link.server_host])
        client = subprocess.run([*link.client_prefix, *send, "--host", link.server_host])

Two namespaces, ``nbio-PID-N-s`` (the server's) and ``nbio-PID-N-c`` (the client's), joined
by a veth pair at MTU 1500 with ``tbf`` on both ends; nothing is created in the namespace we
run in. ``ip netns exec`` execs the command in place (the pid the caller gets is the
command's own, not a wrapper's), so it can be signalled and waited for as it is without a
prefix. Making a link needs ``ip`` and ``tc`` (iproute2) and CAP_NET_ADMIN with
CAP_SYS_ADMIN, which root has: :func:`missing_privileges` says what is missing.

The namespaces go away on exit from the ``with``, on an exception inside it (a
KeyboardInterrupt raised by a SIGINT or SIGTERM handler included), at interpreter exit
(``atexit``) if the ``with`` never got to end, and otherwise (SIGKILL, or SIGTERM with no
handler: no Python code runs) on the next :class:`Link` of any process, through
:func:`remove_stale`.

Every figure in the comments below was measured on a shared 2-core VM (Linux 6.18,
Python 3.11, BBR congestion control, other work keeping the cores 12-100 % busy) with a
blocking-socket sender (``sendall`` of 256 KiB, a thread per connection) and receiver
(``recv_into`` one buffer), and with iperf3 3.12, 3 s per run, each side's CPU from
``wait4``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from types import TracebackType

__all__ = [
    "FRAME",
    "LATENCY_MS",
    "MAX_RATE",
    "MIN_RATE",
    "MSS",
    "MTU",
    "PREFIX",
    "Link",
    "LinkError",
    "burst_for",
    "capability_problem",
    "format_rate",
    "missing_privileges",
    "parse_rate",
    "remove_stale",
]

#: Below 1 Mbit/s the smallest bucket (:data:`MIN_BURST`) is a whole second of the link, and
#: 256 MiB would take 36 minutes: not a benchmark any more.
MIN_RATE = 10**6
#: Far above what two cores can push through veth (1.0-1.8 GB/s, 8-14 Gbit/s, unshaped,
#: one stream): a rate above it is a typo.
MAX_RATE = 100 * 10**9

# tc's rate units, SI as in tc: 1gbit is 10**9 bit/s. Not tc's "bps" family, which is bytes
# per second ("1gbps" is 8 Gbit/s): a unit that surprising is refused, with a hint.
_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
# ASCII digits only: int() would also take "١" or a full-width "１".
_RATE = re.compile(r"^ *(?P<number>[0-9]+(?:\.[0-9]+)?) *(?P<unit>[A-Za-z]*) *$")

CAP_NET_ADMIN = 12  # links, addresses, qdiscs
CAP_SYS_ADMIN = 21  # "ip netns add" mounts the namespace; "ip netns exec" enters it

#: The veth's MTU, set explicitly: :attr:`Link.payload_ceiling` depends on it.
MTU = 1500
#: What tbf counts per segment: the IP packet and the 14-byte Ethernet header (qdiscs see
#: the frame without preamble or FCS; for a GSO packet, every segment's headers).
FRAME = MTU + 14
#: TCP payload per segment: the MTU less 20 bytes of IP, 20 of TCP and 12 of the timestamp
#: option Linux puts on every segment (net.ipv4.tcp_timestamps=1, the default).
MSS = MTU - 20 - 20 - 12

#: tbf's queue, as the time its fullest queue takes to drain (tc turns it into a byte
#: limit of RATE × LATENCY plus the bucket). 1000 connections of 1 MiB starting at once
#: overflow any reasonable queue: at 1gbit, 10 ms refused 5.5 % of transmissions and
#: 200 ms still 2.4 %, while the rate (98.8-100.4 % of the payload ceiling) and the CPU per
#: GiB did not change with it. A refusal at the local qdisc is not a loss on the wire: TCP
#: sends the same segment again later (the bytes tbf sent were within 0.03 % of the
#: payload's frames, what 1000 handshakes and FINs take). So the shortest queue that keeps
#: one stream at the ceiling, and RTTs near the real ones.
LATENCY_MS = 10
#: The bucket's floor. tbf passes a GSO packet whole only if it fits in the bucket, and
#: segments it in software otherwise: veth's packets are up to 64 KiB (gso_max_size
#: 65536), ~68 KB with every segment's headers. At 1gbit, one stream with a bucket of
#: 16 KiB or 64 KiB cost 2.5-3.2 s/GiB on each side and reached 83-96 % of the ceiling;
#: with 128 KiB and more, 0.3-0.4 s/GiB sending, 0.55-0.75 receiving, 99-100 %.
MIN_BURST = 128 * 1024
#: The bucket's ceiling (see :func:`burst_for`): reached from 4.2gbit up.
MAX_BURST = 16 * 1024 * 1024
#: The bucket holds this much of the link's time, between the floor and the ceiling.
BURST_SECONDS = 0.032

#: Every namespace a Link makes starts with this, then the pid of the process that made it.
PREFIX = "nbio-"
_NAME = re.compile(r"^nbio-(?P<pid>[0-9]+)-")
_SERVER_DEVICE = "nbio-s"
_CLIENT_DEVICE = "nbio-c"
# ip and tc answer in milliseconds; a command that takes this long is stuck.
_TIMEOUT = 30.0
_HELD = {signal.SIGINT, signal.SIGTERM}
# Links of this process, one number each: a process may hold two at once.
_serial = itertools.count()
# The namespaces this process's open Links own: remove_stale must leave them alone even
# though their pid is alive (ours).
_owned: set[str] = set()


class LinkError(RuntimeError):
    """A command that builds or removes a link failed; the message names it and what it
    said, in one line."""


def parse_rate(text: str) -> int:
    """Bits per second from tc-style text (``1gbit``, ``500mbit``, ``100kbit``,
    ``2500000bit``, ``2.5gbit``; case-insensitive, SI: ``1gbit`` is 10**9), between
    :data:`MIN_RATE` and :data:`MAX_RATE`; otherwise ValueError with a one-line reason."""
    match = _RATE.match(text)
    if match is None:
        if text.strip().startswith("-"):
            raise ValueError(f"a rate must not be negative: {text!r}")
        raise ValueError(f"not a rate: {text!r} (try 1gbit, 500mbit or 10gbit)")
    unit: str = match["unit"].lower()
    if unit not in _UNITS:
        hint = " (tc's bps is bytes per second: write bit)" if unit.endswith("bps") else ""
        raise ValueError(
            f"unknown unit {match['unit']!r} in {text!r}: use bit, kbit, mbit or gbit{hint}"
        )
    number: str = match["number"]
    whole, _, fraction = number.partition(".")
    # Exact integer arithmetic, as for sizes: 2.5gbit is 2500000000, 1.5bit an error.
    numerator = int(whole + fraction) * _UNITS[unit]
    denominator: int = 10 ** len(fraction)
    if numerator % denominator:
        raise ValueError(f"{text!r} is not a whole number of bits per second")
    bits = numerator // denominator
    if bits == 0:
        raise ValueError(f"a rate must be above zero: {text!r}")
    if bits < MIN_RATE:
        raise ValueError(f"rate {text!r} is below the minimum of {format_rate(MIN_RATE)}")
    if bits > MAX_RATE:
        raise ValueError(f"rate {text!r} is above the maximum of {format_rate(MAX_RATE)}")
    return bits


def format_rate(bits: int) -> str:
    """A rate for people: ``1 Gbit/s``, ``2.5 Gbit/s``, ``500 Mbit/s``."""
    for unit, scale in (("Tbit/s", 10**12), ("Gbit/s", 10**9), ("Mbit/s", 10**6)):
        if bits >= scale:
            return f"{bits / scale:g} {unit}"
    if bits >= 10**3:
        return f"{bits / 10**3:g} kbit/s"
    return f"{bits} bit/s"


def capability_problem(status: str) -> str | None:
    """Why a process whose ``/proc/PID/status`` reads ``status`` cannot make a link, or
    None. Root has every capability; anyone else needs CAP_NET_ADMIN (veth, addresses,
    qdiscs) and CAP_SYS_ADMIN in the effective set (CapEff): measured with ``setpriv``,
    ``ip netns add`` fails without CAP_SYS_ADMIN ("mount --make-shared /run/netns failed:
    Operation not permitted") even with CAP_NET_ADMIN."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "CapEff":
            try:
                effective = int(value.strip(), 16)
            except ValueError:
                break
            needed = (1 << CAP_NET_ADMIN) | (1 << CAP_SYS_ADMIN)
            if effective & needed != needed:
                return (
                    "--link needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN "
                    "(it creates network namespaces)"
                )
            return None
    return "--link needs Linux network namespaces (no capabilities in /proc/self/status)"


def missing_privileges() -> str | None:
    """Why this process cannot make a link, in one line, or None if it can: it has the
    capabilities (:func:`capability_problem`) and ``ip`` and ``tc`` are on PATH."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as file:
            status = file.read()
    except OSError:
        return "--link needs Linux network namespaces"
    problem = capability_problem(status)
    if problem is not None:
        return problem
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "--link needs ip and tc from iproute2"
    return None


def burst_for(rate_bits: int) -> int:
    """tbf's bucket, in bytes, for a link of ``rate_bits``: :data:`BURST_SECONDS` of the
    link (4 MB at 1gbit), no less than :data:`MIN_BURST` and no more than
    :data:`MAX_BURST` (16 MiB, 13 ms at 10gbit).

    The bucket is how long the link can go unused and still catch up: tokens the sender
    did not use while it, or the softirq that feeds the link, waited for a CPU stay in the
    bucket, up to the burst. With the machine 85-100 % busy with other work, one stream at
    1gbit reached 88.5-100.3 % of the ceiling with a bucket of 256 KiB or 1 MiB (2 or 8 ms
    of the link), and 99.9-101.1 % with 4 MB (11 runs each, Python and iperf3). At 10gbit,
    where the CPU is the limit (one unshaped stream moved 0.4-1.3 GB/s in the same rounds),
    the medians over 1 and 100 streams were 46-91 % of the ceiling with 4 MiB, 73-100 %
    with 16 MiB, and no better with 40 MB.

    The price is the bucket's first fill: a transfer's first ``burst`` bytes pass at veth
    speed, so the rate of a short transfer reads high: by 1.1 % for 3 s at 1gbit (the
    101.1 % above), by 1.0-1.3 % for 256 MiB at 10gbit or 1gbit. CPU seconds per GiB, the
    figure a link is for, do not depend on it."""
    return max(MIN_BURST, min(MAX_BURST, round(rate_bits / 8 * BURST_SECONDS)))


def _run(command: list[str], stdin: str | None = None, check: bool = True) -> str:
    """Run an ip or tc command; its output, or LinkError naming it and its complaint (the
    first line: after it, ``ip -batch`` only adds which line failed)."""
    try:
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not check:
            return ""
        raise LinkError(f"{' '.join(command)}: {exc}") from None
    if check and done.returncode != 0:
        said = done.stderr.strip().splitlines()
        reason = said[0] if said else f"exit status {done.returncode}"
        raise LinkError(f"{' '.join(command)}: {reason}")
    return done.stdout


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Keep SIGINT and SIGTERM pending while the body runs, then let them in.

    A signal handler that raises (nbio's does: KeyboardInterrupt) could otherwise stop us
    between two commands, with a namespace made and not yet recorded, or half removed. Held,
    the signal waits until the body is done, and its exception comes out of the last line
    here (``pthread_sigmask`` runs the pending handlers before it returns), where the
    callers expect it. Only the main thread runs Python's handlers: elsewhere, nothing to
    hold. The ip and tc we start inherit the mask, so a Ctrl-C to the whole process group
    does not kill one of them halfway either; each takes milliseconds."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces that Links of dead processes left behind (SIGKILL, or SIGTERM
    with no handler, run no Python): every ``nbio-PID-*`` whose PID is not running, and
    those of our own PID (a process before us had it) that no open Link of ours owns.
    Return their names. A namespace whose pid was reused by a live process stays until
    that process ends."""
    removed = []
    for line in _run(["ip", "netns", "list"]).splitlines():
        name = line.split(" ", 1)[0]  # "nbio-123-0-s (id: 4)"
        match = _NAME.match(name)
        if match is None or name in _owned:
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or not _alive(pid):
            # Another process may be removing it at the same moment: not our failure.
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def _wait_up(namespace: str, device: str) -> None:
    """Return once ``device`` is up, carrier and all. Until the kernel's link watcher has
    seen the carrier (a few ms after "link set up"; one end read DOWN right after setup),
    the device's qdisc is a no-op that drops every packet, and a SYN sent then is resent
    only after a second."""
    deadline = time.monotonic() + _TIMEOUT
    while True:
        said = _run(["ip", "-n", namespace, "-brief", "link", "show", "dev", device]).split()
        if said[1:2] == ["UP"]:
            return
        if time.monotonic() >= deadline:
            raise LinkError(f"{device} in {namespace} did not come up: {' '.join(said)}")
        time.sleep(0.001)


def _addresses(pid: int) -> tuple[str, str]:
    """The server's and the client's addresses: a /30 of 10.0.0.0/8 numbered by the pid
    (pids are below 2**22, and 10/8 holds 2**22 /30s), so two runs never share one. The
    namespaces are private, so an address used outside them clashes with nothing."""
    block = (10 << 24) | (pid % (1 << 22)) << 2

    def dotted(address: int) -> str:
        return ".".join(str(address >> shift & 255) for shift in (24, 16, 8, 0))

    return dotted(block + 1), dotted(block + 2)


class Link:
    """A link of ``rate_bits`` between two fresh network namespaces, open inside a
    ``with``: a veth pair at MTU 1500, ``lo`` and both ends up, a /30 between them, and a
    ``tbf`` qdisc at the rate on both ends (data one way, ACKs the other).

    Run the server under :attr:`server_prefix` on :attr:`server_host` and the client under
    :attr:`client_prefix`: each can reach the other's address and nothing else. A process
    still running in a namespace at exit keeps it alive, without its name, until it ends:
    stop the processes first.

    GSO stays on: tbf passes a whole GSO packet when it fits in the bucket, and counts it as
    its segments' frames. Turning segmentation off (``ethtool -K tso off gso off``; ethtool
    is often not installed) cost the receiver 0.83-0.93 s/GiB instead of 0.55-0.75 at
    1gbit, and cut one stream at 10gbit to 64-66 % of the ceiling (from 80-93 %);
    ``ip link set DEV gso_max_size 4096`` was worse still (64-71 % of the ceiling at
    1gbit, 4.9-5.6 s/GiB receiving)."""

    def __init__(self, rate_bits: int, *, burst: int | None = None) -> None:
        """A link of ``rate_bits`` (:func:`parse_rate`), not made yet: entering makes it.
        ``burst`` overrides :func:`burst_for`, for experiments."""
        if not MIN_RATE <= rate_bits <= MAX_RATE:
            raise ValueError(f"rate {rate_bits} bit/s is out of range")
        #: The rate of both directions, in bits per second.
        self.rate_bits = rate_bits
        #: tbf's bucket on both ends, in bytes.
        self.burst = burst_for(rate_bits) if burst is None else burst
        self._pid = os.getpid()
        serial = next(_serial)
        #: The namespaces' names.
        self.server_namespace = f"{PREFIX}{self._pid}-{serial}-s"
        self.client_namespace = f"{PREFIX}{self._pid}-{serial}-c"
        #: The server's address, and the client's: each namespace has only its own.
        self.server_host, self.client_host = _addresses(self._pid)
        #: Put in front of a command to run it in the server's namespace.
        self.server_prefix = ["ip", "netns", "exec", self.server_namespace]
        #: Put in front of a command to run it in the client's namespace.
        self.client_prefix = ["ip", "netns", "exec", self.client_namespace]
        # Namespaces this Link may have made and not yet removed, in order.
        self._made: list[str] = []
        self._open = False

    @property
    def payload_ceiling(self) -> int:
        """The most TCP payload the link can carry, in bytes per second: tbf counts whole
        frames, 1514 bytes (:data:`FRAME`) for every 1448 of payload (:data:`MSS`), so
        RATE/8 × 1448/1514, 95.6 % of RATE/8 (119.55 MB/s at 1gbit). The ACKs travel the
        other way, through the other end's tbf, and take nothing from it. With the default
        bucket, 1 to 1000 connections at 1gbit reached 99.9-101.1 % of it in 3 s runs
        (a short run reads a little over: :func:`burst_for`)."""
        return self.rate_bits * MSS // (8 * FRAME)

    def tbf(self) -> list[str]:
        """The tc arguments of the qdisc on both ends, after ``root``."""
        return [
            "tbf",
            "rate",
            f"{self.rate_bits}bit",
            "burst",
            str(self.burst),
            "latency",
            f"{LATENCY_MS}ms",
        ]

    def __enter__(self) -> Link:
        if self._open:
            raise RuntimeError("this link is already open")
        try:
            with _signals_held():
                self._create()
        except BaseException:
            # A command failed, or a signal came in while they ran (its exception comes
            # out of _signals_held): undo whatever was made, with the signals held again.
            with _signals_held():
                self._remove()
            raise
        self._open = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with _signals_held():
            failures = self._remove()
        self._open = False
        if failures and error is None:  # never hide the exception that ended the with
            raise LinkError("; ".join(failures))

    def _create(self) -> None:
        """Make the link; on failure, what was made stays in ``_made`` for ``_remove``."""
        # Registered before anything exists: from here to _remove, a way out of the
        # interpreter that skips __exit__ still removes what exists.
        atexit.register(self._at_exit)
        remove_stale()
        server, client = self.server_namespace, self.client_namespace
        for name in (server, client):
            # Recorded before it exists: an "ip netns add" cut short may have made it, and
            # a name with our pid and serial is ours alone (remove_stale saw to it).
            self._made.append(name)
            _owned.add(name)
            _run(["ip", "netns", "add", name])
        # One ip per namespace: each line is a command of ip's own, and ip stops at the
        # first that fails, saying which. The veth is made inside the server's namespace
        # with its peer put straight into the client's, so that nothing, not even for a
        # moment, exists in the namespace we run in.
        _run(
            ["ip", "-n", server, "-batch", "-"],
            stdin=(
                f"link add {_SERVER_DEVICE} mtu {MTU} type veth"
                f" peer name {_CLIENT_DEVICE} mtu {MTU} netns {client}\n"
                f"addr add {self.server_host}/30 dev {_SERVER_DEVICE}\n"
                "link set lo up\n"
                f"link set {_SERVER_DEVICE} up\n"
            ),
        )
        _run(
            ["ip", "-n", client, "-batch", "-"],
            stdin=(
                f"addr add {self.client_host}/30 dev {_CLIENT_DEVICE}\n"
                "link set lo up\n"
                f"link set {_CLIENT_DEVICE} up\n"
            ),
        )
        for name, device in ((server, _SERVER_DEVICE), (client, _CLIENT_DEVICE)):
            _run(["tc", "-n", name, "qdisc", "add", "dev", device, "root", *self.tbf()])
            _wait_up(name, device)

    def _remove(self) -> list[str]:
        """Delete the namespaces made so far (which removes the veth pair and its qdiscs);
        the failures, in one line each."""
        failures = []
        while self._made:
            name = self._made[-1]
            try:
                _run(["ip", "netns", "del", name])
            except LinkError as exc:
                if name in _run(["ip", "netns", "list"], check=False).split():
                    failures.append(str(exc))
            self._made.pop()
            _owned.discard(name)
        atexit.unregister(self._at_exit)
        return failures

    def _at_exit(self) -> None:
        # A child forked from us (not exec'd) runs our atexit hooks too: not its link.
        if os.getpid() == self._pid:
            self._remove()
