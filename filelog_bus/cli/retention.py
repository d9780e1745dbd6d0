"""`filelog-bus retention`: delete old closed segments now, optionally sparing clients' unread events."""

from __future__ import annotations

import argparse
from typing import Any

from filelog_bus.bus_directory import require_bus
from filelog_bus.cli.args import byte_count, days_arg, help_formatter, seconds_arg
from filelog_bus.cli.exits import (
    EXIT_ATTENTION,
    EXIT_BAD_CACHE,
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_NOT_A_BUS,
    EXIT_OK,
    EXIT_USAGE,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.format import write_line
from filelog_bus.cli.maintenance import locked_failure, maintenance_writer
from filelog_bus.cli.run import fail
from filelog_bus.errors import BusLockedError
from filelog_bus.hermes.client_cache import find_clients
from filelog_bus.hermes.clients import SparingOutcome, expired_message, plan_sparing, retention_sparing
from filelog_bus.retention import plan_retention_now

#: The statuses retention can return (its --help lists them).
EXITS = command_statuses(
    {
        EXIT_OK: "done (or, with --dry-run, planned)",
        EXIT_ATTENTION: "--clients: a named client lost (or, with --dry-run, would lose) unread events",
        EXIT_DAMAGED: "the writer refuses to open the bus, which is damaged (run filelog-bus verify)",
        EXIT_LOCKED: "a writer (the server) holds the bus's writer lock (--wait waits for it)",
        EXIT_BAD_CACHE: "--clients: a cache file cannot be used (nothing was deleted)",
    },
    EXIT_USAGE,
    EXIT_NOT_A_BUS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
)

RETENTION_EPILOG = f"""\
examples:
  filelog-bus retention /var/lib/hermes/bus --days 30          delete closed segments older than 30 days
  filelog-bus retention /var/lib/hermes/bus --bytes 10G        keep the bus under 10 GiB
  filelog-bus retention /var/lib/hermes/bus --days 7 --bytes 500M --dry-run
  filelog-bus retention /var/lib/hermes/bus --days 30 --wait 60
  filelog-bus retention /var/lib/hermes/bus --days 30 --bytes 10G --clients /var/lib/hermes/cache-ldap

Deletes whole closed segments, oldest first: those whose records are all older than --days,
then more while the bus is bigger than --bytes. --days stops at the first segment holding a
record that is not (after a clock stepped back, that keeps the records written since as long
as a later-stamped one precedes them); a note says when it stops at a segment stamped in the
future. The active segment is never deleted. Readers that were behind the deleted records get
an error saying so. This needs the writer lock: while
a writer (the server) holds it, the command says so and exits with status {EXIT_LOCKED}; --wait
waits for the lock (Hermes's server releases it between update loops), --dry-run needs no lock.

With --clients (hermes-client cache files or directories, as for `filelog-bus clients`),
--days never deletes a segment holding events one of those clients has not read yet; --bytes
still does when the bus is over budget, and then says, per client, what it loses (it must be
re-initialised), with exit status {EXIT_ATTENTION}. A cache that cannot be read makes the command
delete nothing (exit status {EXIT_BAD_CACHE}). Clients that already lost events hold nothing back.

{exit_statuses_help(EXITS)}"""


def _retention(prog: str, args: argparse.Namespace) -> int:
    if args.days is None and args.bytes is None:
        return fail(prog, "give --days N, --bytes N or both", EXIT_USAGE)
    require_bus(args.path)  # a writer would create a bus where there is none
    policy = " ".join(
        ([f"--days {args.days:g}"] if args.days is not None else [])
        + ([f"--bytes {args.bytes}"] if args.bytes is not None else [])
    )
    if args.clients:
        return _sparing(prog, args, policy)
    if args.dry_run:
        plan = plan_retention_now(args.path, max_age_days=args.days, max_bytes=args.bytes)
        _report(plan.segments, plan.bytes, plan.begin_offset, policy, dry_run=True)
        _note(plan.note)
        return EXIT_OK
    try:
        writer = maintenance_writer(args.path, args.wait)
    except BusLockedError as exc:
        return locked_failure(prog, args.path, exc, args.wait, "retention")
    with writer:
        before = writer.begin_offset
        deleted = writer.apply_retention(max_age_days=args.days, max_bytes=args.bytes)
        after = writer.begin_offset
        note = writer.retention_note
    _report(deleted, after - before, after, policy, dry_run=False)
    _note(note)
    return EXIT_OK


def _note(note: str | None) -> None:
    if note is not None:
        write_line(f"note: {note}")


def _report(segments: list[str], size: int, begin: int, policy: str, *, dry_run: bool) -> None:
    if not segments:
        write_line(f"nothing to delete with {policy}: the bus starts at offset {begin}")
        return
    verb, then = ("would delete", "would then start") if dry_run else ("deleted", "now starts")
    write_line(f"{verb} {len(segments)} segments ({size} bytes): {', '.join(segments)}")
    write_line(f"the bus {then} at offset {begin}")


def _sparing(prog: str, args: argparse.Namespace, policy: str) -> int:
    """Retention that spares the named clients' unread events (the producer's retention_clients)."""
    policy += " sparing " + ", ".join(args.clients)
    if args.dry_run:
        outcome = plan_sparing(args.path, args.clients, max_age_days=args.days, max_bytes=args.bytes)
        return _sparing_report(prog, outcome, policy, dry_run=True)
    unreadable = find_clients(args.clients).errors  # refuse before taking the lock, if we can
    if unreadable:
        reasons = "; ".join(str(error) for error in unreadable)
        return fail(prog, f"nothing was deleted: retention keeps everything: {reasons}", EXIT_BAD_CACHE)
    try:
        writer = maintenance_writer(args.path, args.wait)
    except BusLockedError as exc:
        return locked_failure(prog, args.path, exc, args.wait, "retention")
    with writer:
        outcome = retention_sparing(writer, args.clients, max_age_days=args.days, max_bytes=args.bytes)
    return _sparing_report(prog, outcome, policy, dry_run=False)


def _sparing_report(prog: str, outcome: SparingOutcome, policy: str, *, dry_run: bool) -> int:
    if outcome.refused:
        return fail(prog, f"nothing was deleted: {outcome.refused}", EXIT_BAD_CACHE)
    assert outcome.begin_after is not None
    _report(outcome.deleted, outcome.bytes, outcome.begin_after, policy, dry_run=dry_run)
    if outcome.kept_from is not None:
        write_line(
            f"spared by age: offsets from {outcome.kept_from} on, which a named client has not read yet"
        )
    for client in outcome.expired:
        write_line(f"warning: {expired_message(client)}")
    for loss in outcome.losses:
        write_line(f"{'would lose' if dry_run else 'lost'}: {loss}")
    _note(outcome.note)
    return EXIT_ATTENTION if outcome.losses else EXIT_OK


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
        help="delete closed segments whose records are all older than N days (e.g. --days 30, --days 0.5)",
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
    retention.add_argument(
        "--clients",
        metavar="CACHE",
        nargs="+",
        help="spare the events these hermes-clients have not read (their cache files or directories), "
        "unless --bytes is exceeded (e.g. --clients /var/lib/hermes/cache-ldap)",
    )
    retention.set_defaults(handler=_retention)
