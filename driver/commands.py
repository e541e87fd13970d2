"""The commands that run one implementation in this process: ``nbio impls`` (what is
installed), ``nbio serve`` (a sink server) and ``nbio send`` (a client), and the checks
of their input that need more than one argument. Each ``run_*`` takes the parsed
arguments and returns the exit status."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import signal
import socket
import ssl
import tempfile

from . import interrupts, registry, usage
from .arguments import UsageError
from .common.events import Error, Sent
from .common.options import (
    ECHO,
    ClientTls,
    Echo,
    SendOptions,
    ServeOptions,
    ServerTls,
    at_once,
)
from .common.payload import DEFAULT_CHUNK_SIZE, TALK_SIZE, Payload, PayloadError
from .common.percentiles import Percentiles
from .common.results import SendFailed, error_text
from .output import (
    ServerOutput,
    StdoutGone,
    out,
    printer,
    progress,
    say,
    text_of,
    write_within,
)

__all__ = ["entry", "run_impls", "run_send", "run_serve"]


# --- checks that need more than one argument --------------------------------------------


def entry(args: argparse.Namespace) -> registry.Entry:
    """The implementation ``--impl`` names, installed, with the loop ``--loop`` names."""
    try:
        found = registry.get(args.impl)
    except registry.UnknownImplementation as exc:
        raise UsageError(str(exc)) from None
    missing = found.missing()
    if missing:
        raise UsageError(
            f"{found.name} needs {', '.join(missing)}, which is not installed "
            f"(pip install 'nbio[{found.extra or found.framework}]')"
        )
    try:
        loop = found.loop(args.loop)
    except KeyError:
        names = ", ".join(loop.name for loop in found.loops)
        raise UsageError(f"{found.name} has no loop {args.loop!r} (use {names})") from None
    if loop.missing():
        raise UsageError(
            f"loop {loop.name!r} needs {', '.join(loop.missing())}, which is not installed "
            f"(pip install 'nbio[{loop.name}]')"
        )
    return found


def _check_host(host: str) -> None:
    if not host.strip():
        raise UsageError("host must not be empty")
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise UsageError(f"cannot resolve host {host!r}: {reason}") from None


#: What a ``--duration`` send may send at most without ``--size``: a cap, not a goal.
DURATION_CAP = 1 << 50


def _echo(args: argparse.Namespace) -> Echo | None:
    """``--mode echo`` and its options; the echo options without it are bad input (an
    option that is accepted must act)."""
    if args.mode != ECHO:
        asked = [
            f"--{name.replace('_', '-')}"
            for name, default in (("message_size", None), ("requests", 1000), ("rate", None))
            if getattr(args, name) != default
        ]
        if asked:
            raise UsageError(f"{', '.join(asked)} needs --mode echo")
        return None
    if args.file is not None:
        raise UsageError("--mode echo sends messages of the pattern, not a --file")
    return Echo(args.message_size or 1024, args.requests, args.rate)


def _per_second(latency: Percentiles | None, seconds: float) -> float | None:
    """Requests answered per second over the client's span."""
    if latency is None:
        return None
    return latency.count / seconds if seconds > 0 else 0.0


def _payload(args: argparse.Namespace, echo: Echo | None = None) -> Payload:
    if echo is not None:  # the messages, one after another: every request's bytes differ
        if args.size is not None:
            raise UsageError("--mode echo sends --requests of --message-size: not --size")
        size = echo.message_size * echo.requests
        return Payload(size=size, pattern=args.pattern, seed=args.seed, duration=args.duration)
    if args.file is not None:
        if args.size is not None or args.duration is not None:
            raise UsageError("give --size or --duration, or --file, not both: a file is sent whole")
        if args.pattern != "foobar":
            raise UsageError("give --pattern or --file, not both")
        try:
            return Payload.from_file(args.file)
        except PayloadError as exc:
            raise UsageError(str(exc)) from None
    if args.duration is not None:
        size = DURATION_CAP if args.size is None else args.size
    else:
        size = TALK_SIZE if args.size is None else args.size
    return Payload(size=size, pattern=args.pattern, seed=args.seed, duration=args.duration)


