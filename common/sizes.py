"""Byte sizes as people write them: ``73400320``, ``70MB`` (SI), ``64KiB``, ``1GiB`` (IEC)."""

from __future__ import annotations

import re

__all__ = ["MAX_SIZE", "SizeError", "format_size", "human_size", "parse_size"]

# SI units are powers of 1000, IEC units powers of 1024. Unit names are case-insensitive
# ("70mb" is 70 MB), because nobody means millibits on a command line.
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_IEC = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))
# ASCII digits only: \d would take ٣ or ३ too, which nobody types for a size.
_PATTERN = re.compile(r"^ *(?P<number>[0-9]+(?:\.[0-9]+)?) *(?P<unit>[A-Za-z]*) *$")

#: Large enough for "several GiB" many times over, small enough to catch a typo.
MAX_SIZE = 1024**5


class SizeError(ValueError):
    """A size that cannot be read; the message says why, in one line."""


def parse_size(text: str) -> int:
    """Return the number of bytes that ``text`` names, or raise :class:`SizeError`."""
    match = _PATTERN.match(text)
    if match is None:
        if text.strip().startswith("-"):
            raise SizeError(f"size must not be negative: {text!r}")
        raise SizeError(f"not a size: {text!r} (try 73400320, 70MB, 64KiB or 1GiB)")
    unit: str = match["unit"].lower()
    if unit not in _UNITS:
        raise SizeError(
            f"unknown unit {match['unit']!r} in {text!r} "
            "(use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    number: str = match["number"]
    whole, _, fraction = number.partition(".")
    scale = _UNITS[unit]
    # Exact integer arithmetic: 1.5GiB is 1610612736 bytes, 0.5B is an error.
    numerator = int(whole + fraction) * scale
    denominator: int = 10 ** len(fraction)
    if numerator % denominator:
        raise SizeError(f"{text!r} is not a whole number of bytes")
    size = numerator // denominator
    if size > MAX_SIZE:
        raise SizeError(f"size {text!r} is larger than the limit of 1 PiB")
    return size


def format_size(size: int) -> str:
    """Return the exact text for ``size`` that :func:`parse_size` reads back: ``70MiB``."""
    if size < 0:
        raise SizeError(f"size must not be negative: {size}")
    for name, scale in _IEC:
        if size and size % scale == 0:
            return f"{size // scale}{name}"
    return str(size)


def human_size(size: float) -> str:
    """Return a rounded size for people to read: ``1.00 GiB``."""
    for name, scale in _IEC:
        if abs(size) >= scale:
            return f"{size / scale:.2f} {name}"
    return f"{size:.0f} B"
