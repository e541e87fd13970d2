"""Every client against every server: the wire is the only contract between them."""

from __future__ import annotations

from harness import ServerProcess, Target, run_client
from nbio.common.payload import Payload

#: One size for every pair: not a whole number of chunks or reads, several MiB long. The
#: sizes around a read's boundary are checked per implementation, against neutral peers.
SIZE = 5 * 1024 * 1024 + 3


def test_client_and_server_agree_on_every_byte(
    client_target: Target, server_target: Target
) -> None:
    """Sent and received counts and sha256 digests match across frameworks."""
    size = SIZE
    payload = Payload(size, pattern="random", seed=size)
    with ServerProcess(server_target, "--digest", "sha256") as server:
        run = run_client(
            client_target,
            server.port,
            "--size",
            str(size),
            "--pattern",
            "random",
            "--seed",
            str(size),
            "--digest",
            "sha256",
        )
        (received,) = server.received()
        server.stop()
    assert run.sent["bytes"] == received["bytes"] == size
    assert run.sent["sha256"] == received["sha256"] == payload.sha256()
    assert received["outcome"] == "eof"


def test_every_client_and_server_agree_over_tls_in_echo_mode(
    client_target: Target, server_target: Target
) -> None:
    """Over TLS (the server's throwaway CA), in echo mode: every request of every client
    comes back whole from every server, and both sides agreed on TLS 1.3."""
    with ServerProcess(server_target, "--tls", "--mode", "echo") as server:
        run = run_client(
            client_target, server.port, "--ca", server.listening["tls_ca"], "--mode", "echo",
            "--message-size", "10KiB", "--requests", "20",
        )  # fmt: skip
        (received,) = server.received()
        server.stop()
    assert run.sent["request_latency_count"] == 20 and run.sent["tls_version"] == "TLSv1.3"
    assert received["bytes"] == received["bytes_out"] == 20 * 10 * 1024
    assert received["outcome"] == "eof" and received["tls_version"] == "TLSv1.3"
