"""Shared fixtures. Helpers for subprocesses live in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bus_dir(tmp_path: Path) -> Path:
    """Path of a bus directory that does not exist yet (writers create it)."""
    return tmp_path / "bus"
