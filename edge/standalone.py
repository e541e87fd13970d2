"""An implementation's server or client module, run on its own as the talk's programs
were: ``python -m nbio.asyncio_impl.server`` serves on 127.0.0.1:1234 and prints each
connection until Ctrl-C; ``python -m nbio.asyncio_impl.client`` sends the talk's
73,400,320 bytes there. Each takes ``--help``, ``--host`` and ``--port`` (a client also
``--size``), says in one line on stderr why it cannot listen or send (exit 1), and prints
only figures it measured: the ``nbio`` command measures memory and CPU, these do not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..common.events import Event
from ..common.options import DEFAULT_HOST, DEFAULT_PORT, SendOptions, ServeOptions
from ..common.payload import TALK_SIZE, Payload
from ..common.results import SendFailed, SendResult, error_text
from ..common.sizes import SizeError, parse_size

__all__ = ["print_event", "run_client", "run_server"]


def print_event(event: Event) -> None:
    """Print an event for people, as the talk's server printed what it read."""
    print(event.text(), flush=True)


def _parser(module: str, what: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=what)
    parser.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="default %(default)s")
    return parser


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _module() -> str:
    """The module run as ``__main__``: ``nbio.asyncio_impl.server``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]


def _fail(module: str, message: str, status: int = 1) -> NoReturn:
    print(f"{module}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run_server(
    impl: str, serve: Callable[[ServeOptions], object], argv: Sequence[str] | None = None
) -> NoReturn:
    """Parse ``--host`` and ``--port`` for the server module of ``impl`` run as
    ``__main__``, run ``serve(options)`` (its ``main``, the framework's way) until Ctrl-C,
    and exit."""
    module = _module()
    parser = _parser(module, f"A sink server ({impl}): counts every byte until EOF; Ctrl-C stops")
    args = parser.parse_args(argv)
    options = ServeOptions(impl=impl, host=args.host, port=args.port)
    try:
        serve(options)
    except OSError as exc:
        _fail(module, f"cannot listen on {args.host}:{args.port}: {error_text(exc)}")
    except KeyboardInterrupt:  # before the server took Ctrl-C over
        sys.exit(130)
    sys.exit(0)


def run_client(
    send: Callable[[SendOptions], SendResult], argv: Sequence[str] | None = None
) -> NoReturn:
    """Parse ``--host``, ``--port`` and ``--size`` for the client module run as
    ``__main__``, run ``send(options)`` (its ``main``, the framework's way), print what
    went, and exit."""
    module = _module()
    parser = _parser(module, "A large-payload client: sends --size bytes of foobar\\n to a sink")
    parser.add_argument(
        "--size", type=_size, default=TALK_SIZE, help="bytes to send (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.port == 0:
        parser.error("a client cannot connect to port 0")
    options = SendOptions(Payload(args.size), host=args.host, port=args.port)
    try:
        result = send(options)
    except SendFailed as exc:  # Ctrl-C included: 128 + the signal, as nbio send exits
        status = 128 + exc.signal if exc.signal else 1
        _fail(module, f"{exc.message} ({exc.bytes_sent} bytes sent)", status)
    except KeyboardInterrupt:
        sys.exit(130)
    rate = result.bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
    print(f"sent {result.bytes} bytes in {result.seconds:.3f} s ({rate:.1f} MB/s)", flush=True)
    sys.exit(0)
