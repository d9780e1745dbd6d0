"""The one exit-status table every command follows, and its text for --help.

Scripts and monitoring branch on these numbers, so each one means the same thing in
every command; a command that cannot meet a meaning uses the nearest one, never a new
meaning for an old number. Each command declares the statuses it can return (`command_statuses`,
its EXITS), and its --help lists only those; `filelog-bus --help` prints the whole table, built
from MEANINGS and every command's EXITS (`exit_status_table`), so that no copy can drift.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

EXIT_OK = 0
#: The command ran and has something to report: filelog-dump printed nothing, verify found
#: problems, a client is not ok, hermes-install found installed files that differ.
EXIT_ATTENTION = 1
EXIT_NOTHING = EXIT_PROBLEMS = EXIT_ATTENTION
EXIT_USAGE = 2
#: The path is not what the command works on: not a bus, not a Hermes tree.
EXIT_NOT_A_BUS = EXIT_NOT_FOUND = 3
EXIT_OUT_OF_RANGE = 4
EXIT_DAMAGED = 5
#: Someone else is at work: a writer holds the bus's writer lock, or a client is running.
EXIT_LOCKED = EXIT_BUSY = 6
EXIT_FAILED = 7
#: A hermes-client cache file cannot be used: unreadable, not a hermes-client cache, or damaged.
EXIT_BAD_CACHE = 8
#: Kafka: the brokers cannot be reached or refused a request, or kafka-python is not installed.
EXIT_KAFKA = 9
EXIT_INTERRUPTED = 130

#: Nagios plugin statuses, used by `filelog-bus clients --nagios` only (the Nagios convention).
NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
NAGIOS_NOTE = (
    f"with --nagios, Nagios's statuses instead: {NAGIOS_OK} OK, {NAGIOS_WARNING} WARNING, "
    f"{NAGIOS_CRITICAL} CRITICAL, {NAGIOS_UNKNOWN} UNKNOWN"
)

#: What each status means for any command that can return it; a command may say it for itself.
MEANINGS = {
    EXIT_OK: "success",
    EXIT_ATTENTION: "something to report",
    EXIT_USAGE: "bad command line: unknown option, bad number, offset or time",
    EXIT_NOT_A_BUS: "the path is not a bus (missing, not a directory, or holds no filelog-bus)",
    EXIT_OUT_OF_RANGE: "the offset is not on the bus (the message gives the valid range)",
    EXIT_DAMAGED: "a damaged segment or watermark (run filelog-bus verify for every problem)",
    EXIT_LOCKED: "busy: a writer (the server) holds the bus's writer lock",
    EXIT_FAILED: "operating-system error (permission denied, I/O error, disk full)",
    EXIT_BAD_CACHE: "a hermes-client cache file cannot be used (unreadable, not a hermes-client cache, damaged)",
    EXIT_KAFKA: "Kafka: the brokers cannot be reached or refused a request, or kafka-python is missing "
    "(pip install 'filelog-bus[kafka]')",
    EXIT_INTERRUPTED: "interrupted with Ctrl-C",
}


def command_statuses(specific: Mapping[int, str], *general: int) -> dict[int, str]:
    """The statuses one command can return, by value: those it says in its own words (`specific`),
    and the `general` ones, with their meaning in MEANINGS."""
    statuses = {**{status: MEANINGS[status] for status in general}, **specific}
    return dict(sorted(statuses.items()))


def _wrapped(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, width=98, initial_indent=first, subsequent_indent=rest)


def exit_status_table(commands: Mapping[str, Mapping[int, str]], notes: Mapping[str, str]) -> str:
    """The whole table, for `filelog-bus --help`: each status's meaning in MEANINGS, then, under it,
    the words of each command (a name in `commands`, with its EXITS) that says it for itself, and
    the commands' `notes`."""
    lines = ["exit status: (one table for every filelog-bus command)"]
    for status in sorted({status for declared in commands.values() for status in declared}):
        lines += _wrapped(MEANINGS[status], f"  {status:<5}", " " * 7)
        for command, declared in commands.items():
            if declared.get(status, MEANINGS[status]) != MEANINGS[status]:
                lines += _wrapped(f"{command}: {declared[status]}", " " * 7, " " * 9)
    for command, note in notes.items():
        lines += _wrapped(f"{command}: {note}", "  ", " " * 4)
    return "\n".join(lines) + "\n"


def exit_statuses_help(statuses: Mapping[int, str], note: str = "") -> str:
    """The "exit status:" section of one command's --help."""
    lines = ["exit status:"]
    for status, meaning in statuses.items():
        lines += _wrapped(meaning, f"  {status:<5}", " " * 7)
    if note:
        lines += _wrapped(note, "  ", "  ")
    lines.append("  (what each status means in every command: filelog-bus --help)")
    return "\n".join(lines) + "\n"
