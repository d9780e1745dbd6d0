"""The durable watermark: readers never yield a record the writer has not published.

The writer publishes, after each append (and, with durability "always", after its
fdatasync), the end of what readers may read in the ``watermark`` file. These
tests put valid record bytes into the newest segment without publishing them
(what a record written but not yet fsync'd looks like) and check that readers in
other processes ignore them, that recovery either keeps and publishes them or cuts
them, and that a record lost before publication can never make a resuming reader
skip the record written in its place.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
from helpers.bus import (
    Expected,
    assert_only_zeros_after,
    data_end,
    data_end_position,
    read_all,
    read_in_child,
    segment_paths,
    write_and_close,
    write_at,
    write_then_kill,
)

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import BusDeletedError, CorruptionError, NotABusError
from filelog_bus.layout import FILE_HEADER_SIZE, WATERMARK_NAME
from filelog_bus.record import encode_record

GHOST = "ghost"


def ghost_records(count: int) -> list[bytes]:
    return [encode_record(GHOST, 1.0 + i, f"never published {i}".encode()) for i in range(count)]


def append_to_newest_segment(bus: Path, data: bytes) -> int:
    """Write raw bytes to the newest segment where the next append lands (its data end, which the
    watermark says after the writers used here: a preallocated segment's file goes on with zeros);
    return the bus offset they start at."""
    newest = segment_paths(bus)[-1]
    start = data_end(bus)
    position = data_end_position(newest, start)
    assert_only_zeros_after(newest, position)
    write_at(newest, position, data)
    return start


def lose_tail(segment: Path, lost_from: int, data_end_at: int, power_cut: str) -> None:
    """A power cut takes a segment's bytes from file position ``lost_from`` to ``data_end_at``: the file
    ends there (its new size was not durable either), or they read as zeros (a preallocated segment
    keeps its size)."""
    if power_cut == "file cut":
        os.truncate(segment, lost_from)
    else:
        write_at(segment, lost_from, bytes(data_end_at - lost_from))


@pytest.mark.parametrize("writer_end", ["closed", "killed"])
def test_reader_in_another_process_never_yields_unpublished_records(bus_dir: Path, writer_end: str) -> None:
    """Valid but unpublished records are invisible to readers; recovery keeps (and publishes) or cuts them."""
    write = write_and_close if writer_end == "closed" else write_then_kill
    acks = write(bus_dir, "w", 14, segment_bytes=1024)
    published = read_all(bus_dir)
    assert [r.offset for r in published] == [offset for _, offset in acks]
    ghosts = ghost_records(3)
    start = append_to_newest_segment(bus_dir, b"".join(ghosts))
    ghost_offsets = [start + sum(map(len, ghosts[:i])) for i in range(len(ghosts))]

    view = read_in_child(bus_dir, probes=[*ghost_offsets, start], categories=[GHOST], timeout=0.3)
    assert view.records == published, "a reader yielded bytes the writer never published"
    assert view.end == published[-1].next_offset == start
    assert view.seeks[str(start)] == "ok"  # seeking to the end is allowed: it waits for new records
    for offset in ghost_offsets[1:]:
        assert view.seeks[str(offset)] == "OffsetOutOfRangeError", "seek reached beyond the watermark"
    assert view.find[GHOST] is None, "find_next found a record beyond the watermark"

    with LogWriter(bus_dir, lock_timeout=0):
        pass  # recovery
    after = read_in_child(bus_dir, categories=[GHOST]).records
    assert after[: len(published)] == published
    kept = after[len(published) :]
    assert all(r.category == GHOST for r in kept), f"recovery left something else: {kept}"
    assert [r.offset for r in kept] == ghost_offsets[: len(kept)]
    assert len(kept) in (0, len(ghosts)), "valid complete records were cut half-way through the tail"
    with LogWriter(bus_dir) as writer:
        assert writer.end_offset == (kept[-1].next_offset if kept else start)
        writer.append("after", b"next")
    assert [r.category for r in read_all(bus_dir)[len(published) :]] == [GHOST] * len(kept) + ["after"]


@pytest.mark.parametrize("power_cut", ["file cut", "zeroed"])
def test_a_record_lost_before_publication_never_makes_a_resuming_reader_skip(
    bus_dir: Path, power_cut: str
) -> None:
    """The issue's hazard: record G written, not yet fsync'd, lost in a power cut; H takes its offset.

    A reader that had been shown G would resume at G.offset + 1 and skip H. The
    watermark keeps G hidden, so the reader resumes before H and gets it.
    """
    write_then_kill(bus_dir, "w", 5)
    reader = LogReader(bus_dir, timeout=0.2).open()
    try:
        seen = list(reader)
        assert len(seen) == 5
        (ghost,) = ghost_records(1)
        ghost_offset = append_to_newest_segment(bus_dir, ghost)
        assert list(reader) == [], "the reader yielded a record that was not durable yet"
        newest = segment_paths(bus_dir)[-1]
        ghost_position = data_end_position(newest, ghost_offset)
        # The power cut takes the unsynced record.
        lose_tail(newest, ghost_position, ghost_position + len(ghost), power_cut)

        with LogWriter(bus_dir) as writer:
            replacement = writer.append("replacement", b"H")
        assert replacement == ghost_offset, "test premise: H lands where G was"
        assert [r.payload for r in reader] == [b"H"], "the following reader missed the replacement"
        reader.seek(seen[-1].offset + 1)  # how a consumer resumes after the last record it handled
        assert [r.payload for r in reader] == [b"H"]
    finally:
        reader.close()


# Went wrong: recovery trusted the watermark according to the reopening writer's durability, not the publisher's.
def test_recovery_with_durability_never_does_not_cut_records_that_were_published(bus_dir: Path) -> None:
    """A published, fsync'd record is never silently dropped, whatever the reopening writer's durability.

    A writer with durability "always" acknowledges and publishes records, then dies.
    The last record is then damaged on disk. Reopening with durability "never" must
    not silently cut it (readers were shown it; a new record would reuse its offset):
    it must refuse like a writer with durability "always" does, or keep the bytes.
    """
    acks = write_then_kill(bus_dir, "w", 6)
    shown = read_all(bus_dir)
    last = shown[-1]
    newest = segment_paths(bus_dir)[-1]
    size = newest.stat().st_size
    position = last.offset - int(newest.name.split(".")[0]) + FILE_HEADER_SIZE + last.size - 1
    end_position = data_end_position(newest, last.next_offset)
    assert_only_zeros_after(newest, end_position)
    data = bytearray(newest.read_bytes())
    data[position] ^= 0x01  # damage inside the last acknowledged record's body
    newest.write_bytes(bytes(data))

    with pytest.raises(CorruptionError):
        LogWriter(bus_dir, durability="always").open()  # the control: refuses to cut it
    with contextlib.suppress(CorruptionError):
        LogWriter(bus_dir, durability="never").open().close()
    assert newest.stat().st_size == size, (
        f"reopening with durability='never' cut the published record at offset {last.offset} "
        f"(acknowledged: {acks[-1]}); a reader that handled it would skip the next record written there"
    )
    assert newest.read_bytes()[:end_position] == bytes(data[:end_position]), "the records' bytes changed"


# Went wrong: recovery trusted the watermark according to the reopening writer's durability, not the publisher's.
@pytest.mark.parametrize("power_cut", ["file cut", "zeroed"])
def test_bus_written_with_durability_never_reopens_after_a_power_cut_tore_its_tail(
    bus_dir: Path, power_cut: str
) -> None:
    """With durability "never" the watermark is no durability proof: recovery treats it so.

    A "never" writer publishes records before they are on disk. A power cut can then
    leave the watermark file (written back by the kernel) ahead of the segment's data,
    the last record torn. A writer reopening with the default durability "always"
    must treat that tail as torn (it was never durable), not as damaged acknowledged
    records: cut it and open.
    """
    write_then_kill(bus_dir, "w", 6, durability="never")
    shown = read_all(bus_dir)
    newest = segment_paths(bus_dir)[-1]
    end_position = data_end_position(newest, shown[-1].next_offset)
    assert_only_zeros_after(newest, end_position)
    # The last record's end never hit the disk.
    lose_tail(newest, end_position - shown[-1].size // 2, end_position, power_cut)

    LogWriter(bus_dir, durability="always").open().close()
    assert read_all(bus_dir) == shown[:-1]
    assert_only_zeros_after(newest, data_end_position(newest, shown[-1].offset))


# Went wrong: a damaged watermark slot was not rebuilt after a clean close.
def test_damaged_watermark_is_reported_then_rebuilt_by_a_writer(bus_dir: Path) -> None:
    """A damaged watermark slot: readers raise CorruptionError naming the file; opening a writer repairs it.

    The last writer closed cleanly, so the next one takes the fast open (clean-close
    note): that path must republish too (it did not before 4c31f5e).
    """
    write_and_close(bus_dir, "w", 8)
    shown = read_all(bus_dir)
    watermark = bus_dir / WATERMARK_NAME
    data = bytearray(watermark.read_bytes())
    data[FILE_HEADER_SIZE + 1] ^= 0x10  # inside the published offset
    watermark.write_bytes(bytes(data))

    with pytest.raises(CorruptionError) as failure:
        read_all(bus_dir)
    assert failure.value.path == str(watermark)
    assert "watermark" in str(failure.value)

    with LogWriter(bus_dir):
        assert read_all(bus_dir) == shown, "opening a writer did not rebuild the damaged watermark"
    assert read_all(bus_dir) == shown


def test_damaged_watermark_after_a_crash_is_rebuilt_by_a_writer(bus_dir: Path) -> None:
    """Same damage after a crash (no clean-close note): recovery recomputes and republishes the watermark."""
    write_then_kill(bus_dir, "w", 8)
    shown = read_all(bus_dir)
    watermark = bus_dir / WATERMARK_NAME
    data = bytearray(watermark.read_bytes())
    data[FILE_HEADER_SIZE + 1] ^= 0x10
    watermark.write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        read_all(bus_dir)
    LogWriter(bus_dir).open().close()
    assert read_all(bus_dir) == shown


def test_lost_watermark_file_is_recreated_without_losing_records(bus_dir: Path) -> None:
    """Without its watermark a directory is not readable as a bus; a writer recreates it from the segments."""
    acks = write_then_kill(bus_dir, "w", 10, segment_bytes=1024)
    shown = read_all(bus_dir)
    (bus_dir / WATERMARK_NAME).unlink()
    with pytest.raises(NotABusError):
        read_all(bus_dir, missing_ok=False)
    LogWriter(bus_dir).open().close()
    after = read_all(bus_dir)
    assert after == shown
    assert all(Expected("w", seq).matches(r) for (seq, _), r in zip(acks, after, strict=True))


# -- a watermark rebuilt in the same directory ----------------------------------------------------
# A watermark file deleted by an operator and rebuilt by the next writer, in the same bus
# directory, is the same bus: a reader waiting at the end of it must follow it, not report the bus
# "deleted and created again" (a caller would then reset its consumers' offsets).


# Went wrong: a reader of an empty bus reported the bus deleted and created again when a writer rebuilt its deleted watermark.
def test_a_reader_of_an_empty_bus_follows_a_watermark_rebuilt_in_the_same_directory(bus_dir: Path) -> None:
    with LogWriter(bus_dir):
        pass
    got: list[bytes] = []
    errors: list[BaseException] = []
    reader = LogReader(bus_dir, timeout=20).open()
    reader.seek(0)

    def follow() -> None:
        try:
            for record in reader:
                got.append(record.payload)
                return
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    os.unlink(bus_dir / "watermark")  # an operator's clean-up, while no writer runs
    with LogWriter(bus_dir) as writer:  # rebuilds the file (a new inode) in the same directory
        writer.append("c", b"after")
    thread.join(30)
    reader.close()
    assert not any(isinstance(e, BusDeletedError) for e in errors), errors
    assert got == [b"after"], (got, errors)
