"""`filelog-bus clients BUS CACHE...`: each hermes-client's position, lag and state; --set-offsets.

Reads the clients' cache files and the bus, never writes either, except --set-offsets, which
rewrites the caches of stopped clients (keeping a backup) for a migration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from filelog_bus.cli.args import (
    add_kafka_arguments,
    byte_count,
    count_arg,
    days_arg,
    duration_arg,
    help_formatter,
    target_offset_arg,
)
from filelog_bus.cli.exits import (
    EXIT_ATTENTION,
    EXIT_BAD_CACHE,
    EXIT_BUSY,
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    EXIT_NOT_A_BUS,
    EXIT_OK,
    EXIT_OUT_OF_RANGE,
    EXIT_USAGE,
    NAGIOS_CRITICAL,
    NAGIOS_NOTE,
    NAGIOS_OK,
    NAGIOS_UNKNOWN,
    NAGIOS_WARNING,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.format import format_time, printable, table_lines, write_line
from filelog_bus.cli.prometheus import render, write_textfile
from filelog_bus.cli.run import fail
from filelog_bus.errors import FilelogBusError
from filelog_bus.hermes.client_cache import describe, find_clients, set_offsets
from filelog_bus.hermes.clients import (
    CRITICAL_STATES,
    BusPositions,
    ClientReport,
    ClientState,
    Thresholds,
    client_reports,
    unreadable_report,
)
from filelog_bus.hermes.offset_plan import plan_kafka, plan_target

#: The statuses clients can return (its --help lists them); --nagios has Nagios's own.
EXITS = command_statuses(
    {
        EXIT_OK: "every client is ok (--set-offsets: the offsets were set)",
        EXIT_ATTENTION: "a client is not ok",
        EXIT_NOT_A_BUS: "the path is not a bus; --set-offsets kafka or from-kafka: the topic is not this "
        "bus's copy",
        EXIT_OUT_OF_RANGE: "--set-offsets kafka or from-kafka: a client's offset is not in the topic (not "
        "exported yet, or deleted before), or not on the bus",
        EXIT_BUSY: "--set-offsets: a client seems to be running (--force if it is not)",
        EXIT_BAD_CACHE: "--set-offsets: a cache file cannot be used (nothing was changed)",
        EXIT_KAFKA: "--set-offsets kafka or from-kafka: the brokers cannot be reached or refused a "
        "request, or kafka-python is missing (pip install 'filelog-bus[kafka]')",
    },
    EXIT_USAGE,
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
)

CLIENTS_EPILOG = f"""\
examples:
  filelog-bus clients /var/lib/hermes/bus /var/lib/hermes/cache-ldap /var/lib/hermes/cache-mail
  filelog-bus clients /var/lib/hermes/bus /var/lib/hermes/cache-ldap/_hermes-client-ldap.json.gz
  filelog-bus clients BUS CACHES --days 30 --bytes 10G     which clients retention would hurt
  filelog-bus clients BUS CACHES --behind-age 5m --nagios  a Nagios/Icinga check
  filelog-bus clients BUS CACHES --prometheus /var/lib/node_exporter/textfile/filelog-clients.prom
  filelog-bus clients BUS CACHES --json | jq '.clients[] | select(.state != "ok")'
  filelog-bus clients BUS CACHES --set-offsets start       migration: stopped clients read BUS from its start

A hermes-client keeps its position in its cache file, <hermes.cache.dirpath>/_<appname>.json
(.json.gz with hermes.cache.enable_compression). Give each such file, or the cache directory.
One row per client: its next offset; the events and bytes on the bus it has not read yet and
the time (UTC) of the oldest one; whether it is initialised (it has read the whole initsync
sequence its cache names); and its state:
  ok          keeping up
  behind      its oldest unread event is older than --behind-age (or more than --behind-events)
  at risk     the next retention pass (--days/--bytes, as the server's settings) deletes events
              it has not read
  expired     retention already deleted events it had not read: re-initialise it
  ahead       its next offset is beyond the end of the bus: offsets from another bus
  unreadable  its cache file cannot be read (the message says why)
Exit status {EXIT_OK} when every client is ok, {EXIT_ATTENTION} otherwise. With --nagios, one status line and
Nagios's statuses: {NAGIOS_OK} OK, {NAGIOS_WARNING} WARNING (behind, at risk), {NAGIOS_CRITICAL} CRITICAL (expired, ahead,
unreadable), {NAGIOS_UNKNOWN} UNKNOWN (the bus cannot be read).

