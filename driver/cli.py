"""The ``nbio`` command: ``impls``, ``serve`` and ``send`` (one implementation in this
process), ``demo``, ``profile``, ``compare`` and ``report`` (implementations driven as
processes, and their stored reports), dispatched to the ``run_*`` functions of
:mod:`nbio.commands` and :mod:`nbio.measure`.

Bad input exits 2 with one line on stderr; a transfer that fails exits 1 with one line that
says how many bytes went out. Neither ever prints a traceback. SIGINT and SIGTERM end any
command cleanly at any moment: a server stops gracefully once it listens (exit 0 after
SIGTERM, 130 after SIGINT), a client says how many bytes went out, and before either is
running the process exits 130 (SIGINT) or 143 (SIGTERM) with one line
(:mod:`nbio.interrupts`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import interrupts
from .arguments import UsageError
from .commands import run_impls, run_send, run_serve
from .common.results import signal_name
from .measure import run_compare, run_demo, run_profile, run_report
from .output import StdoutGone, say
from .parser import build_parser

__all__ = ["COMMANDS", "main"]

#: Each command and what runs it.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "impls": run_impls,
    "serve": run_serve,
    "send": run_send,
    "demo": run_demo,
    "compare": run_compare,
    "profile": run_profile,
    "report": run_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nbio``; return the exit status."""
    interrupts.install()
    words = sys.argv[1:] if argv is None else list(argv)
    command = f"nbio {words[0]}" if words and words[0] in COMMANDS else "nbio"
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        say(f"{command}: error: {exc}")
        return 2
    except StdoutGone as exc:
        say(f"{command}: error: {exc.strerror}")
        return 1
    except interrupts.Interrupted as exc:
        interrupts.forget()
        signum: int = exc.args[0]
        say(f"{command}: stopped by {signal_name(signum)}")
        return 128 + signum
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
