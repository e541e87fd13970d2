"""Every implementation nbio knows, and the only place that imports one.

An entry names its modules as strings, so listing entries imports no framework:
``nbio send --impl asyncio-streams`` never imports Twisted or Tornado. Whether a framework
is installed is asked of ``importlib.util.find_spec``, which finds without importing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import cast

from .common.interface import Client, Emit, Implementation, Progress, Server
from .common.options import SendOptions, ServeOptions
from .common.results import SendResult

__all__ = [
    "ENTRIES",
    "FD_RESERVE",
    "Entry",
    "Loop",
    "UnknownImplementation",
    "available",
    "get",
    "load",
]

#: Descriptors a process keeps for itself (stdio, listener, poller, wake-up pipes).
FD_RESERVE = 64
#: What "default" polls with on this platform (asyncio, Twisted and selectors agree).
_POLLER = (
    "epoll"
    if sys.platform.startswith("linux")
    else "kqueue"
    if sys.platform == "darwin" or "bsd" in sys.platform
    else "select"
)


@dataclass(frozen=True)
class Loop:
    """A loop (or reactor) an implementation can run on, and the modules it needs."""

    name: str
    requires: tuple[str, ...] = ()
    #: select() cannot watch descriptors numbered FD_SETSIZE (1024) or more.
    max_fds: int | None = None
    #: What actually runs under this name here, for people (``nbio impls``).
    detail: str = ""
    #: The framework's own code runs unchanged on this loop and only the readiness call
    #: differs (select or poll where the default has epoll): the suite runs only its tests
    #: of what a poller changes on it (marked ``readiness``); the others would repeat the
    #: default loop's run.
    poller_only: bool = False

    def missing(self) -> list[str]:
        return [module for module in self.requires if not _installed(module)]

    @property
    def max_connections(self) -> int | None:
        """The most connections this loop can watch at once, if it has a limit."""
        return None if self.max_fds is None else self.max_fds - FD_RESERVE


@dataclass(frozen=True)
class Entry:
    """One implementation: its framework, its API variant, its modules and loops."""

    name: str
    framework: str
    variant: str
    server: str  # module with serve(options, emit)
    client: str  # module with send(options, progress)
    requires: tuple[str, ...] = ()  # modules that must be importable, e.g. "twisted"
    loops: tuple[Loop, ...] = (Loop("default"),)
    extra: str = ""  # the pip extra that installs what it requires
    note: str = ""  # what a team must know before choosing it, said once by `nbio impls`

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return [module for module in self.requires if not _installed(module)]

    def available_loops(self) -> list[str]:
        """The names of the loops usable here."""
        return [loop.name for loop in self.loops if not loop.missing()]

    def loop(self, name: str) -> Loop:
        for loop in self.loops:
            if loop.name == name:
                return loop
        raise KeyError(name)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "framework": self.framework,
            "variant": self.variant,
            "loops": self.available_loops(),
            "note": self.note,
        }


ENTRIES: tuple[Entry, ...] = (
    Entry(
        name="asyncio-streams",
        framework="asyncio",
        variant="streams",
        server="nbio.asyncio_impl.server",
        client="nbio.asyncio_impl.client",
        loops=(Loop("default", detail=f"SelectorEventLoop/{_POLLER}"), Loop("uvloop", ("uvloop",))),
    ),
    Entry(
        name="asyncio-protocol",
        framework="asyncio",
        variant="protocol",
        server="nbio.asyncio_impl.protocol_server",
        client="nbio.asyncio_impl.protocol_client",
        loops=(Loop("default", detail=f"SelectorEventLoop/{_POLLER}"), Loop("uvloop", ("uvloop",))),
    ),
    Entry(
        name="twisted",
        framework="twisted",
        variant="protocol",
        server="nbio.twisted_impl.server",
        client="nbio.twisted_impl.client",
        requires=("twisted",),
        loops=(
            Loop("default", detail=f"{_POLLER} reactor"),  # twisted.internet.default
            Loop("poll", detail="PollReactor", poller_only=True),
            Loop("select", max_fds=1024, detail="SelectReactor", poller_only=True),
            Loop("asyncio", detail="AsyncioSelectorReactor on asyncio's loop"),
            Loop("uvloop", ("uvloop",), detail="AsyncioSelectorReactor on uvloop"),
        ),
        extra="twisted",
    ),
    Entry(
        name="tornado",
        framework="tornado",
        variant="iostream",
        server="nbio.tornado_impl.server",
        client="nbio.tornado_impl.client",
        requires=("tornado",),
        loops=(  # the asyncio loop under the IOLoop
            Loop("default", detail=f"AsyncIOMainLoop on SelectorEventLoop/{_POLLER}"),
            Loop("uvloop", ("uvloop",), detail="AsyncIOMainLoop on uvloop"),
        ),
        extra="tornado",
    ),
    Entry(
        name="selectors",
        framework="selectors",
        variant="own-loop",
        server="nbio.selectors_impl.server",
        client="nbio.selectors_impl.client",
        loops=(
            Loop("default", detail=f"DefaultSelector: {_POLLER}"),
            Loop("select", max_fds=1024, poller_only=True),
            Loop("poll", poller_only=True),
            Loop("epoll", poller_only=True),
        ),
    ),
    Entry(
        name="gevent",
        framework="gevent",
        variant="greenlets",
        server="nbio.gevent_impl.server",
        client="nbio.gevent_impl.client",
        requires=("gevent",),
        loops=(
            Loop("default", detail="a greenlet per connection, hub on libev"),
            Loop("libuv", ("cffi",), detail="a greenlet per connection, hub on libuv"),
        ),
        extra="gevent",
    ),
    Entry(
        name="eventlet",
        framework="eventlet",
        variant="greenlets",
        server="nbio.eventlet_impl.server",
        client="nbio.eventlet_impl.client",
        requires=("eventlet",),
        loops=(
            Loop("default", detail="a green thread per connection, hub on epolls"),
            Loop("poll", detail="hub on poll", poller_only=True),
            Loop("select", max_fds=1024, detail="hub on select", poller_only=True),
            Loop("asyncio", detail="hub on an asyncio loop"),
        ),
        extra="eventlet",
        note="deprecated by its maintainers, bugfix mode only: the talk's record, not for new code",
    ),
    Entry(
        name="trio",
        framework="trio",
        variant="structured",
        server="nbio.trio_impl.server",
        client="nbio.trio_impl.client",
        requires=("trio",),
        loops=(Loop("default", detail=f"trio.run, a task per connection, on {_POLLER}"),),
        extra="trio",
    ),
    Entry(
        name="anyio",
        framework="anyio",
        variant="streams",
        server="nbio.anyio_impl.server",
        client="nbio.anyio_impl.client",
        requires=("anyio",),
        loops=(
            Loop("default", detail=f"asyncio backend, SelectorEventLoop/{_POLLER}"),
            Loop("uvloop", ("uvloop",), detail="asyncio backend on uvloop"),
            Loop("trio", ("trio",), detail="trio backend"),
        ),
        extra="anyio",
    ),
    Entry(
        name="blocking",
        framework="threads",
        variant="blocking",
        server="nbio.blocking_impl.server",
        client="nbio.blocking_impl.client",
        loops=(Loop("default", detail="a thread per connection, no loop"),),
    ),
)


class UnknownImplementation(LookupError):
    """No implementation has that name; the message lists the ones that exist."""


def get(name: str) -> Entry:
    """Return the entry called ``name``."""
    for entry in ENTRIES:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in ENTRIES)
    raise UnknownImplementation(f"unknown implementation {name!r} (known: {known})")


def available() -> list[Entry]:
    """The entries whose framework is installed here."""
    return [entry for entry in ENTRIES if not entry.missing()]


@dataclass
class _Loaded:
    name: str
    _server: Server
    _client: Client

    def serve(self, options: ServeOptions, emit: Emit) -> int:
        return self._server.serve(options, emit)

    def send(self, options: SendOptions, progress: Progress) -> SendResult:
        return self._client.send(options, progress)


def load(entry: Entry) -> Implementation:
    """Import ``entry``'s server and client modules, and return them as one implementation."""
    server = cast(Server, importlib.import_module(entry.server))
    client = cast(Client, importlib.import_module(entry.client))
    for module, protocol in ((server, Server), (client, Client)):
        if not isinstance(module, protocol):
            raise TypeError(f"{module!r} does not implement {protocol.__name__}")
    return _Loaded(entry.name, server, client)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
