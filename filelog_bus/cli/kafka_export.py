"""`filelog-bus kafka-export BUS --bootstrap-server HOST:PORT --topic TOPIC [--follow]`: copy the bus
into a one-partition Kafka topic as Hermes's Kafka producer would have written it, exactly once."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from filelog_bus.cli.args import add_kafka_arguments, byte_count, help_formatter, positive_int
from filelog_bus.cli.exits import (
    EXIT_BUSY,
    EXIT_DAMAGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_KAFKA,
    EXIT_NOT_A_BUS,
    EXIT_OK,
    EXIT_USAGE,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.format import human_bytes, plural, write_line
from filelog_bus.cli.progress import progress_bar
from filelog_bus.cli.run import stop_signals_ignored_once_done

#: The statuses kafka-export can return (its --help lists them).
EXITS = command_statuses(
    {
        EXIT_OK: "the topic holds the bus up to its end (also: --follow ended with SIGTERM or Ctrl-C)",
        EXIT_NOT_A_BUS: "the path is not a bus, or the topic is not this bus's copy (several partitions, "
        "other messages, a gap, records deleted before they were copied)",
        EXIT_DAMAGED: "a damaged record stops the copy (the topic holds the bus up to it)",
        EXIT_BUSY: "another kafka-export of the bus into the topic runs",
        EXIT_INTERRUPTED: "interrupted with Ctrl-C (without --follow) before the end of the bus",
    },
    EXIT_USAGE,
    EXIT_FAILED,
    EXIT_KAFKA,
)

KAFKA_EXPORT_EPILOG = f"""\
examples:
  filelog-bus kafka-export /var/lib/hermes/bus --bootstrap-server kafka1:9092 --topic hermes
  filelog-bus kafka-export /var/lib/hermes/bus --bootstrap-server kafka1:9092,kafka2:9092 --topic hermes --follow

Copies every record of BUS, in order, into partition 0 of TOPIC, as Hermes's Kafka producer writes
an event: key = the category, value = the event's JSON as stored, and the record's own time as the
message timestamp (milliseconds). A topic that does not exist is created with one partition
(--replication-factor); a topic with several partitions is refused (Hermes's consumer reads only
one). Batches are acknowledged by every in-sync replica (acks=all) before the next is sent.

Exactly once: each message carries the bus offset it copies (headers filelog-offset and
filelog-next-offset, which Hermes ignores). A run, interrupted anyhow (killed, broker down, disk
error), leaves a prefix of the bus in the topic; the next run checks the topic's first and last
messages against the bus and goes on right after the last. A topic holding anything else is
refused. A bus whose start retention has already deleted is exported from its first record.

--follow keeps copying what hermes-server appends, until SIGTERM or Ctrl-C (exit status 0): run it
as a service, so that clients on other hosts read Kafka while hermes-server writes its local bus.
A failure ends it with the statuses below; restart it (systemd: Restart=on-failure) and it
resumes. See docs/HERMES.md, "When one host is no longer enough".

{exit_statuses_help(EXITS)}"""


def add_command(commands: Any) -> None:
    """Add this command to filelog-bus's subcommands (an argparse subparsers action)."""
    command = commands.add_parser(
        "kafka-export",
        help="copy the bus into a one-partition Kafka topic, exactly once; --follow to keep copying",
        epilog=KAFKA_EXPORT_EPILOG,
        formatter_class=help_formatter,
    )
    command.add_argument("path", metavar="BUS", help="the bus directory (e.g. /var/lib/hermes/bus)")
    add_kafka_arguments(command, required=True, topic_help="the topic to copy into (e.g. --topic hermes)")
    command.add_argument(
        "--follow",
        action="store_true",
        help="after the end of the bus, keep copying new records until SIGTERM or Ctrl-C (e.g. --follow, "
        "as a service)",
    )
    command.add_argument(
        "--replication-factor",
        metavar="N",
        type=positive_int,
        default=1,
        help="replicas of the topic when it is created; default 1 (e.g. --replication-factor 3)",
    )
    command.add_argument(
        "--max-request-size",
        metavar="BYTES",
        type=byte_count,
        default=None,
        help="the most bytes one batch (one request) may carry; at least 1K, default 1M, Kafka's own default "
        "(e.g. --max-request-size 4M, with the topic's max.message.bytes as large)",
    )
    command.set_defaults(handler=_kafka_export)


def _stop_requests() -> list[bool]:
    """The first SIGTERM or SIGINT asks the export to stop after the current batch (the list's one
    item becomes True); a second SIGINT interrupts at once.

    The handlers stay while the Kafka clients close after a failure, which may take a moment: a
    SIGTERM then (systemd stopping a failed service) must not kill the process.
    """
    requested = [False]

    def ask(signal_number: int, _frame: FrameType | None) -> None:
        if requested[0] and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        requested[0] = True

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, ask)
    return requested


def _kafka_export(prog: str, args: argparse.Namespace) -> int:
    stop = _stop_requests()
    with stop_signals_ignored_once_done():
        return _export(args, stop)


def _export(args: argparse.Namespace, stop: list[bool]) -> int:
    from filelog_bus.hermes.kafka.export import BusExport, collect_garbage_rarely, one_export_at_a_time
    from filelog_bus.hermes.kafka.topic import KafkaTopic
    from filelog_bus.reader import LogReader

    topic = KafkaTopic(
        args.bootstrap_server, args.topic, timeout=args.timeout, max_request_bytes=args.max_request_size
    )
    bar = None if args.follow else progress_bar("kafka-export")
    with (
        topic,
        LogReader(args.path) as reader,
        one_export_at_a_time(args.path, topic),
    ):
        if topic.open(create=True, replication_factor=args.replication_factor):
            write_line(f"created the topic {args.topic} with one partition")
        export = BusExport(reader, topic, progress=bar)
        resume = export.resume
        if resume.last is not None:
            write_line(
                f"resuming at bus offset {resume.bus_offset}: the topic holds the bus up to there, "
                f"Kafka offsets up to {resume.kafka_offset - 1}"
            )
        if resume.retention_cut is not None:
            write_line(
                f"note: the bus starts at offset {resume.retention_cut}: retention deleted the records "
                "before it, so the topic starts with the bus's first record still there"
            )
        sys.stdout.flush()  # a --follow service's log shows where it started at once
        collect_garbage_rarely()
        try:
            export.run(follow=args.follow, should_stop=lambda: stop[0])
        finally:
            if bar is not None:
                bar.clear()
            copied = export.summary
            holds = (
                f"the topic holds the bus up to offset {copied.bus_offset}, at Kafka offsets up to "
                f"{copied.kafka_offset - 1}"
                if copied.kafka_offset > 0
                else "the topic is empty"
            )
            write_line(
                f"exported {plural(copied.records, 'record')} ({human_bytes(copied.bytes)}) into {args.topic} "
                f"in {copied.seconds:.1f} s: {holds}"
            )
        interrupted = stop[0] and not args.follow and copied.bus_offset < reader.end_offset
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
