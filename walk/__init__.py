"""The talk's walk from blocking to a mainloop, as five runnable Python 3 scripts.

Each step fixes what the one before could not do. Run them against any sink
(``nbio serve``, port 1234): ``python -m nbio.walk.step1_blocking`` …
``python -m nbio.walk.step5_scheduler``.
The talk's code was Python 2 and had bugs; these do what it meant (see each step's notes).
"""

from __future__ import annotations

import argparse

#: The talk's payloads: 'foobar\n' * 10 * 1024 * 1024 (steps 1 and 2), and
#: 'foobar\n' * 1024 * 1024 (steps 3 to 5).
BIG = b"foobar\n" * 10 * 1024 * 1024
SMALL = b"foobar\n" * 1024 * 1024


def arguments(description: str) -> argparse.Namespace:
    """``--host`` and ``--port``, the same defaults as every nbio implementation."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234)
    return parser.parse_args()
