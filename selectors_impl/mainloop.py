"""A mainloop in one sitting: the talk's generator scheduler, done properly, on ``selectors``.

Tasks are ``async def`` coroutines. They wait by awaiting one of three things, which each
yield a request to this loop: :func:`wait_readable`, :func:`wait_writable` (a socket) and
:func:`sleep` (a time). The loop keeps

- ``ready``: tasks to step now, in order;
- ``timers``: a heap of (when, task) for the sleepers;
- the selector: which task waits on which socket, for reading or for writing.

Each turn sleeps in ``select()`` until a socket is ready or the first timer is due (never a
busy spin: the timeout is 0 only when tasks are already ready), moves the woken tasks to
``ready``, and steps each of them once, up to its next wait. That is all a mainloop is;
asyncio's ``_run_once``, Twisted's ``doIteration`` and the IOLoop do the same, with more care.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import socket
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = [
    "SELECTORS",
    "Cancelled",
    "Event",
    "Loop",
    "Task",
    "TooSlow",
    "current_loop",
    "fail_after",
    "sleep",
    "sleep_until",
    "wait_readable",
    "wait_writable",
]

#: ``--loop`` names and the selector class each one means.
SELECTORS: dict[str, Callable[[], selectors.BaseSelector]] = {
    "default": selectors.DefaultSelector,  # epoll on Linux
    "select": selectors.SelectSelector,  # cannot watch descriptors numbered 1024 or more
    "poll": selectors.PollSelector,
    "epoll": getattr(selectors, "EpollSelector", selectors.DefaultSelector),
}

_loop: Loop | None = None


class Cancelled(BaseException):
    """Thrown into a task by :meth:`Task.cancel`, at the point where it waits."""


class TooSlow(Exception):
    """A block under :func:`fail_after` took longer than it was given."""


# --- what a task can wait for -----------------------------------------------------------


@types.coroutine
def wait_readable(sock: socket.socket) -> Generator[tuple[str, Any], None, None]:
    """Wait until ``sock`` can be read (or accepted) without blocking."""
    yield ("read", sock)


@types.coroutine
def wait_writable(sock: socket.socket) -> Generator[tuple[str, Any], None, None]:
    """Wait until ``sock`` can take more bytes (or has connected)."""
    yield ("write", sock)


@types.coroutine
def sleep(seconds: float) -> Generator[tuple[str, Any], None, None]:
    """Wait ``seconds``; ``sleep(0)`` just lets every other ready task run first."""
    yield ("sleep", seconds)


@types.coroutine
def sleep_until(deadline: float) -> Generator[tuple[str, Any], None, None]:
    """Wait until ``deadline``, a time on :meth:`Loop.time`'s clock."""
    yield ("until", deadline)


def current_loop() -> Loop:
    """The loop that is running now."""
    if _loop is None:
        raise RuntimeError("no loop is running")
    return _loop


