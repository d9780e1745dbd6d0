"""Argument parsing shared by the commands: a parser whose errors are one line, and option types.

Each option type turns a bad value into a message saying what is accepted, with an example.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from datetime import datetime, timezone

from filelog_bus.cli.exits import EXIT_USAGE
from filelog_bus.errors import InvalidRecordError
from filelog_bus.record import validate_category


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and EXIT_USAGE."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def help_formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=100)


def offset_arg(text: str) -> int | str:
    """--from: a non-negative integer, or "end"."""
    if text == "end":
        return text
    try:
        value = int(text, 16) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid offset {text!r}: give a byte offset such as 4096 (or 'end')"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid offset {text}: offsets are >= 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a whole number such as 10") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text}: it must be at least 1")
    return value


def category_arg(text: str) -> str:
    try:
        validate_category(text)
    except InvalidRecordError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> float:
    """A time given on the command line, as UTC epoch seconds.

    Accepts ISO 8601 (naive times are UTC: the dump prints UTC), a duration ago (30m, 2h,
    7d, 1w) or @epoch-seconds (as GNU date does: a bare number would be ambiguous with a year).
    Raises ValueError with a message saying what is accepted.
    """
    text = text.strip()
    duration = _DURATION.match(text)
    if duration:
        now = time.time() if now is None else now
        return now - float(duration.group(1)) * _DURATION_SECONDS[duration.group(2)]
    if text.startswith("@"):
        try:
            epoch = float(text[1:])
        except ValueError:
            epoch = math.nan
        if math.isfinite(epoch):
            return epoch
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: give an ISO 8601 time such as 2024-05-01T12:00:00Z or 2024-05-01 "
            f"(naive times are UTC), a duration ago such as 30m, 2h or 7d, or epoch seconds such as @1714564800"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def time_arg(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_BYTE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_BYTES = re.compile(r"^(\d+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


def byte_count(text: str) -> int:
    match = _BYTES.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: give a number of bytes such as 1000000, 500M or 2G (powers of 1024)"
        )
    return int(match.group(1)) * _BYTE_UNITS[match.group(2).upper()]


def days_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number of days {text!r}: give a number such as 7 or 0.5"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid number of days {text}: it must be more than 0")
    return value


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {text!r}: give a number such as 30"
        ) from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text}: it must be 0 or more")
    return value


def duration_arg(text: str) -> float:
    """A duration such as 90s, 15m, 2h, 7d, 1w (or plain seconds), in seconds."""
    match = _DURATION.match(text.strip())
    if match:
        return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    raise argparse.ArgumentTypeError(
        f"invalid duration {text!r}: give a number with a unit such as 90s, 15m, 2h or 7d"
    )


def count_arg(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number {text!r}: give a whole number such as 1000"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid number {text}: it must be 0 or more")
    return value


def target_offset_arg(text: str) -> int | str:
    """--set-offsets: "start", "end" or an offset >= 0."""
    if text in ("start", "end"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid offset {text!r}: give start, end or an offset such as 0"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid offset {text}: offsets are >= 0")
    return value
