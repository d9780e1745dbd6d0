"""Preallocated segments (format version 2) and deferred appends made durable by ``sync()``.

Real files and real processes: segment files are inspected on disk, a version 1 bus is made
by rewriting a bus's files the way version 1 left them, and crashes are SIGKILLs of a writer
process in the middle of a run of deferred appends.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.bus import read_all
from helpers.faults import path_faults, seam_wrapped
from helpers.processes import spawn_python

from filelog_bus import LogReader, LogWriter, segment
from filelog_bus.check import bus_stats, verify_bus
from filelog_bus.errors import BusWriteError, CorruptionError
from filelog_bus.layout import FILE_HEADER_SIZE, SEGMENT_MAGIC, encode_file_header, segment_name
from filelog_bus.record import encode_record
from filelog_bus.retention import plan_retention_now
from filelog_bus.segment import (
    DEFERRED_WRITE_BYTES,
    FIRST_SEGMENT_BYTES,
    PREALLOCATION_STEP,
    list_segment_bases,
)


def logs(bus: Path) -> list[Path]:
    return [bus / segment_name(base) for base in list_segment_bases(str(bus))]


def test_the_active_segment_is_preallocated_and_closed_segments_are_cut_to_their_data(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        first = writer.append("c", b"x" * 100)
        size_after_one = logs(bus)[-1].stat().st_size
        assert size_after_one == FILE_HEADER_SIZE + 64 * 1024  # allocated ahead, up to the segment size
        offsets = [writer.append("c", b"y" * 1000) for _ in range(200)]
        end = writer.end_offset
    bases = list_segment_bases(str(bus))
    assert len(bases) > 2
    for base, next_base in itertools.pairwise(bases):
        assert (bus / segment_name(base)).stat().st_size == FILE_HEADER_SIZE + next_base - base
    active = logs(bus)[-1]
    assert active.stat().st_size > FILE_HEADER_SIZE + end - bases[-1], (
        "the active segment keeps its allocation"
    )
    records = read_all(bus)
    assert [r.offset for r in records] == [first, *offsets]
    assert verify_bus(str(bus)).healthy
    stats = bus_stats(str(bus))
    assert stats.bytes == end  # data, not allocation
    assert stats.disk_bytes >= active.stat().st_size  # what is allocated on disk is shown too


def test_a_new_segment_takes_its_full_size_and_larger_segments_grow_a_step_ahead(tmp_path: Path) -> None:
    default = tmp_path / "default"
    with LogWriter(default) as writer:  # 64 MiB segments: the full size at creation ...
        writer.append("c", b"x")
        # ... but for the bus's first one, small so that a new bus opens fast
        assert logs(default)[-1].stat().st_size == FILE_HEADER_SIZE + FIRST_SEGMENT_BYTES
        while len(logs(default)) < 2:
            writer.append("c", b"y" * 65536)
        assert logs(default)[-1].stat().st_size == FILE_HEADER_SIZE + 64 * 2**20
        assert logs(default)[0].stat().st_size <= FILE_HEADER_SIZE + FIRST_SEGMENT_BYTES
    bus = tmp_path / "large"
    with LogWriter(bus, segment_bytes=3 * PREALLOCATION_STEP, max_record_bytes=2**25) as writer:
        writer.append("c", b"x" * FIRST_SEGMENT_BYTES)  # fills the first segment
        writer.append("c", b"x")
        assert len(logs(bus)) == 2
        assert logs(bus)[-1].stat().st_size == FILE_HEADER_SIZE + PREALLOCATION_STEP
        payload = b"z" * (PREALLOCATION_STEP // 4)
        for _ in range(5):  # past the first step: the next one is allocated ahead
            writer.append("c", payload)
        assert logs(bus)[-1].stat().st_size == FILE_HEADER_SIZE + 2 * PREALLOCATION_STEP


def test_a_torn_record_before_the_zeros_is_cut_and_the_allocation_kept(tmp_path: Path) -> None:
    """Recovery cuts the torn record and zero-fills the segment back to its full size, so that
    later appends overwrite written space, as in a new segment."""
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        kept = [writer.append("c", b"k" * 300) for _ in range(5)]
        end = writer.end_offset
    log = logs(bus)[-1]
    size = log.stat().st_size
    with open(log, "r+b") as file:  # a torn append: half a record, then the preallocated zeros
        file.seek(FILE_HEADER_SIZE + end)
        file.write(b"\xfbL\x01\x00" + b"\x07" * 40)
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        assert writer.end_offset == end
        assert log.stat().st_size == size
        assert not any(log.read_bytes()[FILE_HEADER_SIZE + end :]), "zeros after the recovered end"
        after = writer.append("c", b"after")
    assert log.stat().st_size == size
    assert [r.offset for r in read_all(bus)] == [*kept, after]
    assert verify_bus(str(bus)).healthy


def test_a_version_1_bus_opens_is_read_and_appended_to_with_new_segments_in_version_2(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=4096) as writer:
        old = [writer.append("c", bytes([i]) * 300) for i in range(30)]
        end = writer.end_offset
    for log in logs(bus):  # what version 1 wrote: version 1 headers, files exactly as long as their data
        base = int(log.name[:20])
        with open(log, "r+b") as file:
            file.write(encode_file_header(SEGMENT_MAGIC, base, version=1))
        next_bases = [b for b in list_segment_bases(str(bus)) if b > base]
        os.truncate(log, FILE_HEADER_SIZE + (next_bases[0] if next_bases else end) - base)
    assert verify_bus(str(bus)).healthy
    assert [r.offset for r in read_all(bus)] == old
    newest_before = logs(bus)[-1]
    with LogWriter(bus, segment_bytes=4096) as writer:
        assert writer.end_offset == end
        new = [writer.append("c", b"n" * 300) for _ in range(30)]
    assert newest_before.read_bytes()[8:12] == (1).to_bytes(4, "little"), (
        "the old active segment stays version 1"
    )
    assert logs(bus)[-1].read_bytes()[8:12] == (2).to_bytes(4, "little")
    assert [r.offset for r in read_all(bus)] == old + new
    assert verify_bus(str(bus)).healthy


def test_deferred_appends_are_invisible_until_sync(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    with LogWriter(bus) as writer, LogReader(bus) as reader:
        durable = writer.append("base", b"before")
        deferred = [writer.append("initsync", f"{i}".encode(), deferred=True) for i in range(10)]
        assert reader.end_offset == deferred[0]
        assert [r.offset for r in reader] == [durable]
        assert writer.sync() == writer.end_offset
        assert [r.offset for r in reader] == deferred


def test_a_durable_append_publishes_the_deferred_ones_before_it(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    with LogWriter(bus) as writer, LogReader(bus) as reader:
        deferred = [writer.append("initsync", b"d", deferred=True) for _ in range(3)]
        last = writer.append("initsync", b"stop")
        assert [r.offset for r in reader] == [*deferred, last]


#: Appends durable records, then deferred ones, printing each offset, until killed.
DEFERRING_CHILD = """
import sys
from filelog_bus import LogWriter
writer = LogWriter(sys.argv[1], segment_bytes=int(sys.argv[2])).open()
for i in range(20):
    print("durable", writer.append("base", b"b%d" % i), flush=True)
