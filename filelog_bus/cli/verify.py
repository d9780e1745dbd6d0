"""`filelog-bus verify [--repair]`: check every record, segment and index; rebuild damaged indexes."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from filelog_bus import check
from filelog_bus.cli.args import help_formatter, seconds_arg
from filelog_bus.cli.exits import (
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_NOT_A_BUS,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.format import plural, write_line
from filelog_bus.cli.maintenance import locked_failure, maintenance_writer
from filelog_bus.cli.progress import progress_bar
from filelog_bus.errors import BusLockedError

#: The statuses verify can return (its --help lists them).
EXITS = command_statuses(
    {
        EXIT_OK: "healthy (with --repair: once the damaged indexes are rebuilt)",
        EXIT_PROBLEMS: "problems found (each one is printed)",
        EXIT_DAMAGED: "--repair: the writer refuses to open the bus, whose records are damaged (restore "
        "the segment from a backup)",
        EXIT_LOCKED: "--repair: a writer (the server) holds the bus's writer lock (--wait waits for it)",
    },
    EXIT_USAGE,
    EXIT_NOT_A_BUS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
)

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

{exit_statuses_help(EXITS)}"""


def format_verify(report: check.VerifyReport) -> str:
    upto = (
        f"up to offset {report.checked_to} (the watermark)"
        if report.checked_to is not None
        else "up to the last complete record (the watermark is unreadable)"
    )
    lines = [
        f"checked {report.path}: {plural(report.segments, 'segment')}, {plural(report.records, 'record')}, "
        f"{plural(report.bytes, 'byte')} and {plural(report.index_files, 'index file')}, {upto}"
    ]
    lines += [f"problem: {problem}" for problem in report.problems]
    lines += [f"note: {note}" for note in report.notes]
    count = len(report.problems)
    lines.append("result: healthy" if report.healthy else f"result: {plural(count, 'problem')}")
    return "\n".join(lines)


def _verify(prog: str, args: argparse.Namespace) -> int:
    report = _verified(args.path)
    repaired: list[str] = []
    damaged = report.repairable_files()
    if args.repair and damaged:
        if not args.json:
            write_line(format_verify(report))
        try:
            with maintenance_writer(args.path, args.wait) as writer:  # opening rebuilds what it finds missing
                rebuilt = writer.repair_indexes()
        except BusLockedError as exc:
            return locked_failure(prog, args.path, exc, args.wait, "repairing indexes")
        report = _verified(args.path)
        repaired = sorted((set(damaged) | set(rebuilt)) - set(report.repairable_files()))
        if not args.json:
            write_line(f"repaired: rebuilt {', '.join(repaired) or 'nothing'}")
    if args.json:
        data = {**asdict(report), "healthy": report.healthy, "repaired": repaired}
        write_line(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        write_line(format_verify(report))
    return EXIT_OK if report.healthy else EXIT_PROBLEMS


def _verified(path: str) -> check.VerifyReport:
    bar = progress_bar("verify")
    try:
        return check.verify_bus(path, progress=bar)
    finally:
        if bar is not None:
            bar.clear()


def add_command(commands: Any) -> None:
    """Add this command to filelog-bus's subcommands (an argparse subparsers action)."""
    verify = commands.add_parser(
        "verify",
        help="check every record, segment and index; exit 1 on problems",
        epilog=VERIFY_EPILOG,
        formatter_class=help_formatter,
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
        type=seconds_arg,
        default=0.0,
        help="with --repair, wait up to SECONDS for the writer lock (e.g. --wait 60)",
    )
    verify.set_defaults(handler=_verify)
