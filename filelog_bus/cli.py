"""Operator commands: ``filelog-dump`` and ``filelog-bus stats|verify|retention|demo|hermes-install``.

A thin layer: the engine (LogReader, LogWriter) and filelog_bus.check do the work; this
module parses arguments, formats results and turns every error a user can cause into one
line on stderr and a documented exit status (EXIT_STATUSES), never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, TextIO

from filelog_bus import check
from filelog_bus.errors import (
    BusLockedError,
    ConfigError,
    CorruptionError,
    FilelogBusError,
    InvalidOffsetError,
    InvalidRecordError,
    NotABusError,
    OffsetOutOfRangeError,
    RecordsExpiredError,
)
from filelog_bus.reader import LogReader
from filelog_bus.record import Record, validate_category
from filelog_bus.writer import LogWriter

EXIT_OK = 0
#: filelog-dump: nothing to print (empty bus, or no record matched). verify: problems found.
EXIT_NOTHING = EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_NOT_A_BUS = 3
EXIT_OUT_OF_RANGE = 4
EXIT_DAMAGED = 5
EXIT_LOCKED = 6
EXIT_FAILED = 7
EXIT_INTERRUPTED = 130

EXIT_STATUSES = f"""\
exit status:
  {EXIT_OK}    success (also: --follow ended with Ctrl-C, or the output pipe was closed, as by | head)
  {EXIT_NOTHING}    filelog-dump: nothing to print (the bus is empty, or no record matched);
       verify: the bus has problems (each one is printed)
  {EXIT_USAGE}    bad command line: unknown option, bad number, offset or time
  {EXIT_NOT_A_BUS}    the path is not a bus (missing, not a directory, or holds no filelog-bus)
  {EXIT_OUT_OF_RANGE}    the offset is not on the bus (the message gives the valid range)
  {EXIT_DAMAGED}    a damaged segment or watermark (run filelog-bus verify for every problem)
  {EXIT_LOCKED}    retention, verify --repair: a writer (the server) holds the bus's writer lock
  {EXIT_FAILED}    operating-system error (permission denied, I/O error, disk full)
  {EXIT_INTERRUPTED}  interrupted with Ctrl-C (except filelog-dump --follow, which ends with 0)
