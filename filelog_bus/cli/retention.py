"""`filelog-bus retention`: delete old closed segments now, optionally sparing clients' unread events."""

from __future__ import annotations

import argparse
from typing import Any

from filelog_bus import check
from filelog_bus.cli.args import byte_count, days_arg, help_formatter, seconds_arg
from filelog_bus.cli.exits import EXIT_LOCKED, EXIT_OK, EXIT_STATUSES, EXIT_USAGE
from filelog_bus.cli.format import write_line
from filelog_bus.cli.maintenance import locked_failure, maintenance_writer
from filelog_bus.cli.run import fail
from filelog_bus.errors import BusLockedError

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
        writer = maintenance_writer(args.path, args.wait)
    except BusLockedError as exc:
        return locked_failure(prog, args.path, exc, args.wait, "retention")
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


def add_command(commands: Any) -> None:
    """Add this command to filelog-bus's subcommands (an argparse subparsers action)."""
    retention = commands.add_parser(
        "retention",
        help="delete old closed segments now (needs the writer lock)",
        epilog=RETENTION_EPILOG,
        formatter_class=help_formatter,
    )
    retention.add_argument("path", metavar="PATH", help="the bus directory (e.g. /var/lib/hermes/bus)")
    retention.add_argument(
        "--days",
        metavar="N",
        type=days_arg,
        help="delete closed segments whose newest record is older than N days (e.g. --days 30, --days 0.5)",
    )
    retention.add_argument(
        "--bytes",
        metavar="N",
        type=byte_count,
        help="then delete the oldest closed segments while the bus "
        "is bigger than N bytes; K, M, G, T suffixes are powers of 1024 (e.g. --bytes 10G)",
    )
    retention.add_argument(
        "--wait",
        metavar="SECONDS",
        type=seconds_arg,
        default=0.0,
        help="wait up to SECONDS for the writer lock instead of giving up at once (e.g. --wait 60)",
    )
    retention.add_argument(
        "--dry-run",
        action="store_true",
        help="only print what would be deleted; takes no lock (e.g. --days 7 --dry-run)",
    )
    retention.set_defaults(handler=_retention)
