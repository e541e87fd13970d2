"""Our own mainloop (selectors_impl/mainloop.py): timers, readiness dispatch, no spinning."""

from __future__ import annotations

import selectors
import socket

import pytest

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
