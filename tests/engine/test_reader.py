"""LogReader on real files and real processes: following a live writer, seek, find_next, index bypass."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import promises
from helpers.bus import colliding_categories, content_snapshot, read_all, segment_bases, segment_names
from helpers.processes import PROCESS_TIMEOUT, python_env, run_python_out_of_descriptors, spawn_python

from filelog_bus import LogReader, LogWriter, Record
from filelog_bus.errors import (
    BusIOError,
    CorruptionError,
    InvalidOffsetError,
    NotABusError,
    OffsetOutOfRangeError,
)
from filelog_bus.layout import FILE_HEADER_SIZE
from filelog_bus.record import encode_record

CONFIG = {"segment_bytes": 2048, "index_interval_bytes": 256}
CATEGORIES = ["orders", "users", "rare", "ünïcødé/☃"]


def category_of(i: int) -> str:
    """Mostly common categories, 'rare' once in 23 records, the non-ASCII one once in 5."""
    if i % 23 == 11:
        return "rare"
    if i % 5 == 2:
        return "ünïcødé/☃"
    return ("orders", "users")[i % 2]


def payload_of(i: int) -> bytes:
    """Sizes from a few bytes to more than the index interval."""
    return b"%06d:" % i + b"p" * (i * 67 % 420)


def write_mixed(path: Path, count: int, **config: int) -> list[int]:
    """``count`` records of the CATEGORIES, of sizes from a few bytes to past the index interval."""
    with LogWriter(path, **(config or CONFIG)) as writer:
        return [writer.append(category_of(i), payload_of(i), 1000.0 + i) for i in range(count)]


@pytest.fixture(scope="module")
def filled_bus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    """A bus of 120 records over many segments and index blocks (read-only for the tests that use it)."""
    path = tmp_path_factory.mktemp("filled") / "bus"
    write_mixed(path, 120)
    records = read_all(path)
    assert len(segment_bases(path)) >= 8
    return path, records


# -- following a live writer ---------------------------------------------------------------------------------

CHUNKED_WRITER = """
    import sys
    from filelog_bus import LogWriter

    path, chunks, per_chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with LogWriter(path, segment_bytes=2048, index_interval_bytes=256) as writer:
        for chunk in range(chunks):
            for i in range(chunk * per_chunk, (chunk + 1) * per_chunk):
                writer.append("live" if i % 3 else "other", b"%06d:" % i + b"x" * (i * 41 % 300), float(i))
            print(chunk, writer.end_offset, flush=True)
            sys.stdin.readline()  # wait until the reader has read this chunk
"""


def test_reader_follows_a_writer_process_across_rolls(bus_dir: Path) -> None:
    """A reader waiting on a live writer in another process gets every record exactly once, in order,
    across segment rolls, each chunk while the writer is still running."""
    chunks, per_chunk = 6, 25
    with LogReader(bus_dir, timeout=PROCESS_TIMEOUT, missing_ok=True) as reader:
        writer = spawn_python(
            CHUNKED_WRITER, str(bus_dir), str(chunks), str(per_chunk), stdin=subprocess.PIPE
        )
        assert writer.stdin is not None and writer.stdout is not None
        got: list[Record] = []
        try:
            for chunk in range(chunks):
                # Iterate first: the reader waits for records the writer has not appended yet.
                got += itertools.islice(reader, per_chunk)
                line = writer.stdout.readline().split()
                assert line == [str(chunk), str(got[-1].next_offset)], writer.stderr
                assert writer.poll() is None  # still live
                writer.stdin.write("\n")
                writer.stdin.flush()
            writer.stdin.close()
            assert writer.wait(timeout=PROCESS_TIMEOUT) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
        reader.set_timeout(0)
        assert list(reader) == []
    assert [int(r.payload[:6]) for r in got] == list(range(chunks * per_chunk))
    for record, following in itertools.pairwise(got):
        assert record.next_offset == following.offset
    assert len(segment_bases(bus_dir)) >= chunks
    assert got == read_all(bus_dir)


FOLLOWING_READER = """
    import json, sys
    from filelog_bus import LogReader

    path, count = sys.argv[1], int(sys.argv[2])
    with LogReader(path, timeout=60, missing_ok=True) as reader:
        print("ready", flush=True)
        seen = 0
        for record in reader:
            print(json.dumps([record.offset, record.category, record.payload.decode(), record.size]), flush=True)
            seen += 1
            if seen == count:
                break
