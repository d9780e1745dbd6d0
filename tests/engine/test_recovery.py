"""Writer open on damaged files: torn tails are cut, real damage is refused, indexes are rebuilt.

A "crash" here is a real writer process that exits without close() (os._exit), so
no clean-close note is left and the next open runs recovery; damage is then made
on disk by hand, as a power cut or a bad disk would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import promises
from helpers.bus import (
    assert_data_then_zeros,
    assert_only_zeros_after,
    flip_bit,
    index_files,
    read_all,
    segment_names,
    segment_paths,
    write_at,
)
from helpers.processes import PROCESS_TIMEOUT, run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filelog_bus import LogReader, LogWriter, Record
from filelog_bus.errors import (
    CorruptionError,
)
from filelog_bus.layout import (
    FILE_HEADER_SIZE,
    FORMAT_VERSION,
    SEGMENT_MAGIC,
    encode_file_header,
    segment_name,
)
from filelog_bus.record import encode_record

CONFIG = {"segment_bytes": 3072, "index_interval_bytes": 256}
INTERVAL = CONFIG["index_interval_bytes"]

CRASHING_WRITER = """
    import json, os, sys
    from filelog_bus import LogWriter

    path, spec = sys.argv[1], json.loads(sys.argv[2])
    writer = LogWriter(path, durability=spec["durability"], **spec["config"]).open()
    assert writer.end_offset == 0
    for i, (category, size) in enumerate(spec["records"]):
        writer.append(category, b"%06d" % i + b"." * size, float(i))
    print(writer.end_offset, flush=True)
    os._exit(0)  # no close(): like a crash, the next open must recover
