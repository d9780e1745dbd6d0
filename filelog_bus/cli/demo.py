"""`filelog-bus demo DIR`: a real writer process and a reader following it, on a bus of the user's choice.

The README's first command runs it, so a newcomer sees the bus work end to end:
durable appends from another process, a reader that follows them, then what
`filelog-dump`, `stats` and `verify` show.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
import time
from typing import Any

from filelog_bus import check
from filelog_bus.bus_directory import DirectoryState, bus_state
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
from filelog_bus.cli.format import dump_line, payload_preview, table_lines, write_line
from filelog_bus.cli.run import fail
from filelog_bus.cli.stats import format_stats
from filelog_bus.cli.verify import format_verify
from filelog_bus.errors import BusLockedError, FilelogBusError
from filelog_bus.reader import LogReader
from filelog_bus.writer import LogWriter

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


#: Pause between two appends of the demo writer, so that the reader visibly follows it.
_DEMO_PAUSE_SECONDS = 0.05
#: How long the demo's reader waits for a next record before it checks whether the writer has exited.
_RECORD_WAIT_SECONDS = 0.2

_DEMO_WRITER = (
    "import sys\n"
    "from filelog_bus.cli.demo import demo_writer\n"
    "sys.exit(demo_writer(sys.argv[1], with_initsync=sys.argv[2] == 'initsync', run=int(sys.argv[3])))\n"
)


_DEMO_NEXT = [
    ("filelog-dump {} --category initsync", "the initsync sequence, found through the category index"),
    ("filelog-dump {} --payload --limit 1", "a record with its whole payload"),
    ("filelog-dump {} --json | head -n 2", "one JSON object per line, for jq"),
    ("filelog-dump {} --from end --follow", "like tail -f; run the demo again in another terminal"),
    ("filelog-bus retention {} --bytes 0 --dry-run", "what retention would delete"),
    ("filelog-bus --help", "every command; each one has --help with examples"),
]


def demo_events(*, with_initsync: bool, run: int) -> list[tuple[str, bytes]]:
    """(category, payload) of a Hermes-like update: Hermes's event JSON, pretty-printed as Hermes does."""

    def event(
        category: str, eventtype: str, objtype: str | None = None, pkey: Any = None, attrs: Any = None
    ) -> tuple[str, bytes]:
        fields = {
            "evcategory": category,
            "eventtype": eventtype,
            "objtype": objtype,
            "objpkey": pkey,
            "objattrs": attrs or {},
        }
        return category, json.dumps(fields, indent=4, ensure_ascii=False).encode("utf-8")

    events = []
    if with_initsync:
        events += [
            event(
                "initsync",
                "init-start",
                attrs={"schema": {"Users": ["login", "mail"], "Groups": ["name", "members"]}},
            ),
            event("initsync", "added", "Users", "alice", {"login": "alice", "mail": "alice@example.org"}),
            event("initsync", "added", "Users", "bob", {"login": "bob", "mail": "bob@example.org"}),
            event("initsync", "added", "Groups", "staff", {"name": "staff", "members": ["alice", "bob"]}),
            event("initsync", "init-stop"),
        ]
    login = f"user{run}"
    events += [
        event("base", "added", "Users", login, {"login": login, "mail": f"{login}@example.org"}),
        event(
            "base",
            "modified",
            "Groups",
            "staff",
            {"added": {"members": [login]}, "modified": {}, "removed": {}},
        ),
        event(
            "base",
            "modified",
            "Users",
            "alice",
            {"added": {}, "modified": {"mail": f"alice.{run}@example.org"}, "removed": {}},
        ),
        event("base", "removed", "Users", login, {}),
    ]
    return events


def demo_writer(path: str, *, with_initsync: bool, run: int) -> int:
    """The demo's writer process: append the events, pausing between them as a server would."""
    try:
        with LogWriter(path) as writer:
            for category, payload in demo_events(with_initsync=with_initsync, run=run):
                writer.append(category, payload)
                time.sleep(_DEMO_PAUSE_SECONDS)
    except BusLockedError as exc:
        return fail("filelog-bus demo (writer)", str(exc), EXIT_LOCKED)
    except (FilelogBusError, OSError) as exc:
        return fail("filelog-bus demo (writer)", str(exc), EXIT_FAILED)
    return EXIT_OK


def _event_summary(payload: bytes) -> str:
    """EVENTTYPE OBJTYPE OBJPKEY of a Hermes event, or the payload's preview if it is not one."""
    try:
        event = json.loads(payload)
        return f"{event['eventtype']:<10}  {event['objtype'] or ''} {event['objpkey'] or ''}".rstrip()
    except (ValueError, TypeError, KeyError):
        return payload_preview(payload)


def _demo_history(path: str) -> tuple[bool, int]:
    """Whether the bus already has an initsync sequence, and how many demo runs added base events."""
    with LogReader(path) as reader:
        had_initsync = reader.find_next("initsync") is not None
        reader.seek_to_beginning()
        base_events = 0
        while reader.find_next("base") is not None:
            base_events += 1
    return had_initsync, base_events // len(demo_events(with_initsync=False, run=0))


def run_demo(prog: str, args: argparse.Namespace) -> int:
    """`filelog-bus demo DIR`: a writer process appends Hermes-like events while this one follows."""
    path = args.dir
    is_bus = bus_state(path) is DirectoryState.BUS
    had_initsync, runs = _demo_history(path) if is_bus else (False, 0)
    with_initsync, run = not had_initsync, runs + 1
    expected = len(demo_events(with_initsync=with_initsync, run=run))
    quoted = shlex.quote(path)
    write_line(f"filelog-bus demo: {'appending to the bus' if is_bus else 'creating a bus'} in {path}")
    with LogReader(path, missing_ok=True, timeout=_RECORD_WAIT_SECONDS) as reader:
        start = reader.end_offset
        reader.seek(start)
        writer = subprocess.Popen(
            [sys.executable, "-c", _DEMO_WRITER, path, "initsync" if with_initsync else "base", str(run)],
            stderr=subprocess.PIPE,
            text=True,
        )
        write_line(
            f"\na writer process (pid {writer.pid}) appends {expected} Hermes-like events"
            f"{' (an initsync sequence, then base changes)' if with_initsync else ' (base changes)'};"
            f"\nthis process reads each one as soon as it is durable:"
        )
        while writer.poll() is None:
            for record in reader:  # waits up to _RECORD_WAIT_SECONDS for each next record
                write_line(
                    f"  offset {record.offset:>6}  {record.category:<8}  {_event_summary(record.payload)}"
                )
                sys.stdout.flush()
        for record in reader:  # what the writer published just before it exited
            write_line(f"  offset {record.offset:>6}  {record.category:<8}  {_event_summary(record.payload)}")
        _, error = writer.communicate()
        if writer.returncode:
            sys.stderr.write(error)
            return writer.returncode
    write_line(f"\n$ filelog-dump {quoted} --from {start} --limit 5")
    with LogReader(path) as reader:
        reader.seek(start)
        for record in itertools.islice(reader, 5):
            write_line(dump_line(record))
    write_line(f"\n$ filelog-bus stats {quoted}")
    write_line(format_stats(check.bus_stats(path)))
    write_line(f"\n$ filelog-bus verify {quoted}")
    write_line(format_verify(check.verify_bus(path)))
    write_line("\nnext, try:")
    write_line("\n".join(table_lines([[command.format(quoted), why] for command, why in _DEMO_NEXT])))
    return EXIT_OK
