"""Installing the `filelog` bus plugins into a Hermes tree (the command: filelog_bus.cli.hermes_install).

Writes `plugins/messagebus_producers/filelog/` and `plugins/messagebus_consumers/filelog/`,
each with the four files Hermes expects of a plugin. The installed `filelog.py` only imports
the plugin class from the installed filelog-bus package, so upgrading filelog-bus upgrades
the plugins: it is written from `PLUGIN_CLASSES` (no Python source of this package imports the
top-level plugin modules); the other three files are the package's `assets/`. Idempotent; a file
that differs from ours is only replaced with `--force`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from filelog_bus.compat import StrEnum

PLUGIN_NAME = "filelog"
#: asset folder -> Hermes plugin family directory
FAMILIES = {"producer": "messagebus_producers", "consumer": "messagebus_consumers"}
ASSET_FILES = (
    f"{PLUGIN_NAME}.py",
    f"config-schema-plugin-{PLUGIN_NAME}.yml",
    "README.md",
    "requirements.txt",
)


class InstallState(StrEnum):
    """An installed file compared with ours."""

    NEW = "new"
    UNCHANGED = "unchanged"
    DIFFERS = "differs"


@dataclass(frozen=True)
class PlannedFile:
    """One file to install, and what installing it would do."""

    path: Path
    content: bytes
    state: InstallState


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


#: asset folder -> the top-level module and class Hermes loads (hermes_plugin.py, hermes_consumer_plugin.py)
PLUGIN_CLASSES = {
    "producer": ("hermes_plugin", "FilelogProducerPlugin"),
    "consumer": ("hermes_consumer_plugin", "FilelogConsumerPlugin"),
}


def plugin_module(kind: str) -> bytes:
    """The `filelog.py` Hermes loads from an installed plugin directory: it only imports our class."""
    module, name = PLUGIN_CLASSES[kind]
    return (
        f'''"""Hermes {kind} plugin `{PLUGIN_NAME}`, installed by `filelog-bus hermes-install`.

The implementation lives in the `filelog-bus` package installed in Hermes's Python environment.
"""

from {module} import {name}

HERMES_PLUGIN_CLASSNAME = "{name}"

__all__ = ["HERMES_PLUGIN_CLASSNAME", "{name}"]
'''
    ).encode()


def asset_bytes(kind: str, name: str) -> bytes:
    if name == f"{PLUGIN_NAME}.py":
        return plugin_module(kind)
    return resources.files("filelog_bus.hermes").joinpath("assets", kind, name).read_bytes()


def plan_install(root: Path) -> list[PlannedFile]:
    plan = []
    for kind, family in FAMILIES.items():
        for name in ASSET_FILES:
            path = root / "plugins" / family / PLUGIN_NAME / name
            content = asset_bytes(kind, name)
            if not path.exists():
                state = InstallState.NEW
            elif path.is_file() and path.read_bytes() == content:
                state = InstallState.UNCHANGED
            else:
                state = InstallState.DIFFERS
            plan.append(PlannedFile(path, content, state))
    return plan
