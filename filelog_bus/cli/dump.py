"""`filelog-dump` (also `filelog-bus dump`): print records, select them, follow the bus."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from filelog_bus.cli.args import (
    Parser,
    category_arg,
    help_formatter,
    offset_arg,
    positive_int,
    time_arg,
)
from filelog_bus.cli.exits import (
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_A_BUS,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_OUT_OF_RANGE,
    EXIT_USAGE,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.format import dump_full, dump_line, format_time, record_json, write_line
from filelog_bus.cli.run import fail, run_command, stop_signals_ignored_once_done
from filelog_bus.errors import RecordsExpiredError
from filelog_bus.reader import LogReader
from filelog_bus.record import Record

#: How often --follow looks for new records where the writer's wake-up is unavailable (seconds;
#: `tail -f` uses 1 s); elsewhere it is woken as soon as a record is published.
FOLLOW_POLL_SECONDS = 0.1

#: The statuses filelog-dump can return (its --help lists them).
EXITS = command_statuses(
    {
        EXIT_OK: "records were printed (also: --follow ended with Ctrl-C or SIGTERM, or the output pipe "
        "was closed, as by | head)",
        EXIT_NOTHING: "nothing was printed: the bus is empty, or no record matched",
        EXIT_NOT_A_BUS: "the path is not a bus (missing, not a directory, or holds no filelog-bus), or "
        "the bus was deleted (or deleted and created again) under --follow",
        EXIT_INTERRUPTED: "interrupted with Ctrl-C (without --follow)",
    },
    EXIT_USAGE,
    EXIT_OUT_OF_RANGE,
    EXIT_DAMAGED,
    EXIT_FAILED,
)

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

{exit_statuses_help(EXITS)}"""


def dump_parser(prog: str = "filelog-dump") -> Parser:
    """The parser of filelog-dump (public so that tests can check every option's help)."""
    parser = Parser(
        prog=prog, description=DUMP_DESCRIPTION, epilog=DUMP_EPILOG, formatter_class=help_formatter
    )
    parser.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="OFFSET",
        type=offset_arg,
        help="start at the first record whose offset is >= OFFSET, as a reader's seek does; "
        "'end' starts after the last record (e.g. --from 4096, --from end)",
    )
    parser.add_argument(
        "--category",
        metavar="NAME",
        type=category_arg,
        help="only records of this category, found through the category index (e.g. --category base)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        type=time_arg,
        help="only records written at or after TIME (e.g. --since 2024-05-01T08:00Z, --since 2h)",
    )
    parser.add_argument(
        "--until",
        metavar="TIME",
        type=time_arg,
        help="only records written before TIME (e.g. --until 2024-05-02); not with --follow",
    )
    parser.add_argument(
        "--limit", metavar="N", type=positive_int, help="stop after N records (e.g. --limit 10)"
    )
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="at the end of the bus, wait for new records and print them as they arrive, like "
        "tail -f, until Ctrl-C, or until the bus is deleted (or deleted and created again), which "
        "it reports with exit status 3 (e.g. --from end --follow)",
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
    if not args.follow:
        return run_command(prog, lambda: _dump(prog, args))
    signal.signal(signal.SIGTERM, _as_ctrl_c)  # a follow runs until stopped, by Ctrl-C or by SIGTERM
    with stop_signals_ignored_once_done():
        return run_command(prog, lambda: _dump(prog, args))


def _as_ctrl_c(_signal_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


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