--set-offsets start|end|OFFSET sets initstartoffset, initstopoffset and nextoffset of every
named client to the first offset of BUS (start; 0 for a bus not created yet), its end offset
(end), or OFFSET as given (for another bus).
--set-offsets kafka --bootstrap-server HOST:PORT --topic TOPIC translates each of the three to
the Kafka offset of the same event in TOPIC, which filelog-bus kafka-export filled from BUS: each
client then goes on from Kafka at its next unread event (an unset offset stays unset). Every
client is checked before any file is written: one whose next event is not in the topic yet
(exit status {EXIT_OUT_OF_RANGE}: finish the export first), whose events were deleted before the export, or
whose offsets are not on BUS, is refused, and nothing is written.
--set-offsets from-kafka (same options) is the way back, while hermes-server still writes BUS:
each Kafka offset becomes the bus offset of the record its message copies. The client must be
stopped: a process whose command line names the client is refused (exit status {EXIT_BUSY}; --force
overrides). Each file is first copied to FILE.bak-<UTC time>, then replaced in one step,
compressed as before, with its mode and owner. A cache that cannot be read changes nothing
(exit status {EXIT_BAD_CACHE}).

{exit_statuses_help(EXITS, note=NAGIOS_NOTE)}"""


def add_command(commands: Any) -> None:
    """Add this command to filelog-bus's subcommands (an argparse subparsers action)."""
    clients = commands.add_parser(
        "clients",
        help="hermes-clients' position, lag and state from their cache files; --set-offsets for migrations",
        epilog=CLIENTS_EPILOG,
        formatter_class=help_formatter,
    )
    clients.add_argument("path", metavar="BUS", help="the bus directory (e.g. /var/lib/hermes/bus)")
    clients.add_argument(
        "caches",
        metavar="CACHE",
        nargs="+",
        help="a hermes-client cache file or cache directory (e.g. /var/lib/hermes/cache-ldap)",
    )
    clients.add_argument(
        "--behind-age",
        metavar="DURATION",
        type=duration_arg,
        default=900.0,
        help="behind when its oldest unread event is older than this; default 15m (e.g. --behind-age 5m)",
    )
    clients.add_argument(
        "--behind-events",
        metavar="N",
        type=count_arg,
        help="also behind with more than N unread events (e.g. --behind-events 10000)",
    )
    clients.add_argument(
        "--days",
        metavar="N",
        type=days_arg,
        help="the server's retention_in_days, to tell clients at risk (e.g. --days 30)",
    )
    clients.add_argument(
        "--bytes",
        metavar="N",
        type=byte_count,
        help="the server's retention_bytes, to tell clients at risk (e.g. --bytes 10G)",
    )
    clients.add_argument(
        "--sparing",
        action="store_true",
        help="the server's retention spares these clients' unread events (its retention_clients "
        "setting names them), so only --bytes puts them at risk (e.g. --days 30 --sparing)",
    )
    form = clients.add_mutually_exclusive_group()
    form.add_argument(
        "--json", action="store_true", help="one JSON object, for jq (e.g. --json | jq .clients)"
    )
    form.add_argument(
        "--prometheus",
        metavar="FILE",
        help="write the Prometheus text format to FILE, replaced in one step, for node_exporter's "
        "textfile collector; - for stdout (e.g. --prometheus /var/lib/node_exporter/textfile/filelog.prom)",
    )
    form.add_argument(
        "--nagios",
        action="store_true",
        help="one status line and Nagios's exit statuses, for Nagios or Icinga (e.g. --nagios)",
    )
    form.add_argument(
        "--set-offsets",
        metavar="WHERE",
        type=target_offset_arg,
        help="set the three offsets of each (stopped) client to start, end or OFFSET, or translate them "
        "to the topic kafka-export filled (kafka) or back (from-kafka), keeping a backup (e.g. --set-offsets start)",
    )
    add_kafka_arguments(
        clients.add_argument_group("with --set-offsets kafka or from-kafka"),
        required=False,
        topic_help="the topic kafka-export filled from BUS (e.g. --topic hermes)",
    )
    clients.add_argument(
        "--force",
        action="store_true",
        help="with --set-offsets, even if a process that looks like the client is running (e.g. --force)",
    )
    clients.set_defaults(handler=_clients)