"""


def spec_records(count: int) -> list[tuple[str, int]]:
    """Mixed sizes (several index blocks per segment) ending with a run of small records."""
    body = [(("a", "b", "rare")[i % 7 % 3], 20 + i * 53 % 260) for i in range(count - 6)]
    return body + [("a", i) for i in range(6)]


def record_sizes(records: list[tuple[str, int]]) -> list[int]:
    return [len(encode_record(c, float(i), b"%06d" % i + b"." * n)) for i, (c, n) in enumerate(records)]


def newest_segment_bytes(records: list[tuple[str, int]], segment_bytes: int) -> int:
    """How many bytes the newest segment holds, by the documented roll rule."""
    base = end = 0
    for size in record_sizes(records):
        if end > base and end - base + size > segment_bytes:
            base = end
        end += size
    return end - base


#: Enough records for a few segments, the newest holding several index blocks.
RECORDS = next(
    spec_records(n)
    for n in range(40, 200)
    if newest_segment_bytes(spec_records(n), CONFIG["segment_bytes"]) > 2000
)


def write_then_crash_or_close(
    path: Path,
    records: list[tuple[str, int]] | None = None,
    *,
    crash: bool,
    durability: str = "always",
    config: dict[str, int] = CONFIG,
) -> list[Record]:
    """Write the records, then crash (no close) or close cleanly; return what a reader reads."""
    records = RECORDS if records is None else records
    if crash:
        spec = {"durability": durability, "config": config, "records": records}
        result = run_python(CRASHING_WRITER, str(path), json.dumps(spec), timeout=PROCESS_TIMEOUT)
        assert result.returncode == 0, result.stderr
    else:
        with LogWriter(path, durability=durability, **config) as writer:
            for i, (category, size) in enumerate(records):
                writer.append(category, b"%06d" % i + b"." * size, float(i))
    return read_all(path)


def segment_and_index_bytes(path: Path, end: int | None = None) -> dict[str, bytes]:
    """Every bus file's bytes except the watermark and lock, which change on every open.

    With ``end`` (the bus's data end), the newest segment is taken up to its data end, after
    checking that only zeros follow it (its preallocated tail, whose length is not compared)."""
    files = {
        p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.suffix in (".log", ".index", ".catindex")
    }
    if end is not None:
        log = segment_paths(path)[-1]
        position = data_position(log, end)
        assert_only_zeros_after(log, position)
        files[log.name] = files[log.name][:position]
    return files


def log_bytes(path: Path) -> dict[str, bytes]:
    """The segments' bytes: what recovery must never cut when it refuses (indexes are derived data)."""
    return {p.name: p.read_bytes() for p in segment_paths(path)}


def newest(path: Path) -> tuple[Path, int]:
    log = segment_paths(path)[-1]
    return log, int(log.stem)


def file_position(record: Record, base: int) -> int:
    return record.offset - base + FILE_HEADER_SIZE


def append_raw(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


def data_position(log: Path, end: int) -> int:
    """File position of the data end ``end`` in ``log``: where the next append (or a torn one) lands, in
    front of the zeros a preallocated segment keeps after its data."""
    return FILE_HEADER_SIZE + end - int(log.stem)


def write_at_data_end(log: Path, end: int, data: bytes) -> bytes:
    """Write ``data`` where an append at ``end`` would land (as a torn append does); return the bytes of
    ``log`` before it (its header and records)."""
    position = data_position(log, end)
    before = log.read_bytes()[:position]
    assert_only_zeros_after(log, position)
    write_at(log, position, data)
    return before


def cut_positions(size: int) -> list[int]:
    """Every position in the header, then about twenty spread over the body."""
    return sorted({*range(1, min(size, HEADER_END + 2)), *range(HEADER_END, size, max(1, size // 20))})


HEADER_END = 16  # record header size


# -- torn tails ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Record]]]:
    """One crashed and one cleanly closed bus, copied by the tests that damage them."""
    made = {}
    for origin in ("crash", "clean"):
        path = tmp_path_factory.mktemp(origin) / "bus"
        made[origin] = (path, write_then_crash_or_close(path, crash=origin == "crash"))
    return made


def copy_of(templates: dict[str, tuple[Path, list[Record]]], origin: str, into: Path) -> list[Record]:
    source, records = templates[origin]
    shutil.copytree(source, into)
    return records


@pytest.mark.parametrize("origin", ["crash", "clean"])
@pytest.mark.parametrize("payload_size", [3, 700])
def test_torn_last_record_is_cut_at_every_position(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]], origin: str, payload_size: int
) -> None:
    """A record torn anywhere (header or body) after the published end is cut; earlier records are intact."""
    torn = encode_record("a", 99.0, b"T" * payload_size)
    for cut in cut_positions(len(torn)):
        bus = tmp_path / f"cut-{cut}"
        records = copy_of(templates, origin, bus)
        log, _ = newest(bus)
        data = write_at_data_end(log, records[-1].next_offset, torn[:cut])
        with LogWriter(bus, **CONFIG) as writer:
            assert writer.end_offset == records[-1].next_offset, cut
            assert_data_then_zeros(log, data)
            assert read_all(bus) == records
            assert writer.append("after", b"x", 100.0) == records[-1].next_offset
        shutil.rmtree(bus)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.one_of(st.binary(min_size=1, max_size=600), st.integers(1, 5000).map(bytes)))
def test_random_partial_bytes_at_the_tail_are_cut(
    tmp_path_factory: pytest.TempPathFactory,
    templates: dict[str, tuple[Path, list[Record]]],
    garbage: bytes,
) -> None:
    """Arbitrary bytes (or zeros, as after a power cut) after the last record are cut on open."""
    bus = tmp_path_factory.mktemp("garbage") / "bus"
    records = copy_of(templates, "crash", bus)
    log, _ = newest(bus)
    data = write_at_data_end(log, records[-1].next_offset, garbage)
    with LogWriter(bus, **CONFIG) as writer:
        assert writer.end_offset == records[-1].next_offset
    assert_data_then_zeros(log, data)
    assert read_all(bus) == records
    shutil.rmtree(bus.parent)


@pytest.mark.parametrize("power_cut", ["file cut short", "tail zeroed"])
def test_torn_record_the_indexes_point_at_is_cut_and_the_indexes_repaired(
    bus_dir: Path, power_cut: str
) -> None:
    """A never-durable record that starts an index block, torn by a power cut after its index entries were
    written: it is cut, and the indexes end up exactly as if it had never been appended.

    The power cut loses the record's second half: the file ends there (a file that was not
    preallocated, or whose new size was not durable), or zeros replace it (a preallocated segment)."""
    records = spec_records(30)
    before = sum(record_sizes(records)[:-2])
    records[-2] = ("a", 300)
    # Pad the second-to-last record (+1 payload byte = +1 record byte from 256 on) so the last one starts
    # an index block.
    records[-2] = ("a", 300 + -(before + record_sizes(records)[-2]) % INTERVAL)
    records[-1] = ("rare", 500)
    single_segment = {"segment_bytes": 1 << 20, "index_interval_bytes": INTERVAL}
    written = write_then_crash_or_close(
        bus_dir, records, crash=True, durability="never", config=single_segment
    )
    last = written[-1]
    assert last.offset % INTERVAL == 0 and last.category == "rare"
    log = segment_paths(bus_dir)[-1]
    lost_from = file_position(last, 0) + last.size // 2
    if power_cut == "file cut short":
        os.truncate(log, lost_from)
    else:
        write_at(log, lost_from, bytes(data_position(log, last.next_offset) - lost_from))
    with LogWriter(bus_dir, **single_segment) as writer:
        assert writer.end_offset == last.offset
    assert read_all(bus_dir) == written[:-1]
    reference = bus_dir.parent / "reference"
    write_then_crash_or_close(reference, records[:-1], crash=False, config=single_segment)
    assert segment_and_index_bytes(bus_dir, last.offset) == segment_and_index_bytes(reference, last.offset)
    with LogReader(bus_dir) as reader:
        assert reader.find_next("rare") == next(r for r in written if r.category == "rare")
        reader.seek(written[-2].offset)
        assert reader.find_next("rare") is None


def test_torn_record_whose_payload_holds_a_record_frame_is_cut(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]]
) -> None:
    """A torn record is cut even when its payload happens to contain a valid record (e.g. a relayed one).

    Nothing can follow a record that runs past the end of the file, so a frame found inside
    its own body is not proof of mid-log damage.
    """
    records = copy_of(templates, "crash", tmp_path / "bus")
    inner = encode_record("inner", 1.0, b"relayed record")
    torn = encode_record("relay", 2.0, b"<" + inner + b">" * 100)
    log, _ = newest(tmp_path / "bus")
    data = write_at_data_end(log, records[-1].next_offset, torn[: len(torn) - 50])
    with LogWriter(tmp_path / "bus", **CONFIG) as writer:
        assert writer.end_offset == records[-1].next_offset
    assert_data_then_zeros(log, data)


# -- damage that must not be cut ----------------------------------------------------------------------------


def last_block_records(records: list[Record], base: int) -> list[Record]:
    """The records of the newest segment's last index block: what bounded recovery scans."""
    last_block = (records[-1].offset - base) // INTERVAL
    return [r for r in records if r.offset >= base and (r.offset - base) // INTERVAL == last_block]


@pytest.mark.parametrize("where", ["last index block", "early, indexes deleted"])
def test_damage_followed_by_valid_records_in_the_newest_segment_is_refused(bus_dir: Path, where: str) -> None:
    """After a crash, a flipped bit followed by valid records: CorruptionError naming file and position;
    nothing is cut."""
    records = write_then_crash_or_close(bus_dir, crash=True)
    log, base = newest(bus_dir)
    if where == "last index block":
        candidates = last_block_records(records, base)
        assert len(candidates) >= 2
    else:
        candidates = [r for r in records if r.offset >= base][1:3]
        for index in index_files(bus_dir):
            index.unlink()
    damaged = candidates[0]
    flip_bit(log, file_position(damaged, base) + damaged.size - 3)
    before = log_bytes(bus_dir)
    with pytest.raises(CorruptionError) as raised:
        LogWriter(bus_dir, **CONFIG).open()
    assert raised.value.path == str(log)
    assert raised.value.file_position == file_position(damaged, base)
    assert str(log) in str(raised.value) and str(raised.value.file_position) in str(raised.value)
    assert log_bytes(bus_dir) == before  # never silently cut
    with pytest.raises(CorruptionError):
        LogWriter(bus_dir, **CONFIG).open()  # and it stays refused


@pytest.mark.parametrize(
    ("origin", "loss"),
    [("crash", "file cut short"), ("clean", "file cut short"), ("crash", "last byte zeroed")],
)
def test_acknowledged_record_cut_short_is_refused(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]], origin: str, loss: str
) -> None:
    """A durable, published record that lost its end is damage, not a torn write: refused, not cut. In a
    preallocated segment the lost end reads as zeros, as a torn append followed by zeros would. (After a
    clean close the writer checks where the data ends, not the records' bytes: a zeroed byte there is
    damage like a flipped bit, which readers report.)"""
    bus = tmp_path / "bus"
    records = copy_of(templates, origin, bus)
    log, base = newest(bus)
    last = records[-1]
    if loss == "file cut short":
        os.truncate(log, file_position(last, base) + last.size - 1)
    else:
        assert log.read_bytes()[file_position(last, base) + last.size - 1] != 0
        write_at(log, file_position(last, base) + last.size - 1, b"\0")
    before = log_bytes(bus)
    with pytest.raises(CorruptionError) as raised:
        LogWriter(bus, **CONFIG).open()
    assert raised.value.path == str(log)
    assert raised.value.file_position == file_position(last, base)
    assert log_bytes(bus) == before