class fail_after:
    """``with fail_after(seconds):`` inside a task: if the block is still running after
    ``seconds``, a watchdog task cancels it, and the block raises :class:`TooSlow`."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False

    def __enter__(self) -> fail_after:
        loop = current_loop()
        task = loop.current_task()

        async def watchdog() -> None:
            await sleep(self._seconds)
            self._expired = True
            task.cancel()

        self._watchdog = loop.spawn(watchdog())
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self._watchdog.cancel()
        if self._expired and kind is Cancelled:
            raise TooSlow(f"took more than {self._seconds:g} s") from None


# --- tasks ------------------------------------------------------------------------------


class Task:
    """A coroutine stepped by the loop, and what came of it."""

    def __init__(self, loop: Loop, coro: Coroutine[Any, Any, Any]) -> None:
        self._loop = loop
        self._coro = coro
        self._throw: BaseException | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[Task], None]] = []
        self._wait: tuple[str, Any] | None = None  # what the loop parked it on, if anything
        self._scheduled = False  # in the ready queue

    def cancel(self) -> None:
        """Throw :class:`Cancelled` into the task where it waits."""
        if not self.done:
            self._throw = Cancelled()
            self._loop._wake(self)

    def add_done_callback(self, callback: Callable[[Task], None]) -> None:
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def _step(self) -> None:
        """Run the coroutine up to its next wait, and hand that wait to the loop."""
        try:
            if self._throw is not None:
                error, self._throw = self._throw, None
                request = self._coro.throw(error)
            else:
                request = self._coro.send(None)
        except StopIteration as stop:
            self._finish(stop.value, None)
        except BaseException as exc:
            self._finish(None, exc)
        else:
            self._loop._park(self, request)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self.done, self.result, self.error = True, result, error
        for callback in self._callbacks:
            callback(self)


class Event:
    """Something tasks can wait for until another task (or a callback) sets it."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[Task] = []

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        """Unset it: the next :meth:`wait` waits again."""
        self._set = False

    def set(self) -> None:
        self._set = True
        loop = current_loop()
        for task in self._waiters:
            loop._wake(task)
        self._waiters.clear()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set, at most ``timeout`` seconds; return whether it is set."""
        if not self._set:
            loop = current_loop()
            task = loop._current
            assert task is not None
            self._waiters.append(task)
            try:
                await _park_on_event(timeout)
            finally:
                if task in self._waiters:
                    self._waiters.remove(task)
        return self._set


@types.coroutine
def _park_on_event(timeout: float | None) -> Generator[tuple[str, Any], None, None]:
    yield ("event", timeout)


# --- the loop ---------------------------------------------------------------------------


class Loop:
    """Steps tasks; sleeps in ``select()`` between steps."""

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        self.selector = selector or selectors.DefaultSelector()
        self._ready: deque[Task] = deque()
        self._timers: list[list[Any]] = []  # heap of [when, order, task or None if forgotten]
        self._order = itertools.count()  # breaks ties between timers due at the same time
        self._readers: dict[int, Task] = {}
        self._writers: dict[int, Task] = {}
        self._current: Task | None = None
        self._tasks: set[Task] = set()  # every task not done yet
        self.wakeups = 0  # select() calls that returned: how often the loop woke

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def current_task(self) -> Task:
        """The task being stepped now."""
        if self._current is None:
            raise RuntimeError("not inside a task")
        return self._current

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Task:
        """Start ``coro`` as a task: it runs on the loop's next turn."""
        task = Task(self, coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._wake(task)
        return task

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` and everything it spawns until ``coro`` finishes; return its result."""
        global _loop
        main = self.spawn(coro)
        _loop = self
        try:
            while not main.done:
                self._turn()
        finally:
            for task in list(self._tasks):  # left behind: run their finally blocks, if any
                task._coro.close()
            _loop = None
            self.selector.close()
        if main.error is not None:
            raise main.error
        return main.result

    def _turn(self) -> None:
        """One turn: sleep in select() until something is due, wake those tasks, step them."""
        if self._ready:
            timeout: float | None = 0  # tasks are waiting to run: only poll
        elif self._timers:
            timeout = max(0.0, self._timers[0][0] - self.time())
        else:
            timeout = None  # nothing but sockets: sleep until one is ready
        events = self.selector.select(timeout)
        self.wakeups += 1
        for key, mask in events:
            if mask & selectors.EVENT_READ and key.fd in self._readers:
                self._wake(self._readers[key.fd])
            if mask & selectors.EVENT_WRITE and key.fd in self._writers:
                self._wake(self._writers[key.fd])
        now = self.time()
        while self._timers and self._timers[0][0] <= now:
            task = heapq.heappop(self._timers)[2]
            if task is not None:  # None: that task was woken otherwise, or cancelled
                self._wake(task)
        for _ in range(len(self._ready)):  # only those ready now: new ones wait a turn
            task = self._ready.popleft()
            task._scheduled = False
            self._current = task
            task._step()
            self._current = None

    def _park(self, task: Task, request: tuple[str, Any]) -> None:
        """Put a task where its request says until it is due."""
        kind, what = request
        if kind in ("read", "write"):
            fd = what.fileno()
            waiters = self._readers if kind == "read" else self._writers
            if fd in waiters:  # the selector would wake only one of them
                raise RuntimeError(f"two tasks wait to {kind} the same socket")
            waiters[fd] = task
            task._wait = (kind, fd)
            self._update(fd)
        elif kind == "sleep" and what <= 0:
            self._wake(task)
        elif kind == "sleep" or kind == "until" or (kind == "event" and what is not None):
            when = what if kind == "until" else self.time() + what
            entry = [when, next(self._order), task]
            heapq.heappush(self._timers, entry)
            task._wait = ("timer", entry)
        elif kind != "event":  # an event without timeout: only Event.set() wakes it
            raise RuntimeError(f"a task asked the loop for {request!r}")

    def _wake(self, task: Task) -> None:
        """Move ``task`` to the ready queue, dropping whatever it waited on."""
        self._forget(task)
        if not task._scheduled and not task.done:
            task._scheduled = True
            self._ready.append(task)

    def _forget(self, task: Task) -> None:
        """Drop what ``task`` waits on: its socket registration or its timer."""
        if task._wait is None:
            return
        kind, what = task._wait
        task._wait = None
        if kind == "timer":
            what[2] = None  # left in the heap, skipped when it comes due
        else:
            del (self._readers if kind == "read" else self._writers)[what]
            self._update(what)

    def _update(self, fd: int) -> None:
        """Tell the selector which events anyone waits for on ``fd``."""
        mask = (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )
        registered = fd in self.selector.get_map()
        if mask and registered:
            self.selector.modify(fd, mask)
        elif mask:
            self.selector.register(fd, mask)
        elif registered:
            self.selector.unregister(fd)