"""

#: How often --follow looks for new records (seconds); `tail -f` uses 1 s.
FOLLOW_POLL_SECONDS = 0.1
#: Characters of payload shown in a dump line.
PREVIEW_CHARS = 72
#: Payload bytes decoded for a preview (a preview never needs more).
_PREVIEW_BYTES = 4 * PREVIEW_CHARS
#: Payloads up to this size that hold JSON are shown compacted in the preview.
_PREVIEW_JSON_BYTES = 64 * 1024


# -- argument parsing ----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and EXIT_USAGE."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=100)


def _offset(text: str) -> int | str:
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a whole number such as 10") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text}: it must be at least 1")
    return value


def _category(text: str) -> str:
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


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_BYTE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_BYTES = re.compile(r"^(\d+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


def _byte_count(text: str) -> int:
    match = _BYTES.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: give a number of bytes such as 1000000, 500M or 2G (powers of 1024)"
        )
    return int(match.group(1)) * _BYTE_UNITS[match.group(2).upper()]


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number of days {text!r}: give a number such as 7 or 0.5"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid number of days {text}: it must be more than 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number of seconds {text!r}: give a number such as 30"
        ) from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text}: it must be 0 or more")
    return value


# -- formatting --------------------------------------------------------------------


def format_time(timestamp: float | None, timespec: str = "milliseconds") -> str:
    """ISO 8601 UTC with a Z, as --since/--until accept it; '-' for None."""
    if timestamp is None:
        return "-"
    try:
        moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return repr(timestamp)  # a timestamp the writer accepted but datetime cannot show
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def _printable(text: str, keep: str = "") -> str:
    """Escape control characters (a payload must not drive the terminal), except those in ``keep``."""
    if text.isprintable():
        return text
    return "".join(
        c if c in keep or c.isprintable() or unicodedata.category(c) == "Zs" else repr(c)[1:-1] for c in text
    )


def _decoded(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _as_text(payload: bytes) -> str | None:
    """The payload as text for a human, or None when it looks binary: not UTF-8, or holding a NUL
    byte (the test git and grep use)."""
    return None if b"\0" in payload else _decoded(payload)


def payload_preview(payload: bytes, width: int = PREVIEW_CHARS) -> str:
    """One short line: compact JSON, text with whitespace collapsed, or hex for binary payloads."""
    head = payload[:_PREVIEW_BYTES]
    whole = len(head) == len(payload)
    shown = width // 2 - 4
    binary = f"hex:{payload[:shown].hex()}" + ("…" if len(payload) > shown else "")
    if b"\0" in head:
        return binary
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if whole or exc.reason != "unexpected end of data":
            return binary
        text = head[: exc.start].decode("utf-8")  # a character cut by the preview's end
    if len(payload) <= _PREVIEW_JSON_BYTES and text.lstrip()[:1] in ("{", "["):
        try:
            text = json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False)
            whole = True
        except ValueError:
            pass
    text = _printable(" ".join(text.split()))
    if len(text) > width:
        return text[: width - 1] + "…"
    return text if whole else text + "…"


def dump_line(record: Record, *, preview: bool = True) -> str:
    """OFFSET  TIME  CATEGORY  SIZE  PREVIEW: what filelog-dump prints for one record."""
    line = f"{record.offset:>10}  {format_time(record.timestamp)}  {_printable(record.category):<10}  {record.size:>6}"
    return f"{line}  {payload_preview(record.payload)}" if preview else line


def dump_full(record: Record) -> str:
    """The dump line followed by the whole payload, indented (a hex dump for binary payloads)."""
    text = _as_text(record.payload)
    if text is not None:
        body = _printable(text, keep="\n\t").splitlines() or [""]
    else:
        body = [
            f"{i:08x}  {record.payload[i : i + 16].hex(' '):<47}  "
            + "".join(chr(b) if 32 <= b < 127 else "." for b in record.payload[i : i + 16])
            for i in range(0, len(record.payload), 16)
        ]
    return "\n".join([dump_line(record, preview=False), *("    " + line for line in body)])


def record_json(record: Record) -> dict[str, Any]:
    """The --json object: the payload as text, or as base64 when it is not UTF-8 (payload_encoding says)."""
    text = _decoded(record.payload)
    return {
        "offset": record.offset,
        "next_offset": record.next_offset,
        "time": format_time(record.timestamp, "microseconds"),
        "timestamp": record.timestamp,
        "category": record.category,
        "size": record.size,
        "payload_size": len(record.payload),
        "payload_encoding": "utf-8" if text is not None else "base64",
        "payload": text if text is not None else base64.b64encode(record.payload).decode("ascii"),
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table_lines(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_stats(stats: check.BusStats) -> str:
    lines = [
        f"bus          {stats.path}",
        f"records      {stats.record_count} in {_count(len(stats.segments), 'segment')}: "
        f"{_count(stats.bytes, 'byte')} ({_human_bytes(stats.bytes)}); "
        f"{_human_bytes(stats.disk_bytes)} on disk with the indexes",
    ]
    if stats.record_count:
        lines += [
            f"oldest       offset {stats.oldest_offset} at {format_time(stats.oldest_time)}",
            f"newest       offset {stats.newest_offset} at {format_time(stats.newest_time)}",
        ]
    else:
        lines.append("oldest       - (the bus is empty)")
    lines.append(f"end offset   {stats.end_offset} (the next record's offset)")
    lines.append(f"categories   {len(stats.categories)}")
    if stats.categories:
        lines += table_lines([[_printable(name), str(count)] for name, count in stats.categories.items()])
    lines.append(f"segments     {len(stats.segments)} (* = the active segment, appended to)")
    rows = [["FILE", "FIRST", "LAST", "END", "RECORDS", "BYTES", "FIRST TIME", "LAST TIME"]]
    for s in stats.segments:
        rows.append(
            [
                s.name + ("*" if s.active else ""),
                "-" if s.first_offset is None else str(s.first_offset),
                "-" if s.last_offset is None else str(s.last_offset),
                str(s.end),
                str(s.record_count),
                str(s.bytes),
                format_time(s.first_time),
                format_time(s.last_time),
            ]
        )
    lines += table_lines(rows)
    return "\n".join(lines)


def stats_json(stats: check.BusStats) -> dict[str, Any]:
    data = asdict(stats)
    data["oldest_iso"] = format_time(stats.oldest_time, "microseconds") if stats.record_count else None
    data["newest_iso"] = format_time(stats.newest_time, "microseconds") if stats.record_count else None
    for segment, raw in zip(stats.segments, data["segments"], strict=True):
        raw["bytes"] = segment.bytes
        raw["first_iso"] = format_time(segment.first_time, "microseconds") if segment.record_count else None
        raw["last_iso"] = format_time(segment.last_time, "microseconds") if segment.record_count else None
    return data


def format_verify(report: check.VerifyReport) -> str:
    upto = (
        f"up to offset {report.checked_to} (the watermark)"
        if report.checked_to is not None
        else "up to the last complete record (the watermark is unreadable)"
    )
    lines = [
        f"checked {report.path}: {_count(report.segments, 'segment')}, {_count(report.records, 'record')}, "
        f"{_count(report.bytes, 'byte')} and {_count(report.index_files, 'index file')}, {upto}"
    ]
    lines += [f"problem: {problem}" for problem in report.problems]
    lines += [f"note: {note}" for note in report.notes]
    count = len(report.problems)
    lines.append("result: healthy" if report.healthy else f"result: {_count(count, 'problem')}")
    return "\n".join(lines)


class _ProgressBar:
    """A one-line progress bar on a terminal's stderr, redrawn at most 10 times a second."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.drawn_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.drawn_at < 0.1 and done < total:
            return
        self.drawn_at = now
        fraction = min(done / total, 1.0) if total else 1.0
        filled = int(fraction * 30)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
            f"{_human_bytes(done)} of {_human_bytes(total)}\x1b[K"
        )
        self.stream.flush()

    def clear(self) -> None:
        if self.drawn_at:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _progress_bar(label: str) -> _ProgressBar | None:
    """A progress bar when stderr is a terminal; None when it is piped or redirected."""
    return _ProgressBar(label, sys.stderr) if sys.stderr.isatty() else None