@pytest.mark.parametrize("origin", ["crash", "clean"])
def test_damage_the_writer_does_not_scan_is_left_for_readers(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]], origin: str
) -> None:
    """Damage in the newest segment before the last index point (recovery scans only after it): the
    writer opens without cutting anything, and a reader reports the damaged record's file and position."""
    bus = tmp_path / "bus"
    records = copy_of(templates, origin, bus)
    log, base = newest(bus)
    in_newest = [r for r in records if r.offset >= base]
    damaged = in_newest[1]
    assert (damaged.offset - base) // INTERVAL < (records[-1].offset - base) // INTERVAL
    flip_bit(log, file_position(damaged, base) + HEADER_END + 2)
    size = log.stat().st_size
    with LogWriter(bus, **CONFIG) as writer:
        assert writer.end_offset == records[-1].next_offset
    assert log.stat().st_size == size
    got: list[Record] = []
    with LogReader(bus) as reader, pytest.raises(CorruptionError) as raised:
        got.extend(reader)
    assert got == records[: records.index(damaged)]
    assert (raised.value.path, raised.value.file_position) == (str(log), file_position(damaged, base))


def test_flipped_bit_in_a_closed_segment_is_reported_by_readers(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]]
) -> None:
    """A closed segment is never cut: the writer opens; readers get every record before the damage, then
    CorruptionError naming the closed segment and position; the later segments stay readable."""
    bus = tmp_path / "bus"
    records = copy_of(templates, "clean", bus)
    logs = segment_paths(bus)
    assert len(logs) >= 2
    closed, base = logs[0], int(logs[0].stem)
    following = int(logs[1].stem)
    damaged = [r for r in records if r.offset < following][3]
    flip_bit(closed, file_position(damaged, base) + damaged.size // 2)
    size = closed.stat().st_size
    with LogWriter(bus, **CONFIG) as writer:
        writer.append("more", b"after the damage", 50.0)
    assert closed.stat().st_size == size
    got: list[Record] = []
    with LogReader(bus) as reader:
        with pytest.raises(CorruptionError) as raised:
            got.extend(reader)
        assert (raised.value.path, raised.value.file_position) == (str(closed), file_position(damaged, base))
        assert got == records[:3]
        reader.seek(following)
        rest = list(reader)
    assert rest[:-1] == [r for r in records if r.offset >= following]
    assert rest[-1].payload == b"after the damage"


@pytest.mark.parametrize("change", ["truncated", "extended"])
def test_closed_segment_of_the_wrong_size_is_refused(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]], change: str
) -> None:
    """A closed segment that no longer ends where the next begins: the writer refuses to open, naming it."""
    bus = tmp_path / "bus"
    copy_of(templates, "clean", bus)
    closed = segment_paths(bus)[0]
    if change == "truncated":
        os.truncate(closed, closed.stat().st_size - 10)
    else:
        append_raw(closed, encode_record("extra", 1.0, b"x"))
    with pytest.raises(CorruptionError) as raised:
        LogWriter(bus, **CONFIG).open()
    assert raised.value.path == str(closed)


