"""The interface every implementation satisfies: a server module with ``serve`` and a
client module with ``send``, each running its framework's loop until done, in this process
(see :mod:`nbio.registry`). What they are given is in :mod:`.options`, what a client returns
and how it fails in :mod:`.results`, what a server reports in :mod:`.events`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .events import Event
from .options import SendOptions, ServeOptions
from .results import SendResult

__all__ = ["Client", "Emit", "Implementation", "Progress", "Server"]

#: Where a server's events go, one at a time, as they happen.
Emit = Callable[[Event], None]
#: Told the size of each chunk a client hands its framework.
Progress = Callable[[int], None]


@runtime_checkable
class Server(Protocol):
    """A sink server: listens, counts every byte until EOF, reports each connection."""

    def serve(self, options: ServeOptions, emit: Emit) -> int:
        """Serve until SIGINT or SIGTERM, emitting ``listening``, ``received``, ``stopped``;
        return the number of the signal that stopped it.

        Raises OSError if it cannot listen.
        """


@runtime_checkable
class Client(Protocol):
    """A large-payload client: streams the payload with backpressure, then closes."""

    def send(self, options: SendOptions, progress: Progress) -> SendResult:
        """Send the payload on every connection; raise :class:`SendFailed` on any failure."""


@runtime_checkable
class Implementation(Server, Client, Protocol):
    """One framework's server and client, as the registry loads them."""

    name: str