# -- running a command ---------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(prog: str, message: str, status: int) -> int:
    sys.stderr.write(f"{prog}: error: {_one_line(message)}\n")
    return status


def _os_message(exc: OSError) -> str:
    message = exc.strerror or str(exc)
    return f"{message}: {exc.filename}" if exc.filename and str(exc.filename) not in message else message


def _discard_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot fail noisily."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _run(prog: str, command: Callable[[], int]) -> int:
    """Run a command; map every error a user can cause to one stderr line and an exit status."""
    try:
        status = command()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _discard_stdout()  # the reader of our output is gone (| head): nothing is wrong
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except NotABusError as exc:
        return fail(prog, str(exc), EXIT_NOT_A_BUS)
    except OffsetOutOfRangeError as exc:
        return fail(prog, str(exc), EXIT_OUT_OF_RANGE)
    except CorruptionError as exc:
        advice = (
            "" if "filelog-bus verify" in str(exc) else "; run `filelog-bus verify` to list every problem"
        )
        return fail(prog, f"{exc}{advice}", EXIT_DAMAGED)
    except BusLockedError as exc:
        return fail(prog, str(exc), EXIT_LOCKED)
    except (ConfigError, InvalidOffsetError, InvalidRecordError) as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except OSError as exc:  # includes BusWriteError and BusPermissionError
        return fail(prog, _os_message(exc), EXIT_FAILED)
    except FilelogBusError as exc:
        return fail(prog, str(exc), EXIT_FAILED)


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")


