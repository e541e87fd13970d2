"""What nbio's adapters of outside programs share (:mod:`nbio.iperf`, :mod:`nbio.sockperf`,
and the plain-socket :mod:`nbio.reference`): the command line nbio gives a row's two
processes, a free port for a program that takes no port 0, the kernel's table of
sockets (a probe connection would be a test to such a program), and the kernel's count
of what a finished child used."""

from __future__ import annotations

import argparse
import signal
import socket
from typing import Any

from .common.options import DEFAULT_HOST

__all__ = ["STOPS", "connected", "emit", "free_port", "listens", "usage_of", "verbs"]

#: What stops a sink: nbio stops every server with SIGTERM, people with Ctrl-C.
STOPS = {signal.SIGTERM, signal.SIGINT}
_LISTEN, _ESTABLISHED = "0A", "01"


def emit(line: str) -> None:
    """One line of output, now."""
    print(line, flush=True)


def verbs(prog: str, description: str | None, modes: tuple[str, ...] = ("sink",)) -> Any:
    """The ``serve`` and ``send`` parsers every row's processes are given: ``--host``,
    ``--port``, ``--digest none`` (they hash nothing) and ``--mode``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="verb", required=True)
    for name in ("serve", "send"):
        command = commands.add_parser(name)
        command.add_argument("--host", default=DEFAULT_HOST)
        command.add_argument("--port", type=int, required=True)
        command.add_argument("--digest", choices=["none"], default="none", help="it hashes nothing")
        command.add_argument("--mode", choices=list(modes), default=modes[0])
    return parser, commands.choices["serve"], commands.choices["send"]


def free_port(host: str) -> int:
    """A port nothing listens on (for a program that takes no port 0): bound, read,
    released."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _sockets(port: int, state: str) -> bool:
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table, encoding="ascii") as file:
                next(file)
                for line in file:
                    fields = line.split()
                    if fields[3] == state and int(fields[1].split(":")[-1], 16) == port:
                        return True
        except (OSError, StopIteration):
            continue
    return False


def listens(port: int) -> bool:
    """Whether something listens on ``port`` in this network namespace."""
    return _sockets(port, _LISTEN)


def connected(port: int) -> bool:
    """Whether a connection to ``port`` is open in this network namespace."""
    return _sockets(port, _ESTABLISHED)


def usage_of(rusage: Any) -> tuple[float, int, int]:
    """CPU seconds, voluntary context switches and peak RSS (KiB) of a waited child
    (``os.wait4``'s rusage)."""
    return rusage.ru_utime + rusage.ru_stime, rusage.ru_nvcsw, rusage.ru_maxrss
