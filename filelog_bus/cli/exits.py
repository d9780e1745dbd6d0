"""The one exit-status table every command follows, and its text for --help.

Scripts and monitoring branch on these numbers, so each one means the same thing in
every command; a command that cannot meet a meaning uses the nearest one, never a new
meaning for an old number. `filelog-bus --help` prints the whole table; each command declares
the statuses it can return (`command_statuses`), and its --help lists only those.
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

EXIT_STATUSES = f"""\
exit status: (one table for every filelog-bus command)
  {EXIT_OK}    success (also: --follow ended with Ctrl-C or SIGTERM, or the output pipe was closed, as by | head)
  {EXIT_ATTENTION}    something to report: filelog-dump printed nothing (empty bus, or no record matched);
       verify found problems (each one is printed); clients: a client is not ok;
       hermes-install: installed files differ (nothing written; --force replaces them)
  {EXIT_USAGE}    bad command line: unknown option, bad number, offset or time
  {EXIT_NOT_A_BUS}    the path is not a bus (missing, not a directory, or holds no filelog-bus), or, for
       hermes-install, not a Hermes tree; for kafka-export and clients --set-offsets kafka, the
       topic is not this bus's copy (several partitions, other messages, a gap)
  {EXIT_OUT_OF_RANGE}    the offset is not on the bus (the message gives the valid range); clients --set-offsets
       kafka: a client's offset is not in the topic (not exported yet, or deleted before)
  {EXIT_DAMAGED}    a damaged segment or watermark (run filelog-bus verify for every problem)
  {EXIT_LOCKED}    busy: a writer (the server) holds the bus's writer lock (retention, verify --repair),
       a client seems to be running (clients --set-offsets), or another kafka-export of the
       bus into the topic runs
  {EXIT_FAILED}    operating-system error (permission denied, I/O error, disk full)
  {EXIT_BAD_CACHE}    a hermes-client cache file cannot be used (unreadable, not a hermes-client cache,
       damaged): clients --set-offsets, retention --clients
  {EXIT_KAFKA}    Kafka: the brokers cannot be reached or refused a request, or kafka-python is missing
       (pip install 'filelog-bus[kafka]')
  {EXIT_INTERRUPTED}  interrupted with Ctrl-C (except filelog-dump --follow and kafka-export --follow, which end
       with 0, as they do on SIGTERM)
  clients --nagios alone follows the Nagios plugin convention instead: {NAGIOS_OK} OK, {NAGIOS_WARNING} WARNING,
       {NAGIOS_CRITICAL} CRITICAL, {NAGIOS_UNKNOWN} UNKNOWN
"""

#: What each status means for any command that can return it; a command may say it for itself.
MEANINGS = {
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


def exit_statuses_help(statuses: Mapping[int, str], note: str = "") -> str:
    """The "exit status:" section of one command's --help."""
    lines = ["exit status:"]
    for status, meaning in statuses.items():
        lines += textwrap.wrap(meaning, width=98, initial_indent=f"  {status:<5}", subsequent_indent=" " * 7)
    if note:
        lines += textwrap.wrap(note, width=98, initial_indent="  ", subsequent_indent="  ")
    lines.append("  (what each status means in every command: filelog-bus --help)")
    return "\n".join(lines) + "\n"