# -- filelog-dump ------------------------------------------------------------------


DUMP_DESCRIPTION = """\
Print the records of a filelog-bus, one line each:

  OFFSET  TIME (UTC, ISO 8601)  CATEGORY  SIZE  PAYLOAD PREVIEW

OFFSET is the record's byte position on the bus; SIZE its size on the bus (the next record
starts at OFFSET+SIZE). The preview shows JSON compacted, other text with its whitespace
collapsed and control characters escaped, and binary payloads (not UTF-8, or holding a NUL
byte) as hex:...; --payload shows those as a hex dump. Only records the writer has made durable
are shown (those below the watermark). Never takes the writer lock, never writes into the bus
directory: safe while a writer is appending. If retention deletes records before they are
printed, a warning on stderr says which offsets were skipped and the dump goes on."""

DUMP_EPILOG = f"""\
examples:
  filelog-dump /var/lib/hermes/bus                         every record, oldest first
  filelog-dump /var/lib/hermes/bus --limit 20              the first 20 records
  filelog-dump /var/lib/hermes/bus --from 1048576          from the first record at or after offset 1048576
  filelog-dump /var/lib/hermes/bus --category initsync     only the initsync sequence (category index)
  filelog-dump /var/lib/hermes/bus --since 2h              records of the last two hours
  filelog-dump /var/lib/hermes/bus --since 2024-05-01 --until 2024-05-02T06:00Z
  filelog-dump /var/lib/hermes/bus --from end --follow     like tail -f: new records only, until Ctrl-C
  filelog-dump /var/lib/hermes/bus --payload --limit 1     a record with its whole payload
  filelog-dump /var/lib/hermes/bus --json | jq -r '.payload | fromjson | .eventtype'

--json prints one object per line: offset, next_offset, time (ISO, UTC), timestamp (epoch
seconds), category, size, payload_size, payload_encoding and payload. payload is the payload
decoded as UTF-8 text when payload_encoding is "utf-8"; for a payload that is not valid UTF-8,
payload_encoding is "base64" and payload holds it in base64.

times (--since, --until): ISO 8601 such as 2024-05-01, 2024-05-01T12:00:00Z or
2024-05-01T14:00+02:00 (a time without a zone is UTC, like the dump's output), a duration ago
such as 30s, 15m, 2h, 7d, 1w, or epoch seconds such as @1714564800.

{EXIT_STATUSES}"""


def dump_parser(prog: str = "filelog-dump") -> _Parser:
    """The parser of filelog-dump (public so that tests can check every option's help)."""
    parser = _Parser(
        prog=prog, description=DUMP_DESCRIPTION, epilog=DUMP_EPILOG, formatter_class=_help_formatter
    )
    parser.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="OFFSET",
        type=_offset,
        help="start at the first record whose offset is >= OFFSET, as a reader's seek does; "
        "'end' starts after the last record (e.g. --from 4096, --from end)",
    )
    parser.add_argument(
        "--category",
        metavar="NAME",
        type=_category,
        help="only records of this category, found through the category index (e.g. --category base)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        type=_time,
        help="only records written at or after TIME (e.g. --since 2024-05-01T08:00Z, --since 2h)",
    )
    parser.add_argument(
        "--until",
        metavar="TIME",
        type=_time,
        help="only records written before TIME (e.g. --until 2024-05-02); not with --follow",
    )
    parser.add_argument(
        "--limit", metavar="N", type=_positive_int, help="stop after N records (e.g. --limit 10)"
    )
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="at the end of the bus, wait for new records and print them as they arrive, like "
        "tail -f, until Ctrl-C (e.g. --from end --follow)",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line with the whole payload, for jq (e.g. --json | jq .category)",
    )
    form.add_argument(
        "--payload",
        action="store_true",
        help="print each record's whole payload under its line, indented (e.g. --payload --limit 1)",
    )
    return parser


