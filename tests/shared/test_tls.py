"""TLS, every implementation and loop, through its framework's own TLS layer: byte-exact
transfers, the receipt (``sent`` still means the sink read everything: the sink's
close_notify after the client's), what the handshake agreed, and the faults: a peer that
speaks no TLS, one that trusts another CA, an expired certificate, a wrong name, a
handshake never finished, a FIN without close_notify (``truncated``, never ``eof``), a
reset mid-handshake. No traceback anywhere."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from neutral import TlsSink, client_context, server_context, tls_files, tls_send

from harness import LOCALHOST, WAIT, NeutralSink, ServerProcess, Target, reset, run_client
from nbio.bench import command
from nbio.common.payload import Payload

KiB, MiB = 1024, 1024 * 1024
SIZES = [0, 1, 65537, 8 * MiB]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway CA and a localhost certificate, for the neutral peers and --cert."""
    return tls_files(str(tmp_path_factory.mktemp("tls")))


@pytest.mark.readiness  # TLS over each poller: its wants are served by the loop
def test_sink_over_tls_counts_every_byte(target: Target) -> None:
    """``serve --tls`` with a throwaway CA it names in ``listening``: a neutral TLS client
    sends 0, 1, 65,537 bytes and 8 MiB, each counted and hashed exactly, each connection
    saying the TLS version and cipher it agreed, and ending ``eof`` at close_notify."""
    with ServerProcess(target, "--tls", "--digest", "sha256") as server:
        assert server.listening["tls"] is True
        ca = server.listening["tls_ca"]
        assert ca and Path(ca).exists()
        trusted = client_context({"ca": ca})
        for size in SIZES:
            payload = Payload(size, pattern="random", seed=size)
            assert tls_send(server.port, payload, trusted) == "TLSv1.3"
            (received,) = server.received()
            assert received["outcome"] == "eof", received
            assert received["bytes"] == size and received["sha256"] == payload.sha256()
            assert received["tls_version"] == "TLSv1.3" and received["tls_cipher"]
        server.stop()
    assert not Path(ca).exists(), "the throwaway CA outlived its server"


@pytest.mark.readiness  # TLS over each poller: its wants are served by the loop
def test_client_over_tls_delivers_every_byte(target: Target, files: dict[str, str]) -> None:
    """``send --tls --ca`` to a neutral TLS sink: 0, 1, 65,537 bytes and 8 MiB arrive
    whole, end at the client's close_notify (``eof``), and ``sent`` says what was agreed."""
    with TlsSink(server_context(files)) as sink:
        for size in SIZES:
            payload = Payload(size, pattern="random", seed=size)
            run = run_client(
                target, sink.port, "--ca", files["ca"], "--size", str(size), "--pattern",
                "random", "--seed", str(size), "--digest", "sha256",
            )  # fmt: skip
            arrival = sink.wait()
            assert arrival.outcome == "eof", arrival
            assert arrival.bytes == run.sent["bytes"] == size
            assert arrival.sha256 == run.sent["sha256"] == payload.sha256()
            assert run.sent["tls_version"] == "TLSv1.3" and run.sent["tls_cipher"]


