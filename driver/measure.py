"""The commands that measure and report, each driving implementations as processes:
``nbio demo`` (one checked transfer), ``nbio profile`` (one, under py-spy), ``nbio
compare`` (every implementation side by side) and ``nbio report`` (a stored comparison,
or several side by side). Each ``run_*`` takes the parsed arguments and returns the exit
status; the machinery they drive is imported only here, never by ``serve`` or ``send``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from . import registry, workloads
from .arguments import UsageError
from .commands import entry
from .common.payload import TALK_SIZE
from .common.results import error_text
from .common.sizes import human_size
from .output import out, progress, say
from .transfer import Settings, Target, TransferFailed

if TYPE_CHECKING:
    from . import bench
    from .common.events import Sent
    from .common.options import ServerTls
    from .record import CompareSettings, Report

__all__ = ["run_compare", "run_demo", "run_profile", "run_report"]


def run_demo(args: argparse.Namespace) -> int:
    """``nbio demo``: one sink and one client, the talk's payload, hashed on both sides."""
    from . import bench

    found = entry(args)
    size = TALK_SIZE if args.size is None else args.size
    target = Target(found.name, args.loop)
    out(
        f"{found.name} ({args.loop} loop): sink server and client in two processes, "
        f"sending {size} bytes ({human_size(size)}) of foobar over 127.0.0.1, "
        "sha256 on both sides"
    )
    try:
        transfer = bench.run_transfer(target, target, Settings(size, digest="sha256"))
    except TransferFailed as exc:
        say(f"nbio demo: error: {exc}")
        return 1
    sent, (received,) = transfer.sent, transfer.received
    out(
        f"server received {received.bytes} bytes in {received.seconds:.3f} s: "
        f"{transfer.server_mb_per_s:.1f} MB/s (first byte to EOF, hashing included), "
        "sha256 matches"
    )
    out(
        f"client: CPU {sent.cpu_s:.2f} s, peak RSS {sent.peak_rss_kib / 1024:.1f} MiB; "
        f"loop delay p50/p99/max (ticks of its 10 ms ticker) {_delay_text(sent)} ms"
    )
    out("timing without the digest, repeated and side by side: nbio compare")
    return 0


def _delay_text(sent: Sent) -> str:
    from .figures import Delay

    return Delay.of([sent.loop_delay]).text()


def run_profile(args: argparse.Namespace) -> int:
    """``nbio profile``: one checked transfer with both processes under py-spy, with the
    settings ``nbio compare`` gives the workload (over TLS with ``--tls``)."""
    from . import compare, profile

    found = entry(args)
    if profile.py_spy() is None:
        raise UsageError("profile needs py-spy (pip install 'nbio[profile]')")
    if not os.path.isdir(args.out) or not os.access(args.out, os.W_OK):
        raise UsageError(f"cannot write SVGs into {args.out!r}")
    if args.tls and importlib.util.find_spec("trustme") is None:
        raise UsageError("--tls makes a throwaway CA with trustme: pip install 'nbio[tls]'")
    asked = compare.Asked(seed=0, size=args.size, duration=args.duration, tls=args.tls)
    plan = compare.plans(workloads.WORKLOADS[args.workload], asked)[0]
    limit = found.loop(args.loop).max_connections
    if limit is not None and plan.transfer.at_once > limit:
        raise UsageError(f"the {args.loop} loop watches at most {limit} connections")
    name = f"{found.name}-{args.loop}-{compare.label(plan)}" + ("-tls" if args.tls else "")
    with tempfile.TemporaryDirectory(prefix="nbio-tls-") as folder:
        settings = plan.transfer
        if args.tls:
            from .edge.tls import throwaway

            settings = replace(settings, tls=throwaway(folder))
        try:
            done = profile.record(Target(found.name, args.loop), settings, args.out, name)
        except TransferFailed as exc:
            say(f"nbio profile: error: {exc}")
            return 1
    seconds = done.transfer.server_seconds
    out(
        f"{found.name} ({args.loop} loop), {compare.label(plan)}: "
        f"{done.transfer.server_bytes} bytes in {seconds:.3f} s, sampled {profile.RATE} times a "
        "second by py-spy"
    )
    for side, svg in done.svgs.items():
        out(f"{side}: {svg}")
    return 0


def _names(text: str | None, known: set[str], what: str) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(
            f"unknown {what} {', '.join(unknown) or repr(text)} (known: {', '.join(sorted(known))})"
        )
    return names