def dump_main(argv: Sequence[str] | None = None, prog: str = "filelog-dump") -> int:
    """Entry point of ``filelog-dump``."""
    args = dump_parser(prog).parse_args(argv)
    if args.follow and args.until is not None:
        return fail(prog, "--until cannot be combined with --follow: a follow has no end time", EXIT_USAGE)
    if args.since is not None and args.until is not None and args.since >= args.until:
        return fail(
            prog,
            f"--since ({format_time(args.since)}) must be before --until ({format_time(args.until)})",
            EXIT_USAGE,
        )
    return _run(prog, lambda: _dump(prog, args))


def _dump(prog: str, args: argparse.Namespace) -> int:
    with LogReader(
        args.path, timeout=None if args.follow else 0, poll_interval=FOLLOW_POLL_SECONDS
    ) as reader:
        if not args.follow and reader.begin_offset == reader.end_offset:
            return fail(
                prog,
                f"the bus at {args.path} is empty: it holds no record yet (--follow waits for records)",
                EXIT_NOTHING,
            )
        if args.start is not None:
            reader.seek(reader.end_offset if args.start == "end" else args.start)
        if args.payload:
            show: Callable[[Record], str] = dump_full
        elif args.json:
            show = lambda record: json.dumps(record_json(record), ensure_ascii=False)  # noqa: E731
        else:
            show = dump_line
        printed = 0
        try:
            for record in _selected(reader, args, prog):
                write_line(show(record))
                printed += 1
                if args.follow:
                    sys.stdout.flush()
                if args.limit is not None and printed >= args.limit:
                    break
        except KeyboardInterrupt:
            if not args.follow:
                raise
            sys.stdout.flush()
            return EXIT_OK
    if not printed and not args.follow:
        return fail(prog, f"no record matched {_filters(args)}", EXIT_NOTHING)
    return EXIT_OK


def _selected(reader: LogReader, args: argparse.Namespace, prog: str) -> Iterator[Record]:
    for record in _surviving_retention(reader, args, prog):
        if args.since is not None and record.timestamp < args.since:
            continue
        if args.until is not None and record.timestamp >= args.until:
            continue
        yield record


def _surviving_retention(reader: LogReader, args: argparse.Namespace, prog: str) -> Iterator[Record]:
    """The records from the position on; when retention deletes some first, say so and go on."""
    while True:
        try:
            yield from _of_category(reader, args.category) if args.category else iter(reader)
            return
        except RecordsExpiredError as exc:
            sys.stdout.flush()
            sys.stderr.write(
                f"{prog}: warning: retention deleted offsets {exc.offset} to {exc.begin} before they were "
                f"printed; going on from offset {exc.begin}\n"
            )
            reader.seek(exc.begin)


def _filters(args: argparse.Namespace) -> str:
    """The options that select records, as given: for the "no record matched" message."""
    given = [
        f"--from {args.start}" if args.start is not None else "",
        f"--category {args.category}" if args.category else "",
        f"--since {format_time(args.since)}" if args.since is not None else "",
        f"--until {format_time(args.until)}" if args.until is not None else "",
    ]
    return " ".join(option for option in given if option)


def _of_category(reader: LogReader, category: str) -> Iterator[Record]:
    """Records of one category through the category index; with --follow (timeout None) waiting for more."""
    while (record := reader.find_next_waiting(category)) is not None:
        yield record


# -- filelog-bus ---------------------------------------------------------------------


MAIN_DESCRIPTION = """\
Operate a filelog-bus: what is on it, is it healthy, apply retention, install the Hermes plugins.
Read-only commands (dump, stats, verify) never take the writer lock and never write into the bus
directory: run them while the server is appending."""

