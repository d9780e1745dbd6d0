"""`filelog-bus demo DIR`: the command line of the demo (filelog_bus.demo does the work)."""

from __future__ import annotations

from typing import Any

from filelog_bus.cli.args import help_formatter
from filelog_bus.cli.exits import (
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
from filelog_bus.demo import run_demo

#: The statuses demo can return (its --help lists them).
EXITS = command_statuses(
    {
        EXIT_OK: "the demo ran",
        EXIT_NOT_A_BUS: "DIR is neither missing, nor empty, nor a bus",
        EXIT_DAMAGED: "the bus in DIR is damaged",
        EXIT_LOCKED: "another writer holds the bus in DIR",
    },
    EXIT_USAGE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
)

DEMO_EPILOG = f"""\
examples:
  filelog-bus demo /tmp/filelog-demo
  filelog-bus demo /tmp/filelog-demo          again: appends more events to the same bus

A writer process appends a short Hermes-like sequence (an initsync sequence, then base events,
as JSON) to the bus in DIR, creating it if needed, while this process reads it back as it
arrives; then it shows what filelog-dump, stats and verify print, and what to try next. DIR must
be missing, empty, or a bus (anything else is refused, exit status {EXIT_NOT_A_BUS}). Give it a
directory of its own, not a production bus: the demo appends its events to whatever bus is there.

{exit_statuses_help(EXITS)}"""


def add_command(commands: Any) -> None:
    """Add this command to filelog-bus's subcommands (an argparse subparsers action)."""
    demo = commands.add_parser(
        "demo",
        help="write a small Hermes-like bus and read it back",
        epilog=DEMO_EPILOG,
        formatter_class=help_formatter,
    )
    demo.add_argument(
        "dir", metavar="DIR", help="where to create (or append to) the demo bus (e.g. /tmp/filelog-demo)"
    )
    demo.set_defaults(handler=run_demo)
