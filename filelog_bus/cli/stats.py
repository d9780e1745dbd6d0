"""`filelog-bus stats`: what is on a bus (segments, records, categories, times)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from filelog_bus import check
from filelog_bus.cli.args import help_formatter
from filelog_bus.cli.exits import (
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_A_BUS,
    EXIT_OK,
    EXIT_USAGE,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.format import format_time, human_bytes, plural, printable, table_lines, write_line
from filelog_bus.cli.progress import progress_bar

#: The statuses stats can return (its --help lists them).
EXITS = command_statuses(
    {EXIT_OK: "the statistics were printed"},
    EXIT_USAGE,
    EXIT_NOT_A_BUS,
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
)

STATS_EPILOG = f"""\
examples:
  filelog-bus stats /var/lib/hermes/bus
  filelog-bus stats /var/lib/hermes/bus --json | jq '.categories'

Reads every record below the watermark once (it counts records and categories), so it takes
about as long as reading the bus. --json prints one object: path, record_count, bytes,
disk_bytes, categories (name -> count), begin_offset, end_offset, oldest_offset, oldest_time,
oldest_iso, newest_offset, newest_time, newest_iso and segments (name, base, end, file_size,
bytes, record_count, first_offset, last_offset, first_time, last_time, first_iso, last_iso,
active) and steps_back (count, listed, largest: records stamped earlier than the record before
them, each with segment, offset, previous_offset and seconds; a note line says so). Times are
epoch seconds (*time_arg) and ISO 8601 UTC (*_iso).

{exit_statuses_help(EXITS)}"""


def format_stats(stats: check.BusStats) -> str:
    lines = [
        f"bus          {stats.path}",
        f"records      {stats.record_count} in {plural(len(stats.segments), 'segment')}: "
        f"{plural(stats.bytes, 'byte')} ({human_bytes(stats.bytes)}); "
        f"{human_bytes(stats.disk_bytes)} allocated on disk with the indexes and preallocated space",
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
        lines += table_lines([[printable(name), str(count)] for name, count in stats.categories.items()])
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
    lines += [f"note: {note}" for note in stats.steps_back.notes()]
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


def _stats(prog: str, args: argparse.Namespace) -> int:
    bar = None if args.json else progress_bar("stats")
    try:
        stats = check.bus_stats(args.path, progress=bar)
    finally:
        if bar is not None:
            bar.clear()
    write_line(
        json.dumps(stats_json(stats), indent=2, ensure_ascii=False) if args.json else format_stats(stats)
    )
    return EXIT_OK


def add_command(commands: Any) -> None:
    """Add this command to filelog-bus's subcommands (an argparse subparsers action)."""
    stats = commands.add_parser(
        "stats",
        help="what is on a bus: segments, records, categories, times",
        epilog=STATS_EPILOG,
        formatter_class=help_formatter,
    )
    stats.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    stats.add_argument(
        "--json", action="store_true", help="one JSON object, for jq (e.g. --json | jq .record_count)"
    )
    stats.set_defaults(handler=_stats)