MAIN_EPILOG = f"""\
examples:
  filelog-bus demo /tmp/filelog-demo                       write a small Hermes-like bus and read it back
  filelog-bus stats /var/lib/hermes/bus                    segments, record counts, categories, times
  filelog-bus verify /var/lib/hermes/bus                   check checksums, segments and indexes
  filelog-bus retention /var/lib/hermes/bus --days 30      delete closed segments older than 30 days
  filelog-bus dump /var/lib/hermes/bus --limit 10          the same as filelog-dump
  filelog-bus hermes-install /opt/hermes                   install the filelog plugins into Hermes
  filelog-bus COMMAND --help                               the options of a command

{EXIT_STATUSES}"""

STATS_EPILOG = f"""\
examples:
  filelog-bus stats /var/lib/hermes/bus
  filelog-bus stats /var/lib/hermes/bus --json | jq '.categories'

Reads every record below the watermark once (it counts records and categories), so it takes
about as long as reading the bus. --json prints one object: path, record_count, bytes,
disk_bytes, categories (name -> count), begin_offset, end_offset, oldest_offset, oldest_time,
oldest_iso, newest_offset, newest_time, newest_iso and segments (name, base, end, file_size,
bytes, record_count, first_offset, last_offset, first_time, last_time, first_iso, last_iso,
active). Times are epoch seconds (*_time) and ISO 8601 UTC (*_iso).

{EXIT_STATUSES}"""

VERIFY_EPILOG = f"""\
examples:
  filelog-bus verify /var/lib/hermes/bus
  filelog-bus verify /var/lib/hermes/bus --json | jq '.problems[]'
  filelog-bus verify /var/lib/hermes/bus --repair --wait 60     rebuild damaged index files

Checks, in every segment: the file header; every record's header and body checksums and
framing; that each closed segment ends exactly where the next one begins; and both indexes of
each segment (file header, chained CRC, and that every entry is what a rebuild from the
segment would write, with the block size recorded in the index's header). Only records below
the watermark are checked, so a writer appending meanwhile is not reported as damage. Each
problem is printed as "problem: FILE at file position P (offset O): what and what to do". A
progress bar is drawn on stderr when stderr is a terminal. Without --repair, verify only reads.
Indexes are derived data: --repair rebuilds damaged ones from their segments under the writer
lock (Hermes's server releases it between update loops; --wait waits for it). Damaged records
cannot be rebuilt: restore their segment from a backup.

{EXIT_STATUSES}"""

RETENTION_EPILOG = f"""\
examples:
  filelog-bus retention /var/lib/hermes/bus --days 30          delete closed segments older than 30 days
  filelog-bus retention /var/lib/hermes/bus --bytes 10G        keep the bus under 10 GiB
  filelog-bus retention /var/lib/hermes/bus --days 7 --bytes 500M --dry-run
  filelog-bus retention /var/lib/hermes/bus --days 30 --wait 60

Deletes whole closed segments, oldest first: those whose newest record is older than --days,
then more while the bus is bigger than --bytes. The active segment is never deleted. Readers
that were behind the deleted records get an error saying so. This needs the writer lock: while
a writer (the server) holds it, the command says so and exits with status {EXIT_LOCKED}; --wait
waits for the lock (Hermes's server releases it between update loops), --dry-run needs no lock.

{EXIT_STATUSES}"""

DEMO_EPILOG = f"""\
examples:
  filelog-bus demo /tmp/filelog-demo
  filelog-bus demo /tmp/filelog-demo          again: appends more events to the same bus

A writer process appends a short Hermes-like sequence (an initsync sequence, then base events,
as JSON) to the bus in DIR, creating it if needed, while this process reads it back as it
arrives; then it shows what filelog-dump, stats and verify print, and what to try next. DIR must
be missing, empty, or a bus (anything else is refused, exit status {EXIT_NOT_A_BUS}). Give it a
directory of its own, not a production bus: the demo appends its events to whatever bus is there.

{EXIT_STATUSES}"""


