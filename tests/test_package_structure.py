"""The package's structure: no import cycle and no upward import in filelog_bus; one exit-status
table, and in each command's --help the statuses that command can return."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

from helpers.cli import BUS, DUMP, HANG_GUARD
from helpers.processes import REPO

from filelog_bus.cli import exits
from filelog_bus.cli.main import EXIT_STATUSES

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


#: Each command's module, with the statuses it declares (EXITS), and the modules whose code returns
#: its statuses (besides run_command's mapping of errors, in filelog_bus.cli.run).
COMMANDS: dict[str, tuple[list[Path], str]] = {
    "filelog-dump": ([DUMP], "filelog_bus.cli.dump"),
    "filelog-bus dump": ([BUS, "dump"], "filelog_bus.cli.dump"),
    "filelog-bus stats": ([BUS, "stats"], "filelog_bus.cli.stats"),
    "filelog-bus verify": ([BUS, "verify"], "filelog_bus.cli.verify"),
    "filelog-bus clients": ([BUS, "clients"], "filelog_bus.cli.clients"),
    "filelog-bus retention": ([BUS, "retention"], "filelog_bus.cli.retention"),
    "filelog-bus kafka-export": ([BUS, "kafka-export"], "filelog_bus.cli.kafka_export"),
    "filelog-bus demo": ([BUS, "demo"], "filelog_bus.cli.demo"),
    "filelog-bus hermes-install": ([BUS, "hermes-install"], "filelog_bus.cli.hermes_install"),
}
#: Modules a command's own module leaves some of its returns to.
HELPERS = {
    "filelog_bus.cli.verify": ["filelog_bus.cli.maintenance"],
    "filelog_bus.cli.retention": ["filelog_bus.cli.maintenance"],
}


def help_of(command: list[Path | str]) -> str:
    result = subprocess.run(
        [*map(str, command), "--help"], capture_output=True, text=True, timeout=HANG_GUARD, check=False
    )
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def listed_statuses(help_text: str) -> list[int]:
    """The statuses of a --help's "exit status:" section, in order."""
    section = help_text[help_text.index("\nexit status:") :].split("\n\n")[0]
    return [int(match) for match in re.findall(r"(?m)^  (\d+) ", section)]


def exit_names_in(module: str, *, skip_declaration: bool) -> set[int]:
    """The exit statuses (EXIT_* constants) a module's code uses, outside its EXITS declaration."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return set()
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    declaration = {
        id(node)
        for statement in tree.body
        if skip_declaration
        and isinstance(statement, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "EXITS" for target in statement.targets)
        for node in ast.walk(statement)
    }
    return {
        getattr(exits, node.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Name)
        and node.id.startswith("EXIT_")
        and node.id != "EXIT_STATUSES"
        and id(node) not in declaration
    }


def test_filelog_bus_help_prints_the_whole_exit_status_table() -> None:
    assert EXIT_STATUSES in help_of([BUS])


def test_each_command_help_lists_exactly_its_own_exit_statuses() -> None:
    for name, (command, module) in COMMANDS.items():
        text = help_of(command)
        declared = importlib.import_module(module).EXITS

        assert "exit status:" in text, name
        assert EXIT_STATUSES not in text, name  # not the whole table every time
        assert listed_statuses(text) == sorted(declared), name
        assert set(declared) <= set(exits.MEANINGS) | {exits.EXIT_OK, exits.EXIT_ATTENTION}, name


def test_each_command_declares_the_statuses_its_code_returns_and_only_those_it_can() -> None:
    mapped_by_run_command = exit_names_in("filelog_bus.cli.run", skip_declaration=False)
    for name, (_, module) in COMMANDS.items():
        declared = set(importlib.import_module(module).EXITS)
        returned = exit_names_in(module, skip_declaration=True)
        for helper in HELPERS.get(module, []):
            returned |= exit_names_in(helper, skip_declaration=False)
        through_run_command = name != "filelog-bus hermes-install"  # it maps its own errors

        assert returned <= declared, (name, returned - declared)
        reachable = returned | {exits.EXIT_USAGE} | (mapped_by_run_command if through_run_command else set())
        assert declared <= reachable, (name, declared - reachable)


def test_a_path_that_is_not_a_bus_ends_each_command_with_a_status_it_declares(tmp_path: Path) -> None:
    not_a_bus = tmp_path / "file"
    not_a_bus.write_text("not a bus")
    arguments = {
        "filelog-bus clients": [not_a_bus, tmp_path / "cache"],
        "filelog-bus retention": [not_a_bus, "--days", "1"],
        "filelog-bus kafka-export": [not_a_bus, "--bootstrap-server", "127.0.0.1:1", "--topic", "t"],
        "filelog-bus demo": [tmp_path],  # a directory holding something else than a bus
        "filelog-bus hermes-install": [tmp_path],
    }
    for name, (command, module) in COMMANDS.items():
        result = subprocess.run(
            [*map(str, command), *map(str, arguments.get(name, [not_a_bus]))],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            check=False,
        )

        assert result.returncode == exits.EXIT_NOT_A_BUS, (name, result.stderr)
        assert result.returncode in importlib.import_module(module).EXITS, name


#: The package's layers, lowest first: a module may import its own layer and those below, never above.
LAYERS = ["filelog_bus", "filelog_bus.hermes", "filelog_bus.cli"]


def layer_of(module: str) -> int:
    return max(
        rank for rank, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")
    )


def test_no_module_imports_a_layer_above_its_own() -> None:
    relative = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(
            isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert relative == [], f"relative imports, which the import graph would not see: {relative}"
    graph = import_graph()
    assert layer_of("filelog_bus.hermes.kafka.export") == 1  # the Kafka road is Hermes's
    upward = [
        f"{name} -> {target}"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == [], "imports that run up the layers (engine < hermes < cli): " + ", ".join(upward)


def test_the_hermes_plugins_hermes_loads_only_hand_calls_to_the_hermes_package() -> None:
    for plugin in ("hermes_plugin.py", "hermes_consumer_plugin.py"):
        tree = ast.parse((PACKAGE.parent / plugin).read_text(encoding="utf-8"))
        ours = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("filelog_bus")
        }
        assert ours and all(module.startswith("filelog_bus.hermes.") for module in ours), (plugin, ours)


# Went wrong: the whole table, written by hand, left out retention --clients's status 1.
def test_filelog_bus_help_gives_each_status_of_every_command_in_its_own_words() -> None:
    whole = " ".join(help_of([BUS]).split())
    for name, (_, module) in COMMANDS.items():
        for status, meaning in importlib.import_module(module).EXITS.items():
            assert meaning == exits.MEANINGS[status] or " ".join(meaning.split()) in whole, (name, status)
