"""The types of ``nbio``'s arguments: each turns a word of the command line into a value,
or raises ``ArgumentTypeError`` with a one-line reason (argparse prints it, exit 2).
Numbers take ASCII digits only: ``int()`` would take ``1_000`` and ``٣``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import NoReturn

from .common.sizes import SizeError, parse_size
from .transfer import Target

__all__ = [
    "Parser",
    "UsageError",
    "bounded",
    "knob",
    "peer_port",
    "port",
    "positive_number",
    "positive_seconds",
    "seconds",
    "size",
    "variant",
    "whole",
]


class UsageError(Exception):
    """Bad input found after parsing; exit 2 with this one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def size(text: str) -> int:
    """``73400320``, ``70MB``, ``64KiB``, ``1GiB``: SI and IEC units."""
    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole(text: str) -> int:
    """A whole number in ASCII digits: int() alone takes "1_000" and "٣"."""
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"not a whole number: {text!r}")
    return int(text)


def bounded(name: str, low: int, high: int, parse: Callable[[str], int]) -> Callable[[str], int]:
    """A whole number (read with ``parse``) from ``low`` to ``high``."""

    def convert(text: str) -> int:
        try:
            value = parse(text)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"{name} must be a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be {low} to {high}: {text!r}")
        return value

    return convert


_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def seconds(text: str) -> float:
    """A number of seconds, 0 or more."""
    if text.startswith("-") and _SECONDS.fullmatch(text[1:]):
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more: {text!r}")
    if not _SECONDS.fullmatch(text):  # float() would take "1_0", "inf" and "٣"
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return float(text)


def positive_seconds(text: str) -> float:
    """A number of seconds, more than 0."""
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be more than 0: {text!r}")
    return value


def positive_number(text: str) -> float:
    """A number more than 0 (a rate): ``200``, ``0.5``."""
    if not _SECONDS.fullmatch(text) or not float(text) > 0:
        raise argparse.ArgumentTypeError(f"not a number more than 0: {text!r}")
    return float(text)


port = bounded("port", 0, 65535, whole)  # 0: a free port, for a server
peer_port = bounded("port", 1, 65535, whole)  # a client cannot connect to port 0


def knob(text: str) -> tuple[str, int]:
    """``PATH=SIZE``: a module or class attribute and the whole number to set it to."""
    path, equals, value = text.partition("=")
    if not equals or "." not in path or not all(part.isidentifier() for part in path.split(".")):
        raise argparse.ArgumentTypeError(
            f"not a knob: {text!r} (use PATH=SIZE, e.g. nbio.asyncio_impl.server.READ_SIZE=64KiB)"
        )
    return path, size(value)


def variant(text: str) -> Target:
    """``IMPL[/LOOP]:PATH=SIZE[,PATH=SIZE...]``: a row with knobs set in both processes."""
    name, colon, knobs = text.partition(":")
    impl, _, loop = name.partition("/")
    if not colon or not impl or not knobs:
        raise argparse.ArgumentTypeError(
            f"not a variant: {text!r} (use IMPL[/LOOP]:PATH=SIZE[,PATH=SIZE])"
        )
    return Target(impl, loop or "default", tuple(knob(k) for k in knobs.split(",")))