def main_parser() -> _Parser:
    """The parser of filelog-bus and its subcommands."""
    parser = _Parser(
        prog="filelog-bus",
        description=MAIN_DESCRIPTION,
        epilog=MAIN_EPILOG,
        formatter_class=_help_formatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub = {"formatter_class": _help_formatter}

    stats = commands.add_parser(
        "stats", help="what is on a bus: segments, records, categories, times", epilog=STATS_EPILOG, **sub
    )
    stats.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    stats.add_argument(
        "--json", action="store_true", help="one JSON object, for jq (e.g. --json | jq .record_count)"
    )
    stats.set_defaults(handler=_stats)

    verify = commands.add_parser(
        "verify",
        help="check every record, segment and index; exit 1 on problems",
        epilog=VERIFY_EPILOG,
        **sub,
    )
    verify.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    verify.add_argument(
        "--json", action="store_true", help="the report as one JSON object (e.g. --json | jq '.problems')"
    )
    verify.add_argument(
        "--repair",
        action="store_true",
        help="then rebuild the damaged index files, taking the writer lock, and check again; damaged "
        "records cannot be repaired (e.g. --repair --wait 60)",
    )
    verify.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        default=0.0,
        help="with --repair, wait up to SECONDS for the writer lock (e.g. --wait 60)",
    )
    verify.set_defaults(handler=_verify)

    retention = commands.add_parser(
        "retention",
        help="delete old closed segments now (needs the writer lock)",
        epilog=RETENTION_EPILOG,
        **sub,
    )
    retention.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    retention.add_argument(
        "--days",
        metavar="N",
        type=_days,
        help="delete closed segments whose newest record is older than N days (e.g. --days 30, --days 0.5)",
    )
    retention.add_argument(
        "--bytes",
        metavar="N",
        type=_byte_count,
        help="then delete the oldest closed segments while the bus "
        "is bigger than N bytes; K, M, G, T suffixes are powers of 1024 (e.g. --bytes 10G)",
    )
    retention.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        default=0.0,
        help="wait up to SECONDS for the writer lock instead of giving up at once (e.g. --wait 60)",
    )
    retention.add_argument(
        "--dry-run",
        action="store_true",
        help="only print what would be deleted; takes no lock (e.g. --days 7 --dry-run)",
    )
    retention.set_defaults(handler=_retention)

    demo = commands.add_parser(
        "demo", help="write a small Hermes-like bus and read it back", epilog=DEMO_EPILOG, **sub
    )
    demo.add_argument(
        "dir", metavar="DIR", help="where to create (or append to) the demo bus (e.g. /tmp/filelog-demo)"
    )
    demo.set_defaults(handler=_demo)

    # Listed for --help only: main() hands these commands their arguments untouched.
    commands.add_parser(
        "dump", help="print records: the same as filelog-dump (see filelog-bus dump --help)", add_help=False
    )
    commands.add_parser(
        "hermes-install",
        help="install the filelog plugins into a Hermes tree (see filelog-bus hermes-install --help)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``filelog-bus``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hermes-install"]:
        from filelog_bus.hermes_install import main as hermes_install_main  # only this command needs it

        return hermes_install_main(argv[1:])
    if argv[:1] == ["dump"]:
        return dump_main(argv[1:], prog="filelog-bus dump")
    args = main_parser().parse_args(argv)
    prog = f"filelog-bus {args.command}"
    return _run(prog, lambda: args.handler(prog, args))


def _stats(prog: str, args: argparse.Namespace) -> int:
    bar = None if args.json else _progress_bar("stats")
    try:
        stats = check.bus_stats(args.path, progress=bar)
    finally:
        if bar is not None:
            bar.clear()
    write_line(
        json.dumps(stats_json(stats), indent=2, ensure_ascii=False) if args.json else format_stats(stats)
    )
    return EXIT_OK