"""


def test_reader_process_follows_this_process_writing(bus_dir: Path) -> None:
    """A reader process started before the bus exists sees every record a live writer appends, in order."""
    count = 150
    reader = spawn_python(FOLLOWING_READER, str(bus_dir), str(count))
    assert reader.stdout is not None
    assert reader.stdout.readline() == "ready\n"
    offsets = write_mixed(bus_dir, count)
    out, err = reader.communicate(timeout=PROCESS_TIMEOUT)
    assert reader.returncode == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    assert [s[0] for s in seen] == offsets
    assert [s[2].encode() for s in seen] == [payload_of(i) for i in range(count)]
    assert len(segment_bases(bus_dir)) > 5


def test_seek_to_end_waits_for_the_next_record(bus_dir: Path) -> None:
    """seek(end_offset) then iterate: a record appended later (here, and by another process) is yielded."""
    write_mixed(bus_dir, 10)
    with LogReader(bus_dir) as reader:
        end = reader.end_offset
        reader.seek(end)
        assert list(reader) == []
        with LogWriter(bus_dir, **CONFIG) as writer:
            offset = writer.append("late", b"appended after the seek", 5.0)
        assert offset == end
        (record,) = list(reader)
        assert (record.offset, record.payload) == (end, b"appended after the seek")
        reader.seek(reader.end_offset)
        reader.set_timeout(PROCESS_TIMEOUT)
        writer_process = spawn_python(
            """
            import sys
            from filelog_bus import LogWriter
            with LogWriter(sys.argv[1], segment_bytes=2048, index_interval_bytes=256) as writer:
                writer.append("later", b"from another process", 6.0)
            """,
            str(bus_dir),
        )
        record = next(iter(reader))
        assert writer_process.wait(timeout=PROCESS_TIMEOUT) == 0
        assert (record.category, record.payload) == ("later", b"from another process")


# -- seek ------------------------------------------------------------------------------------------------------


def expected_seek(records: list[Record], target: int, end: int) -> int:
    return next((r.offset for r in records if r.offset >= target), end)


def test_seek_lands_on_the_first_record_at_or_after_every_position(
    filled_bus: tuple[Path, list[Record]],
) -> None:
    """For every byte position p in [begin, end], seek(p) then read gives the first record >= p."""
    path, records = filled_bus
    end = records[-1].next_offset
    with LogReader(path) as reader:
        for target in range(0, end + 1):
            reader.seek(target)
            position = expected_seek(records, target, end)
            assert reader.position == position, target
            if target % 97 == 0 or target in (end - 1, end):
                got = list(reader)
                assert got == [r for r in records if r.offset >= target]


def test_seek_after_a_record_resumes_at_the_next_one(filled_bus: tuple[Path, list[Record]]) -> None:
    """seek(last.offset + 1) resumes right after `last`, whichever segment the next record is in."""
    path, records = filled_bus
    with LogReader(path) as reader:
        for record, following in itertools.pairwise(records):
            reader.seek(record.offset + 1)
            assert next(iter(reader)) == following
        reader.seek(records[-1].offset + 1)
        assert list(reader) == []


@pytest.mark.parametrize("where", ["before begin", "past end", "far past end", "negative"])
def test_seek_outside_the_range_raises_an_index_error_naming_it(bus_dir: Path, where: str) -> None:
    """Outside [begin, end]: OffsetOutOfRangeError (an IndexError) with the range; the position is kept."""
    write_mixed(bus_dir, 40)
    with LogWriter(bus_dir, **CONFIG) as writer:
        writer.apply_retention(max_bytes=3000)
        begin, end = writer.begin_offset, writer.end_offset
    assert begin > 0
    target = {"before begin": begin - 1, "past end": end + 1, "far past end": 2**63, "negative": -1}[where]
    with LogReader(bus_dir) as reader:
        reader.seek(end)
        with pytest.raises(IndexError) as raised:
            reader.seek(target)
        error = raised.value
        assert isinstance(error, OffsetOutOfRangeError)
        assert (error.offset, error.begin, error.end) == (target, begin, end)
        assert f"[{begin}, {end}]" in str(error)
        assert reader.position == end


@pytest.mark.parametrize("offset", ["10", 10.0, None, True, b"10"])
def test_seek_needs_an_int(filled_bus: tuple[Path, list[Record]], offset: object) -> None:
    """A non-int offset is InvalidOffsetError, a TypeError."""
    with LogReader(filled_bus[0]) as reader, pytest.raises(TypeError) as raised:
        reader.seek(offset)  # type: ignore[arg-type]
    assert isinstance(raised.value, InvalidOffsetError)


# -- find_next ---------------------------------------------------------------------------------------------------


def find_all(reader: LogReader, category: str) -> list[Record]:
    found = []
    while (record := reader.find_next(category)) is not None:
        assert reader.position == record.next_offset
        found.append(record)
    return found


def test_find_next_enumerates_a_category_across_segments(filled_bus: tuple[Path, list[Record]]) -> None:
    """Repeated find_next(c) yields exactly the records of c, in order, over all segments; then None,
    leaving the position where it was."""
    path, records = filled_bus
    with LogReader(path) as reader:
        for category in [*CATEGORIES, "absent"]:
            reader.seek_to_beginning()
            found = find_all(reader, category)
            assert found == [r for r in records if r.category == category]
            position = reader.position
            assert reader.find_next(category) is None
            assert reader.position == position
    bases = segment_bases(path)
    rare_segments = {max(b for b in bases if b <= r.offset) for r in records if r.category == "rare"}
    assert len(rare_segments) > 2


def find_next_results(path: Path, records: list[Record]) -> list[tuple[int, str, int | None, int]]:
    """find_next of every category from every record's offset and from the end: (from, category, found, position)."""
    results = []
    with LogReader(path) as reader:
        for start in [r.offset for r in records] + [records[-1].next_offset]:
            for category in CATEGORIES:
                reader.seek(start)
                found = reader.find_next(category)
                results.append((start, category, None if found is None else found.offset, reader.position))
    return results