i = 0
while True:
    offset = writer.append("initsync", b"i%d" % i + b"x" * 500, deferred=True)
    print("deferred", offset, flush=True)
    i += 1
"""


@pytest.mark.parametrize("segment_bytes", [4096, 1 << 20])
def test_sigkill_during_deferred_appends_keeps_every_durable_record(
    tmp_path: Path, segment_bytes: int
) -> None:
    bus = tmp_path / "bus"
    process = spawn_python(DEFERRING_CHILD, str(bus), str(segment_bytes), stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    durable: list[int] = []
    deferred: list[int] = []
    for line in process.stdout:
        kind, offset = line.split()
        (durable if kind == "durable" else deferred).append(int(offset))
        if len(deferred) >= 300:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    with LogReader(bus) as reader:
        assert [r.offset for r in reader] == durable, "readers saw deferred records nobody synced"
    with LogWriter(bus, segment_bytes=segment_bytes) as writer:
        writer.append("base", b"after")
    records = read_all(bus)
    assert [r.offset for r in records[: len(durable)]] == durable
    # What survives of the deferred records is a prefix of them (the child may have appended a few
    # more after the last line read), in order, each with its own payload.
    recovered = records[len(durable) : -1]
    assert [r.offset for r in recovered[: len(deferred)]] == deferred[: len(recovered)]
    assert [r.payload for r in recovered] == [b"i%d" % i + b"x" * 500 for i in range(len(recovered))]
    assert verify_bus(str(bus)).healthy


#: Appends 60 durable records after those already on the bus, prints the end, exits without closing.
APPENDING_CHILD = """
import os, sys
from filelog_bus import LogWriter
writer = LogWriter(sys.argv[1], segment_bytes=1 << 20).open()
for i in range(60):
    writer.append("a", b"%04d" % i + b"y" * 200)
