"""Our own mainloop (selectors_impl/mainloop.py): timers, readiness dispatch, no spinning;
and the streams on it (selectors_impl/streams.py): TCP, and TLS over MemoryBIOs."""

from __future__ import annotations

import selectors
import socket
import ssl

import pytest

from nbio.common.options import ClientTls, ServerTls
from nbio.common.results import StallTimeout
from nbio.edge.tls import client_context, server_context, throwaway
from nbio.selectors_impl.mainloop import (
    SELECTORS,
    Cancelled,
    Event,
    Loop,
    current_loop,
    sleep,
    wait_readable,
    wait_writable,
)
from nbio.selectors_impl.streams import Tcp, Tls

LOOPS = sorted(SELECTORS)


@pytest.mark.parametrize("selector", LOOPS)
def test_timers_fire_in_order_of_due_time(selector: str) -> None:
    """Sleepers wake by due time, not by the order they started."""
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await sleep(seconds)
        woke.append(name)

    async def main() -> None:
        loop = current_loop()
        tasks = [loop.spawn(sleeper(n, s)) for n, s in (("a", 0.03), ("b", 0.01), ("c", 0.02))]
        done = Event()
        for task in tasks:
            task.add_done_callback(lambda _: all(t.done for t in tasks) and done.set())
        await done.wait(5)

    Loop(SELECTORS[selector]()).run(main())
    assert woke == ["b", "c", "a"]


@pytest.mark.parametrize("selector", LOOPS)
def test_readiness_wakes_the_task_that_waits_on_that_socket(selector: str) -> None:
    """A reader parked on one end of a socketpair wakes when the other end writes."""
    left, right = socket.socketpair()
    left.setblocking(False)
    events: list[str] = []

    async def reader() -> bytes:
        events.append("waiting")
        await wait_readable(left)
        events.append("readable")
        return left.recv(100)

    async def writer() -> None:
        await sleep(0.01)
        events.append("writing")
        right.send(b"foobar\n")

    async def main() -> bytes:
        loop = current_loop()
        loop.spawn(writer())
        task = loop.spawn(reader())
        done = Event()
        task.add_done_callback(lambda _: done.set())
        await done.wait(5)
        return bytes(task.result)

    with left, right:
        assert Loop(SELECTORS[selector]()).run(main()) == b"foobar\n"
    assert events == ["waiting", "writing", "readable"]


def test_a_full_socket_wakes_its_writer_once_drained() -> None:
    """A writer parked on a full socket wakes when the peer reads."""
    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    filled = 0
    while True:
        try:
            filled += left.send(b"x" * 65536)
        except BlockingIOError:
            break

    async def drain() -> None:
        await sleep(0.01)
        drained = 0
        while drained < filled:
            try:
                drained += len(right.recv(1 << 20))
            except BlockingIOError:
                await wait_readable(right)

    async def main() -> int:
        current_loop().spawn(drain())
        await wait_writable(left)
        return left.send(b"y")

    with left, right:
        assert Loop().run(main()) == 1


def test_the_loop_sleeps_instead_of_spinning() -> None:
    """A task sleeping 0.2 s costs a handful of wake-ups, not thousands."""
    loop = Loop()
    loop.run(sleep(0.2))
    assert loop.wakeups <= 5


def test_cancel_throws_into_the_waiting_task_and_unregisters_its_socket() -> None:
    """Cancelling a task parked on a socket raises Cancelled where it waits and leaves the
    selector watching nothing."""
    left, right = socket.socketpair()
    seen: list[str] = []

    async def parked() -> None:
        try:
            await wait_readable(left)
        except Cancelled:
            seen.append("cancelled")
            raise

    async def main() -> dict[int, selectors.SelectorKey]:
        loop = current_loop()
        task = loop.spawn(parked())
        await sleep(0.01)
        task.cancel()
        await sleep(0)
        await sleep(0)
        return dict(loop.selector.get_map())

    with left, right:
        assert Loop().run(main()) == {}
    assert seen == ["cancelled"]


