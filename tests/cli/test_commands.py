"""The commands' help, `filelog-bus demo`, the hermes-install dispatch, and the read-only guarantee."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers.bus import content_snapshot
from helpers.cli import DUMP, HANG_GUARD, Lines, assert_error_line, bus, dump, multi_segment_bus, start
from helpers.processes import run_python

from filelog_bus.cli.dump import dump_parser
from filelog_bus.cli.main import main_parser

# -- help ------------------------------------------------------------------------------


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command of ours by its command line, with its parser."""
    found: dict[str, argparse.ArgumentParser] = {
        "filelog-dump": dump_parser(),
        "filelog-bus dump": dump_parser(),
    }
    main = main_parser()
    found["filelog-bus"] = main
    for action in main._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, parser in action.choices.items():
                if name not in ("dump", "hermes-install"):  # listed only; their own parsers answer --help
                    found[f"filelog-bus {name}"] = parser
    return found


def test_every_command_documents_every_option_with_an_example_and_the_exit_statuses() -> None:
    for command_line, parser in commands().items():
        program, *subcommand = command_line.split()
        result = subprocess.run(
            [str(DUMP.parent / program), *subcommand, "--help"],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )

        assert result.returncode == 0, (command_line, result.stderr)
        assert "examples:" in result.stdout and "exit status:" in result.stdout, command_line
        for action in parser._actions:
            if (
                isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
                or not action.option_strings
            ):
                continue
            assert action.option_strings[-1] in result.stdout, (command_line, action.option_strings)
            assert "e.g." in (action.help or ""), (command_line, action.option_strings)


def test_hermes_install_is_handed_its_arguments(tmp_path: Path) -> None:
    helped = bus("hermes-install", "--help")
    refused = bus("hermes-install", tmp_path)
    hermes = tmp_path / "hermes"
    for part in ("plugins/messagebus_producers", "plugins/messagebus_consumers", "lib/datamodel"):
        (hermes / part).mkdir(parents=True)
    (hermes / "lib" / "plugins.py").touch()
    (hermes / "lib" / "datamodel" / "event.py").touch()
    installed = bus("hermes-install", hermes)

    assert helped.returncode == 0 and "filelog-bus hermes-install" in helped.stdout
    assert refused.returncode == 3 and "is not a Hermes tree" in refused.stderr
    assert installed.returncode == 0, installed.stderr
    assert (hermes / "plugins" / "messagebus_consumers" / "filelog" / "filelog.py").is_file()


# -- demo ------------------------------------------------------------------------------


def test_demo_writes_a_hermes_like_bus_reads_it_back_and_can_run_again(tmp_path: Path) -> None:
    demo_dir = tmp_path / "filelog-demo"

    first = bus("demo", demo_dir)
    second = bus("demo", demo_dir)

    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    received = [line.split() for line in lines if line.startswith("  offset ")]
    assert [(fields[2], fields[3]) for fields in received] == [
        ("initsync", "init-start"),
        ("initsync", "added"),
        ("initsync", "added"),
        ("initsync", "added"),
        ("initsync", "init-stop"),
        ("base", "added"),
        ("base", "modified"),
        ("base", "modified"),
        ("base", "removed"),
    ]
    for shown in (
        f"$ filelog-dump {demo_dir}",
        f"$ filelog-bus stats {demo_dir}",
        "result: healthy",
        "next, try:",
    ):
        assert any(line.startswith(shown) for line in lines), shown
    assert second.returncode == 0, second.stderr
    assert "appending to the bus" in second.stdout
    stats = json.loads(bus("stats", demo_dir, "--json").stdout)
    assert stats["categories"] == {"base": 8, "initsync": 5}  # the initsync sequence is written once
    payloads = [
        json.loads(json.loads(line)["payload"]) for line in dump(demo_dir, "--json").stdout.splitlines()
    ]
    assert {"evcategory", "eventtype", "objtype", "objpkey", "objattrs"} == set(payloads[0])


def test_demo_refuses_a_directory_that_is_not_a_bus(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    result = bus("demo", tmp_path)

    assert "holds no filelog-bus" in assert_error_line(result, "filelog-bus demo", 3)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


# -- read-only -------------------------------------------------------------------------


#: Command lines that must not change the bus at BUS.
READ_ONLY_COMMANDS = [
    ["filelog-dump", "BUS"],
    ["filelog-dump", "BUS", "--category", "initsync", "--json"],
    ["filelog-dump", "BUS", "--from", "500", "--payload", "--since", "2024-05-01T11:00Z"],
    ["filelog-bus", "stats", "BUS"],
    ["filelog-bus", "stats", "BUS", "--json"],
    ["filelog-bus", "verify", "BUS"],
    ["filelog-bus", "retention", "BUS", "--bytes", "0", "--dry-run"],
]


def test_read_only_commands_change_nothing_even_in_a_bus_made_read_only(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    subprocess.run(["chmod", "-R", "a-w", str(bus_dir)], check=True)
    try:
        before = content_snapshot(bus_dir)
        for program, *args in READ_ONLY_COMMANDS:
            command = [str(DUMP.parent / program), *(str(bus_dir) if arg == "BUS" else arg for arg in args)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD)
            assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
        follower = start(DUMP, bus_dir, "--follow")
        Lines(follower.stdout).wait_for(lambda line: True)  # type: ignore[arg-type]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=HANG_GUARD) == 0

        assert content_snapshot(bus_dir) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(bus_dir)], check=True)