def seek_results(path: Path, records: list[Record]) -> list[int]:
    with LogReader(path) as reader:
        targets = range(0, records[-1].next_offset + 1, 7)
        out = []
        for target in targets:
            reader.seek(target)
            out.append(reader.position)
        return out


def test_find_next_from_every_position_matches_a_scan(filled_bus: tuple[Path, list[Record]]) -> None:
    """find_next(c) from any record = the first record of c at or after it (a plain scan), across segments."""
    path, records = filled_bus
    for start, category, found, position in find_next_results(path, records):
        expected = next((r for r in records if r.offset >= start and r.category == category), None)
        assert found == (None if expected is None else expected.offset)
        assert position == (start if expected is None else expected.next_offset)


def damage_indexes(path: Path, how: str) -> None:
    indexes = sorted([*path.glob("*.index"), *path.glob("*.catindex"), *path.glob("*.catsummary")])
    for i, index in enumerate(indexes):
        data = bytearray(index.read_bytes())
        if how == "deleted":
            index.unlink()
            continue
        if how == "flipped bit":
            data[len(data) // 2] ^= 0x08
        elif how == "zeroed":
            data = bytearray(len(data))
        elif how == "cut mid-entry":
            data = data[:-7]
        elif how == "wrong magic":
            data[:8] = b"NOTANIDX"
        elif how == "from another segment":
            data = bytearray(indexes[(i + 2) % len(indexes)].read_bytes())
        index.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how", ["deleted", "flipped bit", "zeroed", "cut mid-entry", "wrong magic", "from another segment"]
)
def test_readers_bypass_damaged_indexes_with_identical_results(
    tmp_path: Path, filled_bus: tuple[Path, list[Record]], how: str
) -> None:
    """With every index missing or damaged, readers scan instead: the same seek and find_next results, and
    the reader writes nothing into the bus directory."""
    source, records = filled_bus
    path = tmp_path / "bus"
    shutil.copytree(source, path)
    expected = (seek_results(path, records), find_next_results(path, records))
    damage_indexes(path, how)
    before = content_snapshot(path)
    assert (seek_results(path, records), find_next_results(path, records)) == expected
    assert read_all(path) == records
    assert content_snapshot(path) == before


