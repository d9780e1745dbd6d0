"""Argument parsing shared by the commands: a parser whose errors are one line, and option types.

Each option type turns a bad value into a message saying what is accepted, with an example.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TypeVar

from filelog_bus.cli.exits import EXIT_USAGE
from filelog_bus.errors import InvalidRecordError
from filelog_bus.record import validate_category

Number = TypeVar("Number", int, float)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and EXIT_USAGE."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def help_formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=100)


def offset_arg(text: str) -> int | str:
    """--from: a non-negative integer (decimal, or hexadecimal with 0x), or "end"."""
    if text == "end":
        return text
    return _checked(
        text,
        lambda t: int(t, 16) if t[:2].lower() == "0x" else int(t),
        "offset",
        "a byte offset such as 4096 (or 'end')",
        lambda value: value >= 0,
        "offsets are >= 0",
    )


def positive_int(text: str) -> int:
    return _checked(
        text, int, "number", "a whole number such as 10", lambda v: v >= 1, "it must be at least 1"
    )


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
    return _checked(
        text,
        float,
        "number of days",
        "a number such as 7 or 0.5",
        lambda value: math.isfinite(value) and value > 0,
        "it must be more than 0",
    )


def seconds_arg(text: str) -> float:
    return _checked(
        text,
        float,
        "number of seconds",
        "a number such as 30",
        lambda value: math.isfinite(value) and value >= 0,
        "it must be 0 or more",
    )


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
    return _checked(
        text, int, "number", "a whole number such as 1000", lambda v: v >= 0, "it must be 0 or more"
    )


def target_offset_arg(text: str) -> int | str:
    """--set-offsets: "start", "end", "kafka", "from-kafka" or an offset >= 0."""
    if text in ("start", "end", "kafka", "from-kafka"):
        return text
    return _checked(
        text,
        int,
        "offset",
        "start, end, kafka, from-kafka or an offset such as 0",
        lambda value: value >= 0,
        "offsets are >= 0",
    )


def _checked(
    text: str,
    convert: Callable[[str], Number],
    what: str,
    example: str,
    accept: Callable[[Number], bool],
    rule: str,
) -> Number:
    """``convert(text)``, refused with "invalid WHAT: give EXAMPLE" when it is not a number, and
    with "invalid WHAT: RULE" when ``accept`` refuses it."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: give {example}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"invalid {what} {text}: {rule}")
    return value


def add_kafka_arguments(parser: argparse._ActionsContainer, *, required: bool, topic_help: str) -> None:
    """--bootstrap-server, --topic and --timeout, as kafka-export and clients --set-offsets kafka take them."""
    parser.add_argument(
        "--bootstrap-server",
        metavar="HOST:PORT[,HOST:PORT...]",
        required=required,
        help="the Kafka brokers to connect to first (e.g. --bootstrap-server kafka1:9092,kafka2:9092)",
    )
    parser.add_argument("--topic", required=required, help=topic_help)
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=seconds_arg,
        help="how long to wait for the brokers' answer before failing, 1 to 3600; default 30 "
        "(e.g. --timeout 60)",
    )
