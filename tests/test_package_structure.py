"""The package's structure: no import cycle and no upward import in filelog_bus, one exit-status table."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from helpers.cli import BUS, DUMP, HANG_GUARD
from helpers.processes import REPO

from filelog_bus.cli.exits import EXIT_STATUSES

PACKAGE = REPO / "filelog_bus"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the filelog_bus modules it imports (at any level of its code)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def test_no_module_of_the_package_imports_itself_back_through_others() -> None:
    graph = import_graph()
    assert "filelog_bus.cli.format" in graph["filelog_bus.cli.demo"]  # the demo shares the CLI's formatting
    assert "filelog_bus.demo" not in graph  # the demo lives entirely in the CLI package
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", "import cycle: " + " -> ".join([*path, name, target])
            if target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_cli_package_imports_no_command_module_by_itself() -> None:
    assert import_graph()["filelog_bus.cli"] == set()


def test_every_command_prints_the_one_exit_status_table() -> None:
    commands = [
        [DUMP],
        [BUS],
        *(
            [BUS, name]
            for name in ("dump", "stats", "verify", "clients", "retention", "demo", "hermes-install")
        ),
    ]
    for command in commands:
        result = subprocess.run(
            [*map(str, command), "--help"], capture_output=True, text=True, timeout=HANG_GUARD, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
        assert EXIT_STATUSES in result.stdout, command