def test_find_next_reads_only_the_blocks_that_may_hold_the_category(bus_dir: Path) -> None:
    """find_next uses the category index: a damaged record of another category in a block without the
    wanted one is never decoded (iterating over it raises CorruptionError, find_next does not)."""
    with LogWriter(bus_dir, segment_bytes=1 << 20, index_interval_bytes=256) as writer:
        common = [writer.append("common", b"c" * 200, float(i)) for i in range(20)]
        rare = writer.append("rare", b"the one", 20.0)
        for i in range(20):
            writer.append("common", b"c" * 200, 21.0 + i)
    damaged = common[8]  # several blocks after the start, several blocks before the rare record
    log = bus_dir / "00000000000000000000.log"
    data = bytearray(log.read_bytes())
    data[FILE_HEADER_SIZE + damaged + 100] ^= 0x01
    log.write_bytes(bytes(data))
    with LogReader(bus_dir) as reader:
        found = reader.find_next("rare")
        assert found is not None and (found.offset, found.payload) == (rare, b"the one")
        reader.seek_to_beginning()
        with pytest.raises(CorruptionError) as raised:
            list(reader)
        assert raised.value.file_position == FILE_HEADER_SIZE + damaged


def test_find_next_with_colliding_category_keys(bus_dir: Path) -> None:
    """Categories whose index keys collide are still told apart: find_next finds every record of each."""
    first, second = colliding_categories(0)
    with LogWriter(bus_dir, index_interval_bytes=256) as writer:
        for block in range(6):
            writer.append(first, b"1", float(block))
            writer.append(second, b"2", float(block))
            for _ in range(6):
                writer.append("filler", b"f" * 20, float(block))
    records = read_all(bus_dir)
    with LogReader(bus_dir) as reader:
        for category in (first, second):
            reader.seek_to_beginning()
            assert find_all(reader, category) == [r for r in records if r.category == category]


# -- what readers may see ------------------------------------------------------------------------------------------


def test_partial_record_at_the_live_tail_is_not_yet_written(bus_dir: Path) -> None:
    """Bytes past the published watermark (a record being appended) are invisible, never an error."""
    write_mixed(bus_dir, 30)
    records = read_all(bus_dir)
    log = sorted(bus_dir.glob("*.log"))[-1]
    pending = encode_record("pending", 1.0, b"not yet published")
    with LogReader(bus_dir) as reader:
        for extra in (pending[:5], pending[5:20], pending[20:], pending):  # partial, then complete + more
            with open(log, "ab") as file:
                file.write(extra)
            reader.seek_to_beginning()
            assert list(reader) == records
            assert reader.end_offset == records[-1].next_offset
            reader.seek(records[-1].offset)
            assert reader.find_next("pending") is None


def test_records_read_back_as_written(filled_bus: tuple[Path, list[Record]]) -> None:
    """Iteration yields Record(offset, timestamp, category, payload, size) exactly as appended."""
    _, records = filled_bus
    for i, record in enumerate(records):
        assert isinstance(record, Record)
        assert (record.category, record.payload, record.timestamp) == (
            category_of(i),
            payload_of(i),
            1000.0 + i,
        )
        assert record.size == len(encode_record(category_of(i), 1000.0 + i, payload_of(i)))