def _check_variant(variant: Target) -> None:
    """A ``--variant`` row runs: its implementation and loop are installed, and each knob
    names an attribute that exists (importing its module here, before anything is
    measured, not in the row's processes, where it would fail every run)."""
    from .commands import knob_owner

    try:
        found = registry.get(variant.impl)
    except registry.UnknownImplementation as exc:
        raise UsageError(str(exc)) from None
    if variant.loop not in found.available_loops():
        raise UsageError(f"{variant.impl} has no loop {variant.loop!r} installed here")
    for path, value in variant.tune:
        knob_owner(path, value)


def run_compare(args: argparse.Namespace) -> int:
    """``nbio compare``: every implementation asked for, side by side, for each workload
    (and each cell of an echo grid) asked for; exit 1 if a row failed (its error is in the
    table)."""
    from . import bench, compare

    impls = _names(args.impls, {e.name for e in registry.ENTRIES}, "implementation")
    every_loop = args.loops == "all"
    known_loops = {loop.name for e in registry.ENTRIES for loop in e.loops}
    loops = None if every_loop else _names(args.loops, known_loops, "loop") or ["default"]
    if args.size is not None and args.size < 1:
        raise UsageError("size must be at least 1 byte: throughput of nothing is no figure")
    if args.tls and importlib.util.find_spec("trustme") is None:
        raise UsageError("--tls makes a throwaway CA with trustme: pip install 'nbio[tls]'")
    names = list(workloads.ALL) if args.workload == "all" else [args.workload]
    _check_echo_options(args, names)
    rate = _link_rate(args.link)
    asked = compare.Asked(
        seed=random.randrange(2**32) if args.seed is None else args.seed,
        repeat=args.repeat,
        size=args.size,
        connections=args.connections,
        concurrency=args.concurrency,
        chunk_size=args.chunk_size,
        digest=args.digest,
        matrix=args.matrix,
        syscalls=args.syscalls,
        duration=args.duration,
        link=args.link,
        link_bits=rate,
        message_size=args.message_size,
        rate=args.rate,
        tls=args.tls,
    )
    runs = [plan for name in names for plan in compare.plans(workloads.WORKLOADS[name], asked)]
    saved = [] if args.save is None else [_saved(args.save, plan, runs) for plan in runs]
    _check_outputs(args, saved)
    chosen = compare.targets(impls, loops)
    if impls and not any(t.impl in impls for t in chosen):
        raise UsageError("none of those implementations is installed on those loops")
    for variant in args.variant:
        _check_variant(variant)
    chosen += args.variant
    with tempfile.TemporaryDirectory(prefix="nbio-tls-") as folder:
        files = None
        if args.tls:
            from .edge.tls import throwaway

            files = throwaway(folder)  # one CA for the run: every server's, every client's
        if rate is None:
            return _compare(runs, chosen, args, bench.LOOPBACK, files)
        from . import link

        try:
            with link.Link(rate) as net:
                placement = bench.Placement(
                    net.server_host, tuple(net.server_prefix), tuple(net.client_prefix)
                )
                return _compare(runs, chosen, args, placement, files)
        except link.LinkError as exc:
            say(f"nbio compare: error: {exc}")
            return 1


def _check_echo_options(args: argparse.Namespace, names: list[str]) -> None:
    """--message-size and --rate act on echo workloads only: refused elsewhere."""
    echo = all(workloads.WORKLOADS[name].grid for name in names)
    for option, value in (("--message-size", args.message_size), ("--rate", args.rate)):
        if value is not None and not echo:
            raise UsageError(f"{option} is for --workload echo or echo-under-load")


def _saved(save: str, plan: CompareSettings, runs: list[CompareSettings]) -> str:
    from . import compare

    return compare.saved_path(save, compare.label(plan), len(runs) > 1)


def _link_rate(text: str | None) -> int | None:
    """``--link RATE`` in bits/s, once it is known that a link can be made here."""
    if text is None:
        return None
    from . import link

    missing = link.missing_privileges()
    if missing is not None:
        raise UsageError(missing)
    try:
        return link.parse_rate(text)
    except ValueError as exc:
        raise UsageError(f"--link: {exc}") from None