def test_sent_over_tls_waits_for_the_sinks_close_notify(
    target: Target, files: dict[str, str]
) -> None:
    """A TLS sink that has not read yet holds the client after its last byte and its
    close_notify: the client exits 0 only once the sink read everything and answered."""
    with TlsSink(server_context(files), clogged=True) as sink:
        client = subprocess.Popen(
            command("send", target, "--port", str(sink.port), "--ca", files["ca"], "--size",
                    "64KiB"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                client.wait(1.0)  # 64 KiB fit in the buffers: only the receipt holds it
            sink.release()
            assert client.wait(WAIT) == 0, client.stderr.read() if client.stderr else ""
        finally:
            if client.poll() is None:
                client.kill()
            client.communicate()
        assert sink.wait().outcome == "eof"


def test_a_tls_server_refuses_what_is_not_tls_and_serves_on(target: Target) -> None:
    """A plaintext client, a reset in the middle of a ClientHello, and a FIN without
    close_notify mid-transfer: the first two are reported (``rejected``, or ``error``,
    with "TLS handshake failed"), the third ends ``truncated``; the server keeps serving
    a TLS client, and writes no traceback."""
    with ServerProcess(target, "--tls") as server:
        trusted = client_context({"ca": server.listening["tls_ca"]})
        with socket.create_connection((LOCALHOST, server.port), timeout=WAIT) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            plain.settimeout(WAIT)
            # The server closes: a FIN, or a reset where its TLS reads the socket itself
            # (an SSLSocket: OpenSSL stops at the first record header that is not TLS, and
            # closing a socket with the rest of our bytes unread sends a reset).
            with contextlib.suppress(ConnectionResetError):
                while plain.recv(4096):
                    pass
        event = server.next_event()
        assert _refused(event), event
        half = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        half.sendall(bytes.fromhex("160301020001") + b"\x00" * 10)  # a ClientHello's start
        reset(half)
        event = server.next_event()
        assert _refused(event) or event.get("outcome") in ("reset", "error"), event
        raw = socket.create_connection((LOCALHOST, server.port), timeout=WAIT)
        sock = trusted.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(b"t" * MiB)
        # A FIN under TLS, no close_notify: wrap_socket() detached raw (its descriptor is
        # -1), and SSLSocket.shutdown() drops the TLS layer before shutting the socket down.
        sock.shutdown(socket.SHUT_WR)
        (cut,) = server.received()
        assert cut["outcome"] == "truncated", cut
        sock.close()
        assert tls_send(server.port, Payload(MiB), trusted) == "TLSv1.3"
        (after,) = server.received()
        assert after["outcome"] == "eof" and after["bytes"] == MiB
        server.stop()
        assert "Traceback" not in server.stderr(), server.stderr()


def _refused(event: dict[str, object]) -> bool:
    reason = str(event.get("reason", ""))
    return event.get("event") in ("rejected", "received") and (
        "TLS handshake failed" in reason or event.get("outcome") == "error"
    )


def test_a_handshake_never_finished_counts_and_times_out(target: Target) -> None:
    """A peer that connects and never sends its ClientHello holds a connection: with
    --max-connections 1 the next is refused, and --idle-timeout ends the silent one."""
    args = ("--tls", "--max-connections", "1", "--idle-timeout", "1")
    with ServerProcess(target, *args) as server:
        with socket.create_connection((LOCALHOST, server.port), timeout=WAIT):
            with socket.socket() as extra:
                extra.settimeout(WAIT)
                # The reset can even beat connect()'s return: a rejection that fast is one.
                with contextlib.suppress(ConnectionResetError):
                    extra.connect((LOCALHOST, server.port))
                refused = server.next_event()
            assert refused["event"] == "rejected", refused
            (silent,) = server.received()
            assert silent["outcome"] == "timeout", silent
        server.stop()


def test_tls_clients_fail_in_one_line(target: Target, tmp_path: Path) -> None:
    """A TLS client fails with exit 1, one line and no traceback: against a plaintext
    server (it reads the ClientHello and answers nothing: the stall timeout ends the
    wait), a server whose certificate another CA signed, one whose certificate expired,
    and one whose certificate names another host."""
    import trustme

    ours, theirs = trustme.CA(), trustme.CA()
    ours.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca = str(tmp_path / "ca.pem")
    cases = {
        "another CA": (theirs.issue_cert("localhost", "127.0.0.1"), "localhost", "certificate"),
        "expired": (
            ours.issue_cert("localhost", not_after=_past()),
            "localhost",
            "certificate has expired",
        ),
        "wrong name": (ours.issue_cert("elsewhere.example"), "localhost", "hostname mismatch"),
    }
    with NeutralSink() as plain:  # it reads the ClientHello and says nothing: no progress
        run = run_client(target, plain.port, "--ca", ca, "--size", "1KiB", "--stall-timeout", "1")
        _fails_in_one_line(run)
    for name, (issued, host, words) in cases.items():
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        with TlsSink(_context(str(cert), str(key))) as sink:
            run = run_client(target, sink.port, "--ca", ca, "--server-name", host, "--size", "1KiB")
        _fails_in_one_line(run)
        assert words in run.stderr.lower(), (name, run.stderr)


def _past() -> object:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)


def _context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _fails_in_one_line(run: object) -> None:
    returncode, stderr = getattr(run, "returncode"), getattr(run, "stderr")  # noqa: B009
    assert returncode == 1, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