def test_records_larger_than_the_read_chunks(bus_dir: Path) -> None:
    """Records bigger than a lookup read (16 KiB) or a batch read (256 KiB) iterate, seek and find_next."""
    sizes = [10, 20_000, 5, 300_000, 17_000, 3, 600_000, 40]
    categories = ["a", "b", "a", "rare", "b", "a", "b", "rare"]
    with LogWriter(bus_dir, index_interval_bytes=4096) as writer:
        for i, (category, size) in enumerate(zip(categories, sizes, strict=True)):
            writer.append(category, bytes([i]) * size, float(i))
    records = read_all(bus_dir)
    assert [len(r.payload) for r in records] == sizes
    end = records[-1].next_offset
    with LogReader(bus_dir) as reader:
        for target in [*range(0, end + 1, 4999), *(r.offset + 1 for r in records)]:
            reader.seek(target)
            assert reader.position == expected_seek(records, min(target, end), end)
        for category in ("a", "b", "rare"):
            for record in records:
                reader.seek(record.offset)
                expected = next(
                    (r for r in records if r.offset >= record.offset and r.category == category), None
                )
                assert reader.find_next(category) == expected


def test_missing_bus_directory(tmp_path: Path) -> None:
    """A missing directory is NotABusError, or with missing_ok an empty bus that may appear later."""
    path = tmp_path / "later"
    with pytest.raises(NotABusError):
        LogReader(path).open()
    with LogReader(path, missing_ok=True) as reader:
        assert (reader.begin_offset, reader.end_offset, list(reader)) == (0, 0, [])
        assert reader.find_next("orders") is None
        write_mixed(path, 3)
        assert [r.payload for r in reader] == [payload_of(i) for i in range(3)]


# Went wrong: a reader opened with no file descriptor left, or on a symlink loop, raised a bare OSError
# from the look at the bus directory (the directory's classification), not a BusIOError.
def test_a_reader_that_cannot_look_at_the_bus_directory_raises_a_bus_io_error(tmp_path: Path) -> None:
    """A failed look other than a refusal (ELOOP, EMFILE) is a BusIOError naming the path, with advice."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for missing_ok in (False, True):
        with pytest.raises(BusIOError) as raised:
            LogReader(loop, missing_ok=missing_ok).open()
        assert (raised.value.errno, raised.value.path) == (errno.ELOOP, str(loop))
    write_mixed(tmp_path / "bus", 3)
    result = run_python_out_of_descriptors(
        """
        import sys
        from filelog_bus import LogReader
        from filelog_bus.errors import BusIOError
        """,
        """
        try:
            LogReader(sys.argv[1]).open()
        except BusIOError as exc:
            print(exc.errno, exc.advice)
        """,
        str(tmp_path / "bus"),
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"{errno.EMFILE} the process has too many open files"), result.stdout


def test_a_damaged_oldest_segment_header_does_not_stop_a_reader_from_opening_or_seeking_past_it(
    bus_dir: Path,
) -> None:
    """The damage is reported where records are read; a reader resuming in a later segment goes on."""
    with LogWriter(bus_dir, segment_bytes=1024) as writer:
        offsets = [writer.append("c", bytes([i]) * 100) for i in range(30)]
    oldest = sorted(bus_dir.glob("*.log"))[0]
    data = bytearray(oldest.read_bytes())
    data[3] ^= 0x01  # inside the segment's magic number
    oldest.write_bytes(bytes(data))
    with LogReader(bus_dir) as reader:
        with pytest.raises(CorruptionError) as failure:
            list(reader)
        assert failure.value.path == str(oldest)
        reader.seek(offsets[-1])
        assert [record.payload for record in reader] == [bytes([29]) * 100]


def test_find_next_waiting_consumes_what_it_searched_and_finds_what_comes_later(bus_dir: Path) -> None:
    """Unlike find_next, a search that finds nothing leaves the reader at the end, where new records count."""
    with LogWriter(bus_dir) as writer:
        writer.append("base", b"0")
        writer.append("base", b"1")
        with LogReader(bus_dir, timeout=0) as reader:
            assert reader.find_next("initsync") is None and reader.position == 0
            assert reader.find_next_waiting("initsync") is None
            assert reader.position == reader.end_offset
            writer.append("base", b"2")
            later = writer.append("initsync", b"3")
            found = reader.find_next_waiting("initsync")
            assert found is not None and found.offset == later and found.payload == b"3"


# -- timeout=0 while the newest segment is shorter than the watermark -----------------------------


TAIL_PROBES_CHILD = """
import json, sys
from filelog_bus import LogReader
from filelog_bus.errors import FilelogBusError

