"""A writer's life outside the happy path: dropped without close(), interrupted after publishing.

* A ``LogWriter`` dropped while open releases its lock and every file it holds and warns
  with a ``ResourceWarning``, as Python's own files do; the next writer recovers the bus.
* An interrupt (what a signal handler raises, or Ctrl-C) that lands once the record is
  visible to readers does not turn a successful append into a failed one: the append
  returns its offset, and the interrupt is raised by the writer's next call, before it
  changes anything. Hermes would otherwise send the event again: a duplicate.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fault_support import Interrupt, seam_wrapped

from filelog_bus import LogReader, LogWriter
from filelog_bus.check import verify_bus
from filelog_bus.errors import BusClosedError


def open_files_under(path: Path) -> list[str]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(str(path) + os.sep):
            found.append(target)
    return found


def payloads(bus: Path) -> list[bytes]:
    with LogReader(bus) as reader:
        return [bytes(record.payload) for record in reader]


# -- a writer dropped without close() -----------------------------------------------------------------


def drop(holder: list[LogWriter]) -> list[str]:
    """Drop the writer in ``holder``, its last reference; return the warnings that raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        holder.clear()
        gc.collect()
    return [f"{w.category.__name__}: {w.message}" for w in caught]


@pytest.mark.parametrize("state", ["appended", "stopped", "standby-running", "never"])
def test_a_writer_dropped_without_close_releases_its_lock_and_files_and_warns(
    bus_dir: Path, state: str
) -> None:
    """Regression (issue 18): a LogWriter dropped without close() kept the lock and its files open
    for the life of the process, silently: no other writer could open the bus."""
    settings: dict[str, Any] = {"segment_bytes": 1024}
    if state == "standby-running":
        settings = {"segment_bytes": 8 * 2**20}  # a background standby once half full
    if state == "never":
        settings["durability"] = "never"
    holder = [LogWriter(bus_dir, **settings).open()]
    writer = holder[0]
    written = [f"record {i}".encode() * 10 for i in range(40)]
    for payload in written:
        writer.append("users", payload)
    if state == "standby-running":
        writer.append("big", b"x" * (4 * 2**20 + 1))  # past half full: the standby is being prepared
        written.append(b"x" * (4 * 2**20 + 1))
    if state == "stopped":
        with seam_wrapped(_failing("fdatasync")), pytest.raises(OSError):
            writer.append("users", b"never acknowledged")
        assert writer.failure is not None
    assert open_files_under(bus_dir)
    del writer

    caught = drop(holder)

    assert caught == [
        f"ResourceWarning: unclosed LogWriter of {bus_dir}: close() it or use it in a with block"
    ]
    assert open_files_under(bus_dir) == []
    with LogWriter(bus_dir, lock_timeout=0, **settings) as again:  # the lock is free
        again.append("users", b"after")
    assert payloads(bus_dir) == [*written, b"after"]
    assert verify_bus(bus_dir).healthy


def test_a_closed_or_never_opened_writer_dropped_says_nothing(bus_dir: Path) -> None:
    assert drop([LogWriter(bus_dir)]) == []
    holder = [LogWriter(bus_dir).open()]
    holder[0].append("users", b"x")
    holder[0].close()
    assert drop(holder) == []


def _failing(call: str) -> Callable[[str, Callable[..., Any]], Callable[..., Any]]:
    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        if name != call:
            return original

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise OSError(5, "injected EIO")

        return fail

    return wrap