# -- indexes are derived data -------------------------------------------------------------------------------


def damage_index(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "deleted":
        path.unlink()
        return
    if how == "cut mid-entry":
        data = data[: len(data) - 5]
    elif how == "emptied":
        data = bytearray()
    elif how == "flipped entry bit":
        data[FILE_HEADER_SIZE + 5] ^= 0x10
    elif how == "wrong magic":
        data[0] ^= 0xFF
    elif how == "zeroed":
        data = bytearray(len(data))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["closed", "active"])
@pytest.mark.parametrize(
    "how", ["deleted", "cut mid-entry", "emptied", "flipped entry bit", "wrong magic", "zeroed"]
)
@pytest.mark.parametrize("origin", ["crash", "clean"])
def test_damaged_index_is_rebuilt_by_the_writer(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]], which: str, how: str, origin: str
) -> None:
    """Missing or damaged index files (closed or active segment) are rebuilt byte for byte: on open when
    the damage shows in the file's header or size (the cheap check that keeps open constant-cost), by
    repair_indexes() when only an entry's checksum shows it (readers bypass the index until then)."""
    bus = tmp_path / "bus"
    copy_of(templates, origin, bus)
    reference = tmp_path / "reference"
    copy_of(templates, origin, reference)
    LogWriter(reference, **CONFIG).open().close()
    expected = segment_and_index_bytes(reference)
    bases = [int(p.stem) for p in segment_paths(bus)]
    base = bases[0] if which == "closed" else bases[-1]
    damaged = sorted(index.name for index in index_files(bus) if int(index.stem) == base)
    for name in damaged:
        damage_index(bus / name, how)
    # Recovery after a crash reads the active segment's indexes in full; nothing else does on open.
    found_on_open = how != "flipped entry bit" or (origin == "crash" and which == "active")
    with LogWriter(bus, **CONFIG) as writer:
        assert writer.repair_indexes() == ([] if found_on_open else damaged)
        assert writer.repair_indexes() == []
    assert segment_and_index_bytes(bus) == expected