print(writer.end_offset, flush=True)
os._exit(0)
"""


# Went wrong: recovery stopped searching at the first zero page and cut synced records behind a lagging watermark.
def test_a_zeroed_page_of_synced_records_behind_a_lagging_watermark_is_refused(tmp_path: Path) -> None:
    """Synced records after damage are never cut, even past zeros (found by review: the search for
    valid records after the damage stopped at the first all-zero page of a preallocated segment)."""
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=1 << 20) as writer:
        for _ in range(5):
            writer.append("a", b"x" * 200)
    lagging_watermark = (bus / "watermark").read_bytes()  # not fsync'd per append: a power cut may keep it
    child = spawn_python(APPENDING_CHILD, str(bus), stdin=subprocess.DEVNULL)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    end = int(out)
    before = read_all(bus)
    (bus / "watermark").write_bytes(lagging_watermark)
    log = logs(bus)[-1]
    with open(log, "r+b") as file:  # a page of synced records comes back as zeros
        file.seek(4096)
        file.write(bytes(4096))
    assert FILE_HEADER_SIZE + end - 4096 > 4096
    with pytest.raises(CorruptionError) as raised:
        LogWriter(bus, segment_bytes=1 << 20).open()
    assert raised.value.path == str(log)
    assert (
        log.read_bytes()[FILE_HEADER_SIZE + 8192 : FILE_HEADER_SIZE + end]
        == b"".join(encode_record(r.category, r.timestamp, r.payload) for r in before)[8192:end]
    ), "recovery changed acknowledged records it refused to cut"


# Went wrong: readers raised CorruptionError at zeros below an unsynced writer's watermark, and verify advised a restore.
def test_a_reader_waits_at_unwritten_zeros_below_the_watermark_until_a_writer_recovers(
    tmp_path: Path,
) -> None:
    """The state a power cut can leave a durability="never" bus in: the watermark past a page that never
    reached the disk (zeros, in a preallocated segment). Readers treat it as the end of the bus (never an
    error, never a spin) until a writer's recovery cuts there; then they go on with new records."""
    live = tmp_path / "live"
    with LogWriter(live, durability="never", segment_bytes=1 << 20) as writer:
        offsets = [writer.append("c", bytes([i]) * 1000) for i in range(20)]
        bus = Path(shutil.copytree(live, tmp_path / "bus"))  # the files as a crash leaves them (no close)
    (bus / "writer.lock").unlink()
    log = logs(bus)[-1]
    hole = offsets[10]
    with open(log, "r+b") as file:  # everything from record 10 on was lost
        file.seek(FILE_HEADER_SIZE + hole)
        file.write(bytes(FILE_HEADER_SIZE + offsets[-1] + 2000 - file.tell()))
    with LogReader(bus, timeout=0) as reader:
        assert [r.offset for r in reader] == offsets[:10]
        assert reader.read_next() is None
        reader.set_timeout(0.2)
        assert list(reader) == []  # waited up to the timeout, as at the end of the bus
        with LogWriter(bus, durability="never", segment_bytes=1 << 20) as writer:
            assert writer.end_offset == hole
            after = writer.append("c", b"after recovery")
        reader.seek(hole)
        assert [r.offset for r in reader] == [after]


# Went wrong: readers raised CorruptionError at zeros below an unsynced writer's watermark, and verify advised a restore.
def test_a_reader_waits_at_a_record_a_lost_page_cut_in_two_below_an_unsynced_watermark(
    tmp_path: Path,
) -> None:
    """The same crash state, where the lost page cuts a record in the middle (found by review): past what
    an unsynced writer made durable, damage is what recovery will cut as a torn tail, so readers wait
    there too instead of raising."""
    live = tmp_path / "live"
    with LogWriter(live, durability="never") as writer:
        offsets = [writer.append("c", b"r%02d" % i * 100) for i in range(20)]  # ~330 B each: two pages
        end = writer.end_offset
        bus = Path(shutil.copytree(live, tmp_path / "bus", ignore=shutil.ignore_patterns("writer.lock")))
    log = logs(bus)[-1]
    with open(log, "r+b") as file:  # the second page never reached the disk
        file.seek(4096)
        file.write(bytes(FILE_HEADER_SIZE + end - 4096))
    survivors = [offset for offset in offsets if FILE_HEADER_SIZE + offset + 330 <= 4096]
    with LogReader(bus, timeout=0) as reader:
        assert [r.offset for r in reader][: len(survivors)] == survivors
        assert reader.read_next() is None
    with LogWriter(bus, durability="never") as writer:
        assert writer.end_offset <= 4096 - FILE_HEADER_SIZE
    assert verify_bus(str(bus)).healthy