path = sys.argv[1]
out = {}

def probe(name, timeout, action):
    try:
        with LogReader(path, timeout=timeout) as reader:
            out[name] = action(reader)
    except FilelogBusError as exc:
        out[name] = "error:" + type(exc).__name__

def offset_of(found):
    return None if found is None else found.offset

def drain(reader):
    offsets = []
    while (found := reader.read_next()) is not None:
        offsets.append(found.offset)
    return offsets

probe("iterate", 0, lambda r: [x.offset for x in r])
probe("iterate_with_timeout", 0.3, lambda r: [x.offset for x in r])
probe("read_next", 0, drain)
probe("wait_at_end", 0, lambda r: (drain(r), r.wait_for_records())[1])
probe("find_next_tail", 0, lambda r: offset_of(r.find_next("tail")))
probe("find_next_absent", 0, lambda r: offset_of(r.find_next("absent")))
probe("find_next_waiting_tail", 0, lambda r: offset_of(r.find_next_waiting("tail")))
print(json.dumps(out))
"""


# Went wrong: a reader with timeout=0 spun at 100 % CPU while the newest segment was shorter than the watermark.
@pytest.mark.parametrize("cut", ["record-boundary", "mid-record", "header-only"])
def test_a_reader_with_timeout_0_returns_when_the_segment_is_behind_the_watermark(
    tmp_path: Path, cut: str
) -> None:
    """A reader with timeout=0 returns, rather than spinning, when the newest segment is shorter than
    the published watermark.

    The state is made by truncating the active segment below the watermark after a clean close; the
    reader runs in a child process killed after 20 s, so a spin fails the test instead of hanging it.
    """
    bus = tmp_path / "bus"
    acks: list[promises.Ack] = []
    with promises.open_writer(bus) as writer:
        seq = 0
        while len(segment_names(bus)) < 2 or writer.end_offset - promises.active_base(bus) < 300:
            promises.append(writer, acks, promises.record("w", seq))
            seq += 1
        for i in range(2):
            promises.append(writer, acks, promises.record("t", i, category="tail"))
    records = read_all(bus, hang_guard=promises.READ_DEADLINE)
    assert [r.offset for r in records] == [a.offset for a in acks]
    base = promises.active_base(bus)
    if cut == "record-boundary":
        position = records[-2].offset - base + promises.HEADER
    elif cut == "mid-record":
        position = records[-1].offset - base + promises.HEADER + 5
    else:
        position = promises.HEADER
    os.truncate(bus / f"{base:020d}.log", position)
    intact = [r for r in records if r.offset + r.size - base + promises.HEADER <= position]
    intact_offsets = [r.offset for r in intact]
    tail = [r.offset for r in intact if r.category == "tail"]

    try:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(TAIL_PROBES_CHILD), str(bus)],
            env=python_env(),
            capture_output=True,
            text=True,
            timeout=promises.READ_DEADLINE,
        )
    except subprocess.TimeoutExpired:
        result = None
    if result is None:
        pytest.fail(f"a reader with timeout=0 did not return within {promises.READ_DEADLINE} s (it spins)")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    partial_ok = cut == "mid-record"  # a torn record at the end may be reported, never yielded

    def acceptable(value: object, expected: object) -> bool:
        return value == expected or (partial_ok and value == "error:CorruptionError")

    for name in ("iterate", "iterate_with_timeout", "read_next"):
        assert acceptable(seen[name], intact_offsets), f"{name}: {seen[name]} != {intact_offsets}"
    assert acceptable(seen["wait_at_end"], False), seen["wait_at_end"]
    assert acceptable(seen["find_next_tail"], tail[0] if tail else None), seen["find_next_tail"]
    assert acceptable(seen["find_next_waiting_tail"], tail[0] if tail else None), seen[
        "find_next_waiting_tail"
    ]
    assert acceptable(seen["find_next_absent"], None), seen["find_next_absent"]
