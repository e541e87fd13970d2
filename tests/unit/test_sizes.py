"""Size parsing: what people type, exactly, or one clear error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbio.common.sizes import MAX_SIZE, SizeError, format_size, human_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("73400320", 73_400_320),
        ("0", 0),
        ("70MB", 70_000_000),
        ("70mb", 70_000_000),
        ("70MiB", 73_400_320),
        ("64KiB", 65_536),
        ("64kb", 64_000),
        ("1GiB", 1_073_741_824),
        ("1GB", 1_000_000_000),
        ("1.5GiB", 1_610_612_736),
        (" 12 B ", 12),
        ("2TiB", 2 * 1024**4),
    ],
)
def test_parse_size_reads_si_and_iec_units(text: str, size: int) -> None:
    """SI units are powers of 1000, IEC units powers of 1024, plain numbers are bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a size"),
        ("lots", "not a size"),
        ("-1", "negative"),
        ("1.2.3MB", "not a size"),
        ("5XB", "unknown unit"),
        ("0.5B", "whole number"),
        ("2000TiB", "larger than the limit"),
    ],
)
def test_parse_size_refuses_with_a_clear_message(text: str, message: str) -> None:
    """Each bad size names what is wrong with it."""
    with pytest.raises(SizeError, match=message):
        parse_size(text)


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_format_size_round_trips(size: int) -> None:
    """Whatever size we print, we read back the same number of bytes."""
    assert parse_size(format_size(size)) == size


def test_format_size_prefers_the_largest_exact_unit() -> None:
    """The talk's payload is exactly 70 MiB, and says so."""
    assert format_size(73_400_320) == "70MiB"
    assert format_size(1025) == "1025"
    assert human_size(1024**3) == "1.00 GiB"
