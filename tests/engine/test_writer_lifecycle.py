"""A writer's life outside the happy path: dropped without close(), interrupted after publishing.

* A ``LogWriter`` dropped while open releases its lock and every file it holds and warns
  with a ``ResourceWarning``, as Python's own files do; the next writer recovers the bus.
* An interrupt (what a signal handler raises, or Ctrl-C) that lands once the record is
  visible to readers does not turn a successful append into a failed one: the append
  returns its offset, and the interrupt is raised by the writer's next call, before it
  changes anything. Hermes would otherwise send the event again: a duplicate.
"""

from __future__ import annotations

import errno
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers.bus import open_files_under
from helpers.faults import Fault, Interrupt, injected, publishes_the_watermark, raised_after

from filelog_bus import LogReader, LogWriter
from filelog_bus.check import verify_bus


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


# Went wrong: a LogWriter dropped without close() kept the lock and its files open for the life of the process, silently.
@pytest.mark.parametrize("state", ["appended", "stopped", "standby-running", "never"])
def test_a_writer_dropped_without_close_releases_its_lock_and_files_and_warns(
    bus_dir: Path, state: str
) -> None:
    """A LogWriter dropped without close() releases its lock and files, with a warning, so another
    writer can open the bus."""
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
        with injected(Fault("fdatasync", 1, errno.EIO)), pytest.raises(OSError):
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


# -- an interrupt once the record is visible ----------------------------------------------------------


# Went wrong: an interrupt once the record was published made append raise and stopped the writer: the caller sent the record again, a duplicate.
@pytest.mark.parametrize("error", [Interrupt, KeyboardInterrupt])
@pytest.mark.parametrize("durability", ["always", "never"])
def test_an_interrupt_after_the_record_is_visible_does_not_fail_the_append(
    bus_dir: Path, durability: str, error: type[BaseException]
) -> None:
    """An interrupt landing once the record is published (readers may read it, it is durable) does
    not fail the append: append returns its offset, the writer's next call raises the interrupt
    before it changes anything, and the writer goes on."""
    with LogWriter(bus_dir, durability=durability, segment_bytes=1024) as writer:
        writer.append("users", b"before")
        with raised_after("pwrite", error, publishes_the_watermark) as fired:
            offset = writer.append("users", b"published")
        assert fired and writer.failure is None
        assert payloads(bus_dir) == [b"before", b"published"]  # visible, once
        with pytest.raises(error):
            writer.append("users", b"refused: the held interrupt comes first")
        assert writer.failure is None and writer.end_offset > offset
        assert payloads(bus_dir) == [b"before", b"published"]
        writer.append("users", b"after")
    assert payloads(bus_dir) == [b"before", b"published", b"after"]
    assert verify_bus(bus_dir).healthy


def test_an_interrupt_after_syncs_publication_is_raised_by_close_once_closed(bus_dir: Path) -> None:
    """The same for sync() after deferred appends, and the interrupt held when no call follows but
    close(): close() closes the writer (the lock is free) and then raises it."""
    writer = LogWriter(bus_dir).open()
    for i in range(3):
        writer.append("initsync", f"deferred {i}".encode(), deferred=True)
    with raised_after("pwrite", matching=publishes_the_watermark) as fired:
        end = writer.sync()
    assert fired and writer.failure is None
    with LogReader(bus_dir) as reader:
        assert [bytes(r.payload) for r in reader] == [b"deferred 0", b"deferred 1", b"deferred 2"]
        assert reader.end_offset == end
    with pytest.raises(Interrupt):
        writer.close()
    with LogWriter(bus_dir, lock_timeout=0) as again:
        again.append("users", b"after")
    assert payloads(bus_dir) == [b"deferred 0", b"deferred 1", b"deferred 2", b"after"]


def test_an_interrupt_before_the_record_is_durable_still_fails_a_sync_of_a_never_writer(
    bus_dir: Path,
) -> None:
    """A durability="never" writer publishes before it syncs: an interrupt landing in sync()'s
    fdatasync is a failed sync (the records were visible, not durable), as before."""
    writer = LogWriter(bus_dir, durability="never").open()
    writer.append("users", b"visible, not durable")
    with raised_after("fdatasync") as fired, pytest.raises(Interrupt):
        writer.sync()
    assert fired and isinstance(writer.failure, Interrupt)
    writer.close()
