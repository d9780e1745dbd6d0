"""`filelog-bus`: the parser of every subcommand, and the dispatch to the command modules.

Each command lives in its own module with its parser (`add_command`) and its handler; this
module only assembles them. `dump` and `hermes-install` parse their own arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from filelog_bus.cli import clients, demo, dump, hermes_install, kafka_export, retention, stats, verify
from filelog_bus.cli.args import Parser, help_formatter
from filelog_bus.cli.dump import dump_main
from filelog_bus.cli.exits import NAGIOS_NOTE, exit_status_table
from filelog_bus.cli.hermes_install import hermes_install_main
from filelog_bus.cli.run import run_command

MAIN_DESCRIPTION = """\
Operate a filelog-bus: what is on it, is it healthy, who reads it and how far behind, apply
retention, install the Hermes plugins, move to Hermes's Kafka bus. Read-only commands (dump, stats, verify, clients) never
take the writer lock and never write into the bus directory: run them while the server is
appending."""

#: The whole exit-status table: each command's EXITS, under the meaning every command shares.
EXIT_STATUSES = exit_status_table(
    {
        "filelog-dump": dump.EXITS,
        "stats": stats.EXITS,
        "verify": verify.EXITS,
        "clients": clients.EXITS,
        "retention": retention.EXITS,
        "kafka-export": kafka_export.EXITS,
        "demo": demo.EXITS,
        "hermes-install": hermes_install.EXITS,
    },
    notes={"clients": NAGIOS_NOTE},
)

MAIN_EPILOG = f"""\
examples:
  filelog-bus demo /tmp/filelog-demo                       write a small Hermes-like bus and read it back
  filelog-bus stats /var/lib/hermes/bus                    segments, record counts, categories, times
  filelog-bus verify /var/lib/hermes/bus                   check checksums, segments and indexes
  filelog-bus clients /var/lib/hermes/bus /var/lib/hermes/client-*/cache
                                                           is every hermes-client keeping up?
  filelog-bus retention /var/lib/hermes/bus --days 30      delete closed segments older than 30 days
  filelog-bus kafka-export /var/lib/hermes/bus --bootstrap-server kafka1:9092 --topic hermes
                                                           copy the bus into Hermes's Kafka bus
  filelog-bus dump /var/lib/hermes/bus --limit 10          the same as filelog-dump
  filelog-bus hermes-install /opt/hermes                   install the filelog plugins into Hermes
  filelog-bus COMMAND --help                               the options of a command, its exit statuses

{EXIT_STATUSES}"""


def main_parser() -> Parser:
    """The parser of filelog-bus and its subcommands."""
    parser = Parser(
        prog="filelog-bus",
        description=MAIN_DESCRIPTION,
        epilog=MAIN_EPILOG,
        formatter_class=help_formatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (stats, verify, clients, retention, kafka_export, demo):
        command.add_command(commands)
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
        return hermes_install_main(argv[1:])
    if argv[:1] == ["dump"]:
        return dump_main(argv[1:], prog="filelog-bus dump")
    args = main_parser().parse_args(argv)
    prog = f"filelog-bus {args.command}"
    return run_command(prog, lambda: args.handler(prog, args))
