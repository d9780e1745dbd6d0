"""The writer lock for the maintenance commands (retention, verify --repair): opening, and refusals."""

from __future__ import annotations

from typing import Any

from filelog_bus import check
from filelog_bus.bus_directory import require_bus
from filelog_bus.cli.exits import EXIT_LOCKED
from filelog_bus.cli.run import fail
from filelog_bus.config import MAX_INDEX_INTERVAL, MIN_INDEX_INTERVAL
from filelog_bus.errors import BusLockedError
from filelog_bus.writer import LogWriter


def maintenance_writer(path: str, wait: float) -> LogWriter:
    """An open writer for retention or repairs, never creating a bus, with the bus's index block size
    (a different one would make opening re-index the active segment)."""
    require_bus(path)
    settings: dict[str, Any] = {"lock_timeout": wait}
    interval = check.index_interval(path)
    if interval is not None and MIN_INDEX_INTERVAL <= interval <= MAX_INDEX_INTERVAL:
        settings["index_interval_bytes"] = interval
    return LogWriter(path, **settings).open()


def locked_failure(prog: str, path: str, exc: BusLockedError, wait: float, task: str) -> int:
    waited = f" after waiting {wait:g} s" if wait else ""
    return fail(
        prog,
        f"the bus at {path} is locked by a running writer (pid {exc.holder}){waited}: {task} needs the "
        f"writer lock; retry with --wait SECONDS (Hermes's server releases the lock between update "
        f"loops), or stop the writer",
        EXIT_LOCKED,
    )