#: Runs CLI commands in-process as user nobody; prints {name: [status, stdout, stderr]}.
#: argv: the directory to work in, then a JSON object {name: [program, *arguments]}.
_CLI_AS_NOBODY = """
    import contextlib, encodings.ascii, io, json, os, sys
    from filelog_bus.cli import dump as dump_command, main as cli

    # Everything is imported above: once unprivileged, this process cannot read the Python
    # installation under /root. The bus is reached through the working directory, since its
    # parent directories are not searchable by nobody either.
    os.chdir(sys.argv[1])
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    mains = {"filelog-dump": dump_command.dump_main, "filelog-bus": cli.main}
    results = {}
    for name, (program, *arguments) in json.loads(sys.argv[2]).items():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = mains[program](arguments)
        results[name] = [status, out.getvalue(), err.getvalue()]
    print(json.dumps(results))
"""

_READ_ONLY_AS_NOBODY = {
    "dump": ["filelog-dump", "."],
    "category": ["filelog-dump", ".", "--category", "initsync", "--json"],
    "stats": ["filelog-bus", "stats", "."],
    "verify": ["filelog-bus", "verify", "."],
    "retention": ["filelog-bus", "retention", ".", "--bytes", "0"],
}


@pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping privileges needs root; the chmod test covers non-root runs"
)
def test_read_only_commands_work_for_a_user_who_may_only_read_the_bus(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    subprocess.run(["chmod", "-R", "a-w", str(bus_dir)], check=True)
    try:
        before = content_snapshot(bus_dir)

        child = run_python(_CLI_AS_NOBODY, str(bus_dir), json.dumps(_READ_ONLY_AS_NOBODY), timeout=HANG_GUARD)

        assert child.returncode == 0, child.stderr
        results = json.loads(child.stdout)
        for name in ("dump", "category", "stats", "verify"):
            assert results[name][0] == 0 and results[name][2] == "", (name, results[name])
        assert len(results["dump"][1].splitlines()) == len(records)
        assert len(results["category"][1].splitlines()) == 20
        assert "result: healthy" in results["verify"][1]
        status, _, error = results["retention"]  # the one command that needs to write
        assert status == 7 and error.startswith("filelog-bus retention: error: permission denied")
        assert error.count("\n") == 1
        assert content_snapshot(bus_dir) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(bus_dir)], check=True)


_INSPECT_AS_NOBODY = {
    "dump": ["filelog-dump", "bus"],
    "stats": ["filelog-bus", "stats", "bus"],
    "stats --json": ["filelog-bus", "stats", "bus", "--json"],
    "verify": ["filelog-bus", "verify", "bus"],
    "retention": ["filelog-bus", "retention", "bus", "--days", "1"],
    "retention --dry-run": ["filelog-bus", "retention", "bus", "--bytes", "0", "--dry-run"],
}


# Went wrong: stats, verify and retention on a bus the user may not enter printed only "Permission denied: PATH", or said the bus did not exist.
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.parametrize(
    ("parent_mode", "bus_mode"),
    [(0o755, 0o700), (0o700, 0o755), (0o755, 0o711)],
    ids=["bus-private", "parent-private", "bus-unlistable"],
)
def test_inspecting_commands_explain_a_bus_the_user_may_not_enter_as_dump_does(
    tmp_path: Path, parent_mode: int, bus_mode: int
) -> None:
    """stats, verify and retention on a bus directory the user may not enter (or list, or reach) say
    what is denied and what the user needs, as filelog-dump does."""
    shared = tmp_path / "shared"  # the child enters it as root, then drops to nobody
    shared.mkdir()
    multi_segment_bus(shared / "bus")
    shared.chmod(parent_mode)
    (shared / "bus").chmod(bus_mode)
    try:
        child = run_python(_CLI_AS_NOBODY, str(shared), json.dumps(_INSPECT_AS_NOBODY), timeout=HANG_GUARD)
    finally:
        shared.chmod(0o755)
        (shared / "bus").chmod(0o755)

    assert child.returncode == 0, child.stderr
    for name, (status, out, error) in json.loads(child.stdout).items():
        assert status == 7 and out == "", (name, status, out, error)
        assert error.count("\n") == 1 and "Traceback" not in error, (name, error)
        assert "permission denied" in error and "bus" in error, (name, error)
        assert "docs/RELIABILITY.md, 'Permissions'" in error, (name, error)
        if name != "dump":
            assert "search (x) permission on every directory above the bus" in error, (name, error)
            assert "does not exist" not in error, (name, error)