def knob_owner(path: str, value: int) -> tuple[object, str]:
    """The module or class that holds the ``--tune`` knob ``path``, and the attribute's
    name: an existing whole-number attribute, to be set to a size or a count, so 1 or
    more (a read size of 0 would end every connection at its first read). Raises
    UsageError otherwise; ``nbio compare --variant`` asks before it measures anything."""
    owner_path, _, attribute = path.rpartition(".")
    module_path, owner = owner_path, None
    attributes: list[str] = []
    while owner is None and module_path:
        try:
            owner = importlib.import_module(module_path)
        except ImportError:
            module_path, _, name = module_path.rpartition(".")
            attributes.insert(0, name)
    for name in attributes:
        owner = getattr(owner, name, None)
    current = getattr(owner, attribute, None)
    if owner is None or not isinstance(current, int) or isinstance(current, bool):
        raise UsageError(f"knob {path}: no such whole-number attribute")
    if value < 1:
        raise UsageError(f"knob {path}: it sets a size or a count: 1 or more, not {value}")
    return owner, attribute


def _apply_tune(knobs: list[tuple[str, int]]) -> None:
    """Set each ``--tune`` knob (see :func:`knob_owner`)."""
    for path, value in knobs:
        owner, attribute = knob_owner(path, value)
        setattr(owner, attribute, value)


# --- commands ---------------------------------------------------------------------------


def _loop_text(found: registry.Entry, name: str) -> str:
    detail = found.loop(name).detail
    return f"{name} ({detail})" if detail else name