#: --set-offsets values that read a Kafka topic: to it, and back from it.
_KAFKA_WAYS = ("kafka", "from-kafka")


def _clients(prog: str, args: argparse.Namespace) -> int:
    if args.force and args.set_offsets is None:
        return fail(prog, "--force only applies to --set-offsets", EXIT_USAGE)
    kafka = args.set_offsets in _KAFKA_WAYS
    if kafka and not (args.bootstrap_server and args.topic):
        return fail(
            prog, f"--set-offsets {args.set_offsets} needs --bootstrap-server and --topic", EXIT_USAGE
        )
    if not kafka and (args.bootstrap_server or args.topic or args.timeout is not None):
        return fail(
            prog,
            "--bootstrap-server, --topic and --timeout only apply to --set-offsets kafka or from-kafka",
            EXIT_USAGE,
        )
    if args.set_offsets is not None:
        return _set_offsets(prog, args)
    thresholds = Thresholds(
        behind_seconds=args.behind_age,
        behind_events=args.behind_events,
        max_age_days=args.days,
        max_bytes=args.bytes,
        sparing=args.sparing,
    )
    if args.nagios:
        return _nagios(args, thresholds)
    found = find_clients(args.caches)
    now = time.time()
    bus, reports = client_reports(args.path, found.clients, thresholds, now)
    reports += [unreadable_report(error) for error in found.errors]
    if args.json:
        write_line(json.dumps(_as_json(args.path, bus, reports, found.notes), indent=2, ensure_ascii=False))
    elif args.prometheus is not None:
        text = render(args.path, bus, reports, now)
        if args.prometheus == "-":
            sys.stdout.write(text)
        else:
            write_textfile(args.prometheus, text)
    else:
        write_line(_table(args.path, bus, reports, found.notes))
    return EXIT_OK if all(report.state == ClientState.OK for report in reports) else EXIT_ATTENTION


def _summary(reports: list[ClientReport]) -> str:
    counts = Counter(report.state for report in reports)
    return ", ".join(f"{counts[state]} {state}" for state in ClientState if counts[state])


def _table(path: str, bus: BusPositions, reports: list[ClientReport], notes: list[str]) -> str:
    retained = (
        f"; the next retention pass deletes up to offset {bus.next_begin}"
        if bus.next_begin > bus.begin
        else ""
    )
    lines = [f"bus {path}: offsets {bus.begin} to {bus.end}{retained}"]
    rows = [["CLIENT", "NEXT OFFSET", "UNREAD", "BYTES", "OLDEST UNREAD", "INITIALISED", "STATE"]]
    for report in reports:
        unread = report.unread
        rows.append(
            [
                printable(report.cache.appname),
                "-" if report.cache.nextoffset is None else str(report.cache.nextoffset),
                "-" if unread is None else str(unread.events),
                "-" if unread is None else str(unread.bytes),
                format_time(None if unread is None else unread.oldest_time),
                "-" if report.state == ClientState.UNREADABLE else report.cache.initialisation,
                report.state,
            ]
        )
    lines += table_lines(rows, indent="")
    lines += [
        printable(report.cache.appname)
        + ("" if report.state == ClientState.UNREADABLE else f" ({printable(report.cache.path)})")
        + f": {printable(report.why)}"
        for report in reports
        if report.state != ClientState.OK
    ]
    lines += [f"note: {printable(note)}" for note in notes]
    lines.append(f"result: {_summary(reports) or 'no client'}")
    return "\n".join(lines)