# Went wrong: readers raised CorruptionError at zeros below an unsynced writer's watermark, and verify advised a restore.
def test_verify_calls_zeros_below_the_watermark_an_unrecovered_crash_not_damage(tmp_path: Path) -> None:
    live = tmp_path / "live"
    with LogWriter(live, durability="never", segment_bytes=1 << 20) as writer:
        offsets = [writer.append("c", bytes([i]) * 1000) for i in range(20)]
        bus = Path(shutil.copytree(live, tmp_path / "bus", ignore=shutil.ignore_patterns("writer.lock")))
    with open(logs(bus)[-1], "r+b") as file:  # records 10 and later never reached the disk
        file.seek(FILE_HEADER_SIZE + offsets[10])
        file.write(bytes(10 * 1100))
    report = verify_bus(str(bus))
    assert [(p.kind, p.offset) for p in report.problems] == [("watermark", offsets[10])]
    LogWriter(bus, durability="never", segment_bytes=1 << 20).open().close()
    assert verify_bus(str(bus)).healthy


# Went wrong: spans computed from the watermark ran past it after deferred appends across rolls.
def test_stats_and_retention_previews_stop_at_the_watermark_while_deferred_records_wait(
    tmp_path: Path,
) -> None:
    """After deferred appends across rolls, spans stop at the watermark: stats count only published
    records, and the retention preview plans as the writer does."""
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=4096) as writer:
        published = [writer.append("base", b"b" * 300) for _ in range(5)]
        for _ in range(20):
            writer.append("initsync", b"i" * 600, deferred=True)
        assert len(list_segment_bases(str(bus))) > 3
        stats = bus_stats(str(bus))
        with LogReader(bus) as reader:
            watermark = reader.end_offset
        assert stats.record_count == len(published)
        assert stats.bytes == watermark == stats.end_offset
        assert all(segment.end >= segment.base for segment in stats.segments)
        plan = plan_retention_now(str(bus), max_age_days=None, max_bytes=0)
        assert plan.bytes <= stats.end_offset


# Went wrong: close() published deferred records before its clean-close note; deferred records went out too often.
def test_deferred_records_go_in_batches_with_their_index_entries_and_a_failed_close_shows_none(
    tmp_path: Path,
) -> None:
    """Deferred records are written 256 KiB at a time (index entries with them, so they never pile
    up in memory); a close whose clean-close note cannot be written shows readers none of them,
    and the next writer's open publishes them (they were synced)."""
    bus = tmp_path / "bus"
    writes: list[int] = []

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "pwrite" and len(args[1]) > 4096:
                writes.append(len(args[1]))
            return original(*args, **kwargs)

        return call

    armed: list[bool] = []

    def decide(name: str, path: str | None, args: tuple[object, ...]) -> int | None:
        at_watermark = path is not None and path.endswith("watermark")
        return errno.EIO if armed and name == "pwrite" and at_watermark else None

    with path_faults(decide) as fired:
        writer = LogWriter(bus).open()
        durable = writer.append("c", b"durable")
        with seam_wrapped(wrap):
            deferred = [writer.append("c", bytes(590) + b"d", deferred=True) for _ in range(1500)]
        assert len(writes) == 3 and all(size >= DEFERRED_WRITE_BYTES for size in writes)
        entries = (bus / "00000000000000000000.index").stat().st_size - FILE_HEADER_SIZE
        assert entries >= (sum(writes) // 4096 - 1) * 20, "index entries of written records still in memory"
        armed.append(True)  # now the clean-close note cannot be written
        with pytest.raises(BusWriteError):
            writer.close()
    assert fired
    assert [r.offset for r in read_all(bus)] == [durable], "a failed close published deferred records"
    with LogWriter(bus):
        pass
    assert [r.offset for r in read_all(bus)] == [durable, *deferred]


def test_a_bus_whose_first_segment_is_full_size_rolls_at_its_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bus written before first segments were small (its first segment zero-filled to the full
    size and holding more than FIRST_SEGMENT_BYTES) opens as it is
    and rolls at its next append; nothing is lost, verify is healthy."""
    bus = tmp_path / "bus"
    big = b"b" * 256 * 1024
    with monkeypatch.context() as before:
        before.setattr(segment, "FIRST_SEGMENT_BYTES", 8 * 2**20)
        with LogWriter(bus, segment_bytes=8 * 2**20) as writer:
            kept = [writer.append("c", big) for _ in range(6)]  # 1.5 MiB in the first segment
    assert logs(bus)[0].stat().st_size == FILE_HEADER_SIZE + 8 * 2**20
    with LogWriter(bus, segment_bytes=8 * 2**20) as writer:
        kept.append(writer.append("c", b"rolls"))
        kept.append(writer.append("c", b"after"))
    assert [log.name for log in logs(bus)] == ["00000000000000000000.log", f"{kept[-2]:020d}.log"]
    assert [r.offset for r in read_all(bus)] == kept
    assert verify_bus(str(bus)).healthy
