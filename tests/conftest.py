"""Shared fixtures. Every other helper lives in the tests/helpers package (tests/ is on sys.path)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers' asserts explain their failures as the tests' own do.
pytest.register_assert_rewrite("helpers")

from helpers.permissions import shared_directory  # noqa: E402 (after the rewrite is registered)


def pytest_configure(config: pytest.Config) -> None:
    """Children see Ctrl-C as from a terminal, even when pytest itself ignores SIGINT.

    A shell without job control starts a background job with SIGINT ignored, and an ignored
    signal stays ignored across exec: the CLI tests that end a process by SIGINT would then wait
    forever. A caught signal is reset to its default on exec, so catching it here is enough.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers",
        "others_reach_shared_dir: the test's shared_dir must be reachable by other users, or it is skipped",
    )


@pytest.fixture
def bus_dir(tmp_path: Path) -> Path:
    """Path of a bus directory that does not exist yet (writers create it)."""
    return tmp_path / "bus"


@pytest.fixture
def shared_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is private to root).

    A test marked ``others_reach_shared_dir`` is skipped where a directory above it is closed to other
    users; unmarked tests (which read as another user only when root) run wherever they can.
    """
    marked = request.node.get_closest_marker("others_reach_shared_dir") is not None
    with shared_directory("filelog-shared-", skip_unless_others_reach_it=marked) as path:
        yield path


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 1 MiB tmpfs: a real full disk (skips when mounting is not possible)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is a 1 MiB tmpfs, and mounting one needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)  # still busy: detach it


# The Kafka broker fixtures (a real tansu broker on a loopback port) for the Kafka road's tests.
from helpers.kafka import broker, own_broker, relayed_broker, topic  # noqa: E402, F401