def _compare(
    runs: list[CompareSettings],
    chosen: list[Target],
    args: argparse.Namespace,
    placement: bench.Placement,
    files: ServerTls | None,
) -> int:
    """Each run in turn (a workload, or a cell of an echo grid): measured, saved, printed."""
    from . import compare

    status = 0
    for settings in runs:
        name = compare.label(settings)
        fit = [t for t in chosen if compare.watches(t, settings.transfer.at_once)]
        for target in chosen:
            if target not in fit:  # a select() loop: not a failure of the framework
                say(
                    f"nbio compare: {name}: skipping {target.id}: its loop watches fewer "
                    f"than {settings.transfer.at_once} connections"
                )
        with progress(compare.measure_steps(settings, fit), True, "runs") as advance:
            measured = compare.measure(settings, fit, advance, placement, files)
        if args.save is not None and not _save(measured, _saved(args.save, settings, runs)):
            status = 1
        _render(measured, args)
        failed = [r.target.id for r in measured.rows if r.error]
        failed += [f"{c.client} to {c.server}" for c in measured.matrix if c.transfer is None]
        if failed:
            say(f"nbio compare: error: {len(failed)} row(s) failed: {', '.join(failed)}")
            status = 1
    return status


def _save(measured: Report, path: str) -> bool:
    """Store the raw report in ``path``; if that fails after all the measuring, say so and
    print it to stdout instead, so the run is not lost. Return whether it was stored."""
    from .figures import figures

    text = measured.to_json(figures) + "\n"
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        why = error_text(exc)
        say(f"nbio compare: error: cannot write {path!r} ({why}): the raw report follows")
        out(text.rstrip("\n"))
        return False
    return True


def run_report(args: argparse.Namespace) -> int:
    """``nbio report``: a stored report rendered as compare printed it, or several side by
    side, one column group each."""
    from . import report, terminal
    from .figures import figures

    _check_outputs(args, [] if args.html is None else [args.html])
    stored = [(path, _load(path)) for path in args.paths]
    if args.html is not None:
        from .html import page

        text = page(stored)
        try:
            with open(args.html, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write {args.html!r}: {error_text(exc)}") from None
        out(f"{args.html}: {len(stored)} report(s), {len(text) // 1024} KiB")
        return 0
    if len(stored) == 1:
        _render(stored[0][1], args)
        return 0
    if args.plot is not None:
        raise UsageError("--plot draws one report: name one FILE.json")
    if args.json:
        out(json.dumps([json.loads(r.to_json(figures)) for _, r in stored], indent=1))
        return 0
    try:
        report.side_by_side(stored)
    except ValueError as exc:
        raise UsageError(f"cannot set side by side: {exc}") from None
    if args.markdown:
        out(report.side_by_side_markdown(stored).rstrip("\n"))
    else:
        out(terminal.render_side_by_side(stored))
    return 0


#: The largest report ``nbio report`` reads: a stored run of every workload is 1 MB or
#: less; a file (or a stream: ``/dev/zero``) beyond this is not one.
MAX_REPORT = 64 * 1024 * 1024


def _load(path: str) -> Report:
    """A stored report, read safely: a regular file (a FIFO or a device is refused before
    it is opened), at most :data:`MAX_REPORT` bytes, JSON of the report's shape and depth,
    with values a run can have; anything else is bad input, one line."""
    import stat

    from .record import Report

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path!r} is not a regular file: a report is one")
        if info.st_size > MAX_REPORT:
            raise UsageError(f"{path!r} is {info.st_size} bytes: no report is over {MAX_REPORT}")
        with open(path, "rb") as file:
            data = file.read(MAX_REPORT + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_REPORT:  # it grew while read
        raise UsageError(f"{path!r} is over {MAX_REPORT} bytes: no report is")
    try:
        report = Report.from_json(data.decode("utf-8"))
    except RecursionError:
        raise UsageError(f"{path!r} is nested too deep to be a report") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"{path!r} is not a report that compare --save stored ({problem})"
        ) from None
    problems = report.problems()
    if problems:
        raise UsageError(f"{path!r} holds impossible values: {'; '.join(problems)}")
    return report


def _check_outputs(args: argparse.Namespace, saved: Sequence[str] = ()) -> None:
    """Each file the run will write is writable now, before anything is measured: a
    regular file, or none yet in a folder we can write (a directory, ``/dev/full`` or a
    FIFO is refused here, not after a run of minutes)."""
    import stat

    for path in [p for p in (args.plot, *saved) if p is not None]:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.lexists(path):
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise UsageError(f"cannot write {path!r}: not a regular file")
            if not os.access(path, os.W_OK):
                raise UsageError(f"cannot write {path!r}: not writable")
        elif not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"cannot write {path!r}: no folder there we can write in")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib (pip install 'nbio[plot]')")


def _render(measured: Report, args: argparse.Namespace) -> None:
    from . import report, terminal
    from .figures import figures

    if args.json:
        out(measured.to_json(figures))
    elif args.markdown:
        out(report.to_markdown(measured).rstrip("\n"))
    else:
        out(terminal.render(measured))
    if args.plot is not None:
        from .plot import plot

        plot(measured, args.plot)