def _verify(prog: str, args: argparse.Namespace) -> int:
    report = _verified(args.path)
    repaired: list[str] = []
    if args.repair and _damaged_indexes(report):
        if not args.json:
            write_line(format_verify(report))
        try:
            _repair_indexes(args.path, args.wait)
            repaired = _damaged_indexes(report)
        except BusLockedError as exc:
            return _locked(prog, args.path, exc, args.wait, "repairing indexes")
        if not args.json:
            write_line(f"repaired: rebuilt {', '.join(repaired)}")
        report = _verified(args.path)
    if args.json:
        data = {**asdict(report), "healthy": report.healthy, "repaired": repaired}
        write_line(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        write_line(format_verify(report))
    return EXIT_OK if report.healthy else EXIT_PROBLEMS


def _verified(path: str) -> check.VerifyReport:
    bar = _progress_bar("verify")
    try:
        return check.verify_bus(path, progress=bar)
    finally:
        if bar is not None:
            bar.clear()


def _damaged_indexes(report: check.VerifyReport) -> list[str]:
    return sorted({p.file for p in report.problems if p.file.endswith((".index", ".catindex"))})


def _repair_indexes(path: str, wait: float) -> list[str]:
    """Rewrite the index files that differ from a rebuild, holding the writer lock; return their segments."""
    with _maintenance_writer(path, wait) as writer:
        return writer.repair_indexes()


def _maintenance_writer(path: str, wait: float) -> LogWriter:
    """An open writer for retention or repairs, never creating a bus, with the bus's index block size
    (a different one would make opening re-index the active segment)."""
    check.require_bus(path)
    settings: dict[str, Any] = {"lock_timeout": wait}
    interval = check.index_interval(path)
    if interval is not None and 64 <= interval <= 2**31:
        settings["index_interval_bytes"] = interval
    return LogWriter(path, **settings).open()


def _locked(prog: str, path: str, exc: BusLockedError, wait: float, task: str) -> int:
    waited = f" after waiting {wait:g} s" if wait else ""
    return fail(
        prog,
        f"the bus at {path} is locked by a running writer (pid {exc.holder}){waited}: {task} needs the "
        f"writer lock; retry with --wait SECONDS (Hermes's server releases the lock between update "
        f"loops), or stop the writer",
        EXIT_LOCKED,
    )


def _retention(prog: str, args: argparse.Namespace) -> int:
    if args.days is None and args.bytes is None:
        return fail(prog, "give --days N, --bytes N or both", EXIT_USAGE)
    check.require_bus(args.path)  # a writer would create a bus where there is none
    policy = " ".join(
        ([f"--days {args.days:g}"] if args.days is not None else [])
        + ([f"--bytes {args.bytes}"] if args.bytes is not None else [])
    )
    if args.dry_run:
        plan = check.plan_retention_now(args.path, max_age_days=args.days, max_bytes=args.bytes)
        if plan.segments:
            write_line(
                f"would delete {len(plan.segments)} segments ({plan.bytes} bytes): {', '.join(plan.segments)}"
            )
            write_line(f"the bus would then start at offset {plan.begin_offset}")
        else:
            write_line(f"nothing to delete with {policy}: the bus starts at offset {plan.begin_offset}")
        return EXIT_OK
    try:
        writer = _maintenance_writer(args.path, args.wait)
    except BusLockedError as exc:
        return _locked(prog, args.path, exc, args.wait, "retention")
    with writer:
        before = writer.begin_offset
        deleted = writer.apply_retention(max_age_days=args.days, max_bytes=args.bytes)
        after = writer.begin_offset
    if deleted:
        write_line(f"deleted {len(deleted)} segments ({after - before} bytes): {', '.join(deleted)}")
        write_line(f"the bus now starts at offset {after}")
    else:
        write_line(f"nothing to delete with {policy}: the bus starts at offset {after}")
    return EXIT_OK


def _demo(prog: str, args: argparse.Namespace) -> int:
    from filelog_bus.demo import run_demo  # the demo uses this module's formatting: import it late

    return run_demo(prog, args)