def run_impls(args: argparse.Namespace) -> int:
    """``nbio impls``: every implementation, installed or not, and its loops."""
    available = registry.available()
    if args.json:
        out(json.dumps([found.to_json() for found in available]))
        return 0
    for found in registry.ENTRIES:
        if found in available:
            loops = ", ".join(_loop_text(found, name) for name in found.available_loops())
            out(f"{found.name:<20} {found.framework:<10} {found.variant:<10} loops: {loops}")
        else:
            out(f"{found.name:<20} not installed: pip install 'nbio[{found.extra}]'")
        if found.note:
            out(f"{'':<20} note: {found.note}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """``nbio serve``: a sink server until SIGINT or SIGTERM (exit 0 after SIGTERM, 130
    after SIGINT), or exit 1 if it cannot listen."""
    found = entry(args)
    _check_host(args.host)
    usage.raise_fd_limit()  # one descriptor per connection: take what the system allows
    loop_limit = found.loop(args.loop).max_connections
    if loop_limit is not None and args.max_connections > loop_limit:
        # select() cannot watch descriptor 1024: refuse beyond that instead of failing.
        args.max_connections = loop_limit
    with tempfile.TemporaryDirectory(prefix="nbio-tls-") as folder:  # a throwaway CA's
        options = ServeOptions(
            impl=found.name,
            host=args.host,
            port=args.port,
            loop=args.loop,
            digest=args.digest,
            grace=args.grace,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
            tune=tuple(args.tune),
            mode=args.mode,
            tls=_server_tls(args, folder),
        )
        implementation = interrupts.load(found)
        _apply_tune(args.tune)
        output = ServerOutput(args.json, "nbio serve")
        try:
            stopped_by = implementation.serve(options, output)
        except OSError as exc:
            where = f"{args.host}:{args.port}"
            say(f"nbio serve: error: cannot listen on {where}: {error_text(exc)}")
            return 1
        finally:
            output.close()
    return 130 if stopped_by == signal.SIGINT else 0


def _server_tls(args: argparse.Namespace, folder: str) -> ServerTls | None:
    """``--tls``, ``--cert`` and ``--key``: the server's certificate, checked before any
    framework loads; a throwaway one in ``folder`` with ``--tls`` alone."""
    if args.cert is None and args.key is None:
        if not args.tls:
            return None
        if importlib.util.find_spec("trustme") is None:
            raise UsageError(
                "--tls without --cert makes a throwaway certificate with trustme: "
                "pip install 'nbio[tls]', or give --cert and --key"
            )
        from .edge.tls import throwaway

        return throwaway(folder)
    if args.cert is None or args.key is None:
        raise UsageError("give --cert and --key together")
    tls = ServerTls(certfile=args.cert, keyfile=args.key)
    from .edge.tls import server_context

    try:
        server_context(tls)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use {args.cert!r} and {args.key!r}: {_reason(exc)}") from None
    return tls


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """``--tls``, ``--ca`` and ``--server-name``: what the client trusts, checked first."""
    if not args.tls and args.ca is None:
        return None
    tls = ClientTls(cafile=args.ca, server_hostname=args.server_name)
    from .edge.tls import client_context

    try:
        client_context(tls)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use {args.ca!r} as a CA: {_reason(exc)}") from None
    return tls


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return error_text(exc)


def run_send(args: argparse.Namespace) -> int:
    """``nbio send``: the payload over every connection; exit 0 once the sink closed each
    in turn (the receipt), 1 with the bytes that went out if any failed, 128 + the signal
    if one stopped it."""
    found = entry(args)
    _check_host(args.host)
    connections = 1 if args.connections is None else args.connections
    loop_limit = found.loop(args.loop).max_connections
    if loop_limit is not None and at_once(connections, args.concurrency) > loop_limit:
        raise UsageError(
            f"the {args.loop} loop watches at most {loop_limit} connections (select() stops at "
            f"descriptor 1024): use fewer, or another loop"
        )
    usage.raise_fd_limit()
    echo = _echo(args)
    payload = _payload(args, echo)
    options = SendOptions(
        payload=payload,
        host=args.host,
        port=args.port,
        loop=args.loop,
        connections=connections,
        digest=args.digest,
        chunk_size=DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size,
        close_timeout=args.close_timeout,
        concurrency=args.concurrency,
        stall_timeout=args.stall_timeout,
        echo=echo,
        tls=_client_tls(args),
    )
    implementation = interrupts.load(found)
    _apply_tune(args.tune)
    for module in found.loop(args.loop).requires:  # uvloop: imported before the baseline too
        importlib.import_module(module)
    rss_kib = usage.rss_kib()  # the baseline of the client's memory growth: after imports
    emit = printer(args.json, "nbio send")
    chunks = 0
    try:
        total = None if payload.duration is not None else payload.size * connections
        total = None if echo is not None else total
        with progress(total, enabled=not args.json) as advance:

            def count(size: int) -> None:
                nonlocal chunks
                chunks += 1  # every client reports each chunk it hands to its framework
                advance(size)

            result = implementation.send(options, count)
    except SendFailed as exc:
        say(f"nbio send: error: {exc.message} ({exc.bytes_sent} bytes sent)")
        if args.json:
            with contextlib.suppress(StdoutGone):  # the line on stderr said it already
                emit(Error(message=exc.message, bytes=exc.bytes_sent))
        return 128 + exc.signal if exc.signal else 1
    sent = Sent(
        bytes=result.bytes,
        sha256=result.sha256,
        seconds=result.seconds,
        connections=result.connections,
        loop_delay=result.loop_delay,
        digest=options.digest,
        chunk_size=options.chunk_size,
        chunks=chunks,
        tune=dict(args.tune),
        first_byte_at=result.first_byte_at,
        ended_at=result.ended_at,
        cpu_s=result.cpu_s,
        waits=result.waits,
        rss_kib=rss_kib,
        peak_rss_kib=usage.peak_rss_kib(),
        concurrency=args.concurrency,
        latency=result.latency,
        duration=payload.duration,
        mode=args.mode,
        tls_version=result.tls_version,
        tls_cipher=result.tls_cipher,
        message_size=echo.message_size if echo else None,
        requests=echo.requests if echo else None,
        rate=echo.rate if echo else None,
        request_latency=result.request_latency,
        requests_per_s=_per_second(result.request_latency, result.seconds),
        histogram=result.histogram,
    )
    done = f"the transfer completed: {sent.bytes} bytes sent"
    try:  # a stdout nobody reads cannot hold a client that is done
        if not write_within(text_of(sent, args.json), args.stall_timeout):
            say(f"nbio send: error: stdout not read for {args.stall_timeout:g} s ({done})")
            return 1
    except StdoutGone as exc:
        say(f"nbio send: error: {exc.strerror} ({done})")
        return 1
    return 0
