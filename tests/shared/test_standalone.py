"""Every implementation's server and client modules run on their own, from the
repository's root, as a reader would start them: ``python -m nbio.<impl>.server``. Nothing
at the root may shadow the installed package (the CLI floor is ``driver/``, mapped to
``nbio``), a failure is one line and exit 1, and no figure that nothing measured is
printed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from harness import WAIT, Target, free_port
from nbio import registry

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def _modules(target: Target) -> tuple[str, str]:
    entry = registry.get(target.impl)
    return entry.server, entry.client


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def test_modules_run_on_their_own_from_the_repository_root(default_target: Target) -> None:
    """From the root of the checkout: ``--help`` answers; the server listens on the port
    asked for and prints each connection; the client sends ``--size`` bytes and says so;
    Ctrl-C stops the server, whose last line names no memory or CPU (nothing measured
    them)."""
    server, client = _modules(default_target)
    for module in (server, client):
        helped = subprocess.run(
            _python(module, "--help"), cwd=ROOT, capture_output=True, text=True, timeout=WAIT
        )
        assert helped.returncode == 0 and "--port" in helped.stdout, helped.stderr
    with subprocess.Popen(
        _python(server, "--port", "0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            found = LISTENING.search(first)
            assert found, (first, proc.stderr.read() if proc.stderr else "")
            sent = subprocess.run(
                _python(client, "--port", found.group(1), "--size", "1MiB"),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert sent.returncode == 0, sent.stderr
            assert sent.stdout.startswith("sent 1048576 bytes"), sent.stdout
            received = proc.stdout.readline()
            assert "eof, 1048576 bytes" in received, received
            proc.send_signal(signal.SIGINT)
            rest, errors = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, errors
    assert rest.startswith("stopped: 1 connections, 1048576 bytes"), rest
    assert "RSS" not in rest and "CPU" not in rest, rest
    assert "Traceback" not in errors, errors


def test_a_module_that_cannot_connect_or_listen_says_so_in_one_line(default_target: Target) -> None:
    """A client with no server, and a server on a port already taken: exit 1, one line on
    stderr naming the problem, no traceback."""
    server, client = _modules(default_target)
    refused = subprocess.run(
        _python(client, "--port", str(free_port())),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"{client}: error: connection refused (0 bytes sent)"
    ], refused.stderr
    with socket_taken() as port:
        taken = subprocess.run(
            _python(server, "--port", str(port)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    assert taken.returncode == 1, taken.stdout
    (line,) = taken.stderr.strip().splitlines()
    assert line == f"{server}: error: cannot listen on 127.0.0.1:{port}: address already in use"


class socket_taken:
    """A port on 127.0.0.1 something already listens on."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.create_server(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()