def test_event_wait_times_out() -> None:
    """Event.wait(timeout) returns False if nobody sets it in time, True once set."""

    async def main() -> tuple[bool, bool]:
        event = Event()
        first = await event.wait(0.01)
        current_loop().spawn(_set_later(event))
        second = await event.wait(5)
        return first, second

    async def _set_later(event: Event) -> None:
        await sleep(0.01)
        event.set()

    assert Loop().run(main()) == (False, True)


def test_a_cleared_event_waits_again() -> None:
    """Event.clear() unsets it: the next wait times out unless someone sets it again."""

    async def main() -> tuple[bool, bool]:
        event = Event()
        event.set()
        first = await event.wait(0.01)
        event.clear()
        return first, await event.wait(0.01)

    assert Loop().run(main()) == (True, False)


def test_two_tasks_cannot_wait_to_read_one_socket() -> None:
    """The selector would wake only one of them: the loop refuses the second."""
    left, right = socket.socketpair()

    async def main() -> None:
        loop = current_loop()
        loop.spawn(wait_readable(left))
        loop.spawn(wait_readable(left))
        await sleep(0.01)

    with left, right, pytest.raises(RuntimeError, match="two tasks wait to read"):
        Loop().run(main())


# --- streams: TCP and TLS on the loop ---------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> ServerTls:
    pytest.importorskip("trustme", reason="needs the tls extra")
    return throwaway(str(tmp_path_factory.mktemp("tls")))


def _tls_pair(files: ServerTls, patience: float | None = None) -> tuple[Tls, Tls]:
    left, right = socket.socketpair()
    for end in (left, right):
        end.setblocking(False)
    server = Tls(left, server_context(files), server_side=True)
    client = Tls(
        right,
        client_context(ClientTls(cafile=files.cafile)),
        server_side=False,
        server_hostname="localhost",
        patience=patience,
    )
    return server, client


async def _read_all(stream: Tcp) -> bytes:
    buffer = memoryview(bytearray(65536))
    got = bytearray()
    while count := await stream.recv_into(buffer):
        got += buffer[:count]
    return bytes(got)


def test_tls_streams_carry_every_byte_and_end_with_close_notify_both_ways(
    tls_files: ServerTls,
) -> None:
    """An SSLObject over MemoryBIOs, driven by the loop: the handshake agrees on TLS 1.3,
    1 MiB arrives whole, the client's close_notify reads as the server's EOF (0), and the
    server's close_notify in answer reads as the client's."""
    server, client = _tls_pair(tls_files)
    payload = bytes(range(256)) * 4096

    async def serve() -> bytes:
        await server.handshake()
        got = await _read_all(server)
        await server.send_eof()  # our close_notify, in answer
        return got

    async def main() -> tuple[bytes, bytes, str | None]:
        task = current_loop().spawn(serve())
        await client.handshake()
        await client.send_all(memoryview(payload))
        await client.send_eof()
        answer = await _read_all(client)  # until the server's close_notify
        while not task.done:
            await sleep(0.001)
        return task.result, answer, client.ssl.version()

    try:
        assert Loop().run(main()) == (payload, b"", "TLSv1.3")
    finally:
        server.close()
        client.close()


def test_a_fin_without_close_notify_raises_ssl_eof_error(tls_files: ServerTls) -> None:
    """A truncation: the socket's EOF, fed to the incoming BIO, is not the end of TLS."""
    server, client = _tls_pair(tls_files)

    async def main() -> BaseException | None:
        loop = current_loop()
        loop.spawn(client.handshake())
        await server.handshake()
        await client.send_all(memoryview(b"cut short"))
        client.sock.shutdown(socket.SHUT_WR)  # a FIN, no close_notify
        try:
            await _read_all(server)
        except ssl.SSLError as exc:
            return exc
        return None

    try:
        assert isinstance(Loop().run(main()), ssl.SSLEOFError)
    finally:
        server.close()
        client.close()


def test_a_stream_with_patience_gives_up_on_a_peer_that_never_reads() -> None:
    """Tcp(patience=0.2): once the kernel takes no more, the send raises StallTimeout."""
    left, right = socket.socketpair()
    left.setblocking(False)
    stream = Tcp(left, patience=0.2)

    async def main() -> None:
        while True:
            await stream.send(memoryview(b"x" * 65536))

    with left, right, pytest.raises(StallTimeout, match=r"no progress for 0\.2 s"):
        Loop().run(main())
