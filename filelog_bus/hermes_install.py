"""`filelog-bus hermes-install HERMES_DIR [--force]`: install the `filelog` bus plugins into a Hermes tree.

Writes `plugins/messagebus_producers/filelog/` and `plugins/messagebus_consumers/filelog/`,
each with the four files Hermes expects of a plugin. The installed `filelog.py` only imports
the plugin class from the installed filelog-bus package, so upgrading filelog-bus upgrades
the plugins. Idempotent; a file that differs from ours is only replaced with `--force`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

PLUGIN_NAME = "filelog"
#: asset folder -> Hermes plugin family directory
FAMILIES = {"producer": "messagebus_producers", "consumer": "messagebus_consumers"}
ASSET_FILES = (
    f"{PLUGIN_NAME}.py",
    f"config-schema-plugin-{PLUGIN_NAME}.yml",
    "README.md",
    "requirements.txt",
)

EXIT_OK = 0
EXIT_FILES_DIFFER = 1
EXIT_NOT_A_HERMES_TREE = 2
EXIT_WRITE_FAILED = 3

_PROG = "filelog-bus hermes-install"


@dataclass(frozen=True)
class PlannedFile:
    """One file to install, and what installing it would do."""

    path: Path
    content: bytes
    state: str  # "new", "unchanged" or "differs"


def missing_hermes_parts(root: Path) -> list[str]:
    """What a Hermes tree has (per the plugin contract) that `root` lacks; empty for a Hermes tree."""
    missing = [
        f"plugins/{family}/" for family in FAMILIES.values() if not (root / "plugins" / family).is_dir()
    ]
    if not ((root / "lib" / "plugins.py").is_file() or (root / "lib" / "plugins" / "__init__.py").is_file()):
        missing.append("lib/plugins.py")
    if not (root / "lib" / "datamodel" / "event.py").is_file():
        missing.append("lib/datamodel/event.py")
    return missing


def asset_bytes(kind: str, name: str) -> bytes:
    return resources.files("filelog_bus").joinpath("hermes_assets", kind, name).read_bytes()


def plan_install(root: Path) -> list[PlannedFile]:
    plan = []
    for kind, family in FAMILIES.items():
        for name in ASSET_FILES:
            path = root / "plugins" / family / PLUGIN_NAME / name
            content = asset_bytes(kind, name)
            if not path.exists():
                state = "new"
            elif path.is_file() and path.read_bytes() == content:
                state = "unchanged"
            else:
                state = "differs"
            plan.append(PlannedFile(path, content, state))
    return plan


def write_atomically(path: Path, content: bytes) -> None:
    """Replace `path` in one step, so Hermes never loads a half-written plugin file."""
    path.parent.mkdir(exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(content)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _error(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Install the filelog message-bus plugins (producer and consumer) into a Hermes tree.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  filelog-bus hermes-install /opt/hermes           # install, or check an installation\n"
            "  filelog-bus hermes-install --force /opt/hermes   # after upgrading filelog-bus\n\n"
            "Exit status: 0 installed or already up to date; 1 some installed files differ (nothing\n"
            "written, use --force); 2 HERMES_DIR is not a Hermes tree; 3 a file could not be written."
        ),
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    root = Path(args.hermes_dir)
    if not root.is_dir():
        _error(
            f"{root} does not exist or is not a directory: give the top directory of a Hermes installation"
        )
        return EXIT_NOT_A_HERMES_TREE
    missing = missing_hermes_parts(root)
    if missing:
        _error(
            f"{root} is not a Hermes tree: it has no {', '.join(missing)}. Give the top directory of a "
            "Hermes installation (the one that holds lib/ and plugins/)"
        )
        return EXIT_NOT_A_HERMES_TREE

    plan = plan_install(root)
    differing = [item for item in plan if item.state == "differs"]
    if differing and not args.force:
        listing = "".join(f"\n  {item.path}" for item in differing)
        _error(
            f"these installed files differ from this filelog-bus version's:{listing}\n"
            "Nothing was written. Rerun with --force to replace them (local edits to them are lost)."
        )
        return EXIT_FILES_DIFFER

    try:
        for item in plan:
            if item.state != "unchanged":
                write_atomically(item.path, item.content)
    except OSError as exc:
        _error(
            f"could not write {exc.filename or root}: {exc.strerror or exc}. Check the permissions of {root}"
        )
        return EXIT_WRITE_FAILED

    verbs = {"new": "created", "differs": "replaced", "unchanged": "unchanged"}
    for item in plan:
        print(f"{verbs[item.state]:9} {item.path}")
    print(
        f"filelog plugins installed in {root}. Install filelog-bus in the Python environment that runs "
        "Hermes too, then select the bus with hermes.plugins.messagebus.filelog.settings.path in the "
        "server's and the clients' configuration."
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