def test_changed_index_interval_rebuilds_the_active_segment_only(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]]
) -> None:
    """Reopening with another index_interval_bytes reindexes the active segment; readers read the same."""
    bus = tmp_path / "bus"
    records = copy_of(templates, "clean", bus)
    before = segment_and_index_bytes(bus)
    with LogWriter(bus, segment_bytes=CONFIG["segment_bytes"], index_interval_bytes=1024):
        pass
    after = segment_and_index_bytes(bus)
    active = segment_paths(bus)[-1].stem
    for name, data in after.items():
        if name.startswith(active) and not name.endswith(".log"):
            assert data != before[name]
        else:
            assert data == before[name]
    assert read_all(bus) == records


@pytest.mark.parametrize("left", [b"", b"half header", b"whole header", b"preallocated"])
def test_crash_while_rolling_leaves_a_segment_the_writer_finishes(
    tmp_path: Path, templates: dict[str, tuple[Path, list[Record]]], left: bytes
) -> None:
    """A crash while creating the next segment (empty file, half or whole header, no record): readers read
    the bus as it was; the writer completes the segment and appends into it at the same offset.

    The segment being closed was cut to its data (the roll does that, durably, before it creates
    the next one). An empty file or a partial header is what an older version (format version 1,
    which created segments in place) leaves; this version links a complete, preallocated segment
    into place and then removes its temporary name, so a crash in between leaves both.
    """
    bus = tmp_path / "bus"
    records = copy_of(templates, "crash", bus)
    end = records[-1].next_offset
    closing, _ = newest(bus)
    os.truncate(closing, data_position(closing, end))
    header = encode_file_header(SEGMENT_MAGIC, end, version=1 if left != b"preallocated" else FORMAT_VERSION)
    content = {
        b"": b"",
        b"half header": header[:10],
        b"whole header": header,
        b"preallocated": header + bytes(CONFIG["segment_bytes"]),
    }[left]
    (bus / segment_name(end)).write_bytes(content)
    if left == b"preallocated":
        (bus / (segment_name(end) + ".new")).write_bytes(content)
    assert read_all(bus) == records
    with LogWriter(bus, **CONFIG) as writer:
        assert writer.end_offset == end
        assert writer.append("next", b"into the new segment", 1.0) == end
    assert read_all(bus)[:-1] == records
    assert (bus / segment_name(end)).read_bytes().startswith(header)
    assert not (bus / (segment_name(end) + ".new")).exists()


