"""`filelog-bus hermes-install HERMES_DIR [--force]`: install the `filelog` bus plugins into a Hermes tree."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from filelog_bus.cli.args import Parser, help_formatter
from filelog_bus.cli.exits import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    command_statuses,
    exit_statuses_help,
)
from filelog_bus.cli.run import fail
from filelog_bus.fs import replace_outside_file
from filelog_bus.hermes.install import InstallState, missing_hermes_parts, plan_install

PROG = "filelog-bus hermes-install"

#: The statuses hermes-install can return (its --help lists them).
EXITS = command_statuses(
    {
        EXIT_OK: "installed, or already installed",
        EXIT_PROBLEMS: "installed files differ from this version's (nothing written; --force replaces them)",
        EXIT_NOT_FOUND: "HERMES_DIR is not a Hermes tree",
        EXIT_FAILED: "a file could not be written (permission denied, disk full)",
    },
    EXIT_USAGE,
)

HERMES_INSTALL_EPILOG = f"""\
examples:
  filelog-bus hermes-install /opt/hermes           install, or check an installation
  filelog-bus hermes-install --force /opt/hermes   after upgrading filelog-bus

Writes plugins/messagebus_producers/filelog/ and plugins/messagebus_consumers/filelog/, each
with filelog.py, config-schema-plugin-filelog.yml, README.md and requirements.txt. Running it
again is harmless. If an installed file differs from this version's, nothing is written (exit
status {EXIT_PROBLEMS}) until --force; a directory that is not a Hermes tree is refused (exit status
{EXIT_NOT_FOUND}); a file that cannot be written ends with exit status {EXIT_FAILED}.

{exit_statuses_help(EXITS)}"""


def hermes_install_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Install the filelog message-bus plugins (producer and consumer) into a Hermes tree.",
        epilog=HERMES_INSTALL_EPILOG,
        formatter_class=help_formatter,
    )
    parser.add_argument(
        "hermes_dir",
        metavar="HERMES_DIR",
        help="top directory of Hermes, holding lib/ and plugins/ (e.g. /opt/hermes)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite installed plugin files that differ from this version's (e.g. after an upgrade)",
    )
    return parser


def hermes_install_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``filelog-bus hermes-install``."""
    args = hermes_install_parser().parse_args(argv)
    root = Path(args.hermes_dir)
    if not root.is_dir():
        return fail(
            PROG,
            f"{root} does not exist or is not a directory: give the top directory of a Hermes installation",
            EXIT_NOT_FOUND,
        )
    missing = missing_hermes_parts(root)
    if missing:
        return fail(
            PROG,
            f"{root} is not a Hermes tree: it has no {', '.join(missing)}. Give the top directory of a "
            "Hermes installation (the one that holds lib/ and plugins/)",
            EXIT_NOT_FOUND,
        )

    plan = plan_install(root)
    differing = [item for item in plan if item.state is InstallState.DIFFERS]
    if differing and not args.force:
        sys.stderr.write(
            f"{PROG}: error: these installed files differ from this filelog-bus version's:"
            + "".join(f"\n  {item.path}" for item in differing)
            + "\nNothing was written. Rerun with --force to replace them (local edits to them are lost).\n"
        )
        return EXIT_PROBLEMS

    try:
        for item in plan:
            if item.state is not InstallState.UNCHANGED:
                item.path.parent.mkdir(exist_ok=True)
                replace_outside_file(item.path, item.content)
    except OSError as exc:
        return fail(
            PROG,
            f"could not write {exc.filename or root}: {exc.strerror or exc}. Check the permissions of {root}",
            EXIT_FAILED,
        )

    verbs = {
        InstallState.NEW: "created",
        InstallState.DIFFERS: "replaced",
        InstallState.UNCHANGED: "unchanged",
    }
    for item in plan:
        print(f"{verbs[item.state]:9} {item.path}")
    print(
        f"filelog plugins installed in {root}. Install filelog-bus in the Python environment that runs "
        "Hermes too, then select the bus with hermes.plugins.messagebus.filelog.settings.path in the "
        "server's and the clients' configuration."
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(hermes_install_main())
