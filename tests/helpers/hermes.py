"""Hermes's own processes, played by the stand-ins: hermes-server and hermes-client scripts run as Hermes runs them.

The scripts are tests/helpers/hermes_standin/fake_server.py and fake_client.py; they use the
plugins of this checkout through the stand-in of Hermes's base classes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from helpers.processes import PROCESS_TIMEOUT, REPO, STANDIN_DIR


def standin_env() -> dict[str, str]:
    """Environment of a process that sees the Hermes stand-in and this checkout's plugins."""
    env = dict(os.environ)
    paths = [str(STANDIN_DIR), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def start_standin(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(STANDIN_DIR / script), *map(str, args)],
        env=standin_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{process.args} did not finish in {PROCESS_TIMEOUT} s; stderr:\n{err}")
    return process.returncode, out, err


def run_standin(script: str, *args: object) -> tuple[int, str, str]:
    return finish(start_standin(script, *args))


def handled_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def keys_of(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["evcategory"], e["eventtype"], e["objpkey"]) for e in events]