# -- durability="never": a page lost in the middle of the unsynced tail ---------------------------


# Went wrong: with durability='never', recovery scanned only after the last index entry, kept a lost page's hole and published it.
@pytest.mark.parametrize("indexes", ["kept", "lost"])
@pytest.mark.parametrize("segment", ["first", "after-rolls"])
def test_a_page_lost_in_the_middle_of_an_unsynced_tail_is_cut_not_published(
    tmp_path: Path, indexes: str, segment: str
) -> None:
    """With durability="never", a power cut that loses a page in the middle of the unsynced tail (a
    later page did reach the disk): the bus opens, with or without its index files, and the tail from
    the lost page on is cut, not kept as a hole and published as durable.

    Built by hand: the bus is copied while its durability="never" writer is open (what the page
    cache held), then one 4096-byte page of the active segment's tail is zeroed, a later one kept.
    The active segment is preallocated (its file goes on past its data with zeros), so the tail and
    its pages are measured from the data end (the writer's end offset), not from the file size.
    """
    live = tmp_path / "live"
    bus = tmp_path / "bus"
    segment_bytes = 2**20 if segment == "first" else 12_000
    writer = promises.open_writer(
        live, durability="never", segment_bytes=segment_bytes, index_interval_bytes=256
    )
    acks: list[promises.Ack] = []
    seq = 0
    while True:
        promises.append(writer, acks, promises.record("never", seq, size=200 + seq % 50))
        seq += 1
        enough_segments = segment == "first" or len(segment_names(live)) >= 3
        if (
            enough_segments
            and promises.HEADER + writer.end_offset - promises.active_base(live) >= 2 * promises.PAGE + 1500
        ):
            break
    shutil.copytree(live, bus)  # the writer is still open: no clean close, nothing synced
    writer.close()

    records = read_all(bus, hang_guard=promises.READ_DEADLINE)
    assert [r.offset for r in records] == [a.offset for a in acks]
    base = promises.active_base(bus)
    active = bus / f"{base:020d}.log"
    size = promises.HEADER + records[-1].next_offset - base  # where the data ends in the file
    assert active.stat().st_size >= size
    assert not any(active.read_bytes()[size:]), "only the zeros of the preallocated tail follow the data"
    hole_page = 1 if size < 4 * promises.PAGE else (size // promises.PAGE) // 2
    assert (hole_page + 1) * promises.PAGE < size, "no page after the hole: the test premise is broken"
    with open(active, "r+b") as file:
        file.seek(hole_page * promises.PAGE)
        file.write(bytes(promises.PAGE))
    if indexes == "lost":
        for suffix in (".index", ".catindex"):
            (bus / f"{base:020d}{suffix}").unlink()
    hole = base + hole_page * promises.PAGE - promises.HEADER  # the bus offset of the first lost byte
    kept = [r for r in records if r.offset + r.size <= hole]
    cut = next(r.offset for r in records if r.offset + r.size > hole)
    assert kept and cut >= base

    with promises.open_writer(
        bus, durability="never", segment_bytes=segment_bytes, index_interval_bytes=256
    ) as writer:
        assert writer.end_offset == cut, "the writer did not cut the tail at the first damaged record"
        first_new = writer.append("users", b"after the cut")
        assert first_new == cut, "the first new record must land right after the cut"
        new_acks = [promises.Ack(first_new, "users", b"after the cut")]
        for i in range(30):
            promises.append(writer, new_acks, promises.record("new", i, size=150))
    after = read_all(bus, hang_guard=promises.READ_DEADLINE)
    assert [r.offset for r in after[: len(kept)]] == [r.offset for r in kept]
    assert [r.payload for r in after[: len(kept)]] == [r.payload for r in kept], (
        "records before the hole changed"
    )
    assert [r.offset for r in after[len(kept) :]] == [a.offset for a in new_acks], (
        "records after the hole survived, or new records did not land right after the cut"
    )
    kept_acks = [promises.Ack(r.offset, r.category, r.payload) for r in kept]
    promises.check_bus(bus, kept_acks + new_acks)