def _as_json(path: str, bus: BusPositions, reports: list[ClientReport], notes: list[str]) -> dict[str, Any]:
    clients = []
    for report in reports:
        cache, unread = report.cache, report.unread
        clients.append(
            {
                "client": cache.appname,
                "cache": cache.path,
                "hermes_version": cache.hermes_version,
                "initstartoffset": cache.initstartoffset,
                "initstopoffset": cache.initstopoffset,
                "nextoffset": cache.nextoffset,
                "initialised": None if report.state == ClientState.UNREADABLE else cache.initialised,
                "unread_events": None if unread is None else unread.events,
                "unread_bytes": None if unread is None else unread.bytes,
                "oldest_unread_time": None if unread is None else unread.oldest_time,
                "oldest_unread_iso": None
                if unread is None or unread.oldest_time is None
                else format_time(unread.oldest_time, "microseconds"),
                "state": report.state,
                "why": report.why,
            }
        )
    return {
        "bus": path,
        "begin_offset": bus.begin,
        "end_offset": bus.end,
        "next_retention_begin_offset": bus.next_begin,
        "clients": clients,
        "notes": notes,
        "summary": dict(Counter(report.state for report in reports)),
    }


def _nagios(args: argparse.Namespace, thresholds: Thresholds) -> int:
    """One line `FILELOG CLIENTS STATUS - summary | perfdata`, and Nagios's exit status."""
    try:
        found = find_clients(args.caches)
        _, reports = client_reports(args.path, found.clients, thresholds)
    except (FilelogBusError, OSError) as exc:
        write_line(f"FILELOG CLIENTS UNKNOWN - {' '.join(str(exc).split())}")
        return NAGIOS_UNKNOWN
    reports += [unreadable_report(error) for error in found.errors]
    states = {report.state for report in reports}
    if states & set(CRITICAL_STATES):
        status, word = NAGIOS_CRITICAL, "CRITICAL"
    elif states - {ClientState.OK}:
        status, word = NAGIOS_WARNING, "WARNING"
    else:
        status, word = NAGIOS_OK, "OK"
    bad = [f"{r.cache.appname} {r.state}" for r in reports if r.state != ClientState.OK]
    perfdata = " ".join(
        f"'{r.cache.appname}_unread'={r.unread.events};;;0" for r in reports if r.unread is not None
    )
    detail = "; ".join(bad) if bad else f"{len(reports)} clients ok"
    write_line(f"FILELOG CLIENTS {word} - {' '.join(detail.split())} | {perfdata}".rstrip(" |"))
    return status


def _set_offsets(prog: str, args: argparse.Namespace) -> int:
    found = find_clients(args.caches)
    if found.errors:
        return fail(prog, f"nothing was changed: {found.errors[0]}", EXIT_BAD_CACHE)
    if args.set_offsets in _KAFKA_WAYS:
        plan = plan_kafka(
            args.path,
            found,
            to_kafka=args.set_offsets == "kafka",
            bootstrap_server=args.bootstrap_server,
            topic=args.topic,
            timeout=args.timeout,
            force=args.force,
        )
    else:
        plan = plan_target(args.path, found, args.set_offsets, force=args.force)
    for note in plan.notes:
        write_line(f"note: {note}")
    for change in plan.changes:
        cache, offsets = change.cache, change.offsets
        old = describe(change.current)
        if change.unchanged:
            write_line(f"{cache.appname} ({cache.path}): {old}; unchanged")
            continue
        backup = set_offsets(cache, offsets, check_running=not args.force)
        values = set(offsets.values())
        new = f"all three {values.pop()}" if len(values) == 1 else describe(list(offsets.values()))
        where = f" (Kafka offsets in {args.topic})" if args.set_offsets == "kafka" else ""
        write_line(f"{cache.appname} ({cache.path}): was {old}; now {new}{where}; backup {backup}")
    return EXIT_OK
