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
