"""Retention on real files: whole closed segments only, never the active one, readers keep going."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers.bus import DAY, SMALL, read_all, segment_bases
from helpers.processes import PROCESS_TIMEOUT, spawn_python

from filelog_bus import LogReader, LogWriter, Record
from filelog_bus.errors import ConfigError, OffsetOutOfRangeError, RecordsExpiredError
from filelog_bus.layout import segment_name

T0 = 1_700_000_000.0


def write_dated(path: Path, count: int, *, start: int = 0, day_per_record: float = 0.25) -> None:
    """Records of ~150 bytes (about six per segment); record i is stamped T0 + i * day_per_record days."""
    with LogWriter(path, **SMALL) as writer:
        for i in range(start, start + count):
            writer.append(("a", "b")[i % 2], b"%06d:" % i + b"." * 120, T0 + i * day_per_record * DAY)


def bus_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.suffix in (".log", ".index", ".catindex"))


def test_retention_by_bytes_deletes_oldest_closed_segments_and_their_indexes(bus_dir: Path) -> None:
    """Oldest closed segments (with their index files) go until the bus fits max_bytes; offsets stay valid."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    end = records[-1].next_offset
    budget = end - bases[4]  # exactly the size of segments 4.. : the first four must go
    with LogWriter(bus_dir, **SMALL) as writer:
        deleted = writer.apply_retention(max_bytes=budget)
        assert deleted == [segment_name(b) for b in bases[:4]]
        assert (writer.begin_offset, writer.end_offset) == (bases[4], end)
        assert writer.apply_retention(max_bytes=budget) == []
        offset = writer.append("a", b"after retention", T0)
    assert offset == end
    assert not any(
        name.startswith(tuple(segment_name(b)[:20] for b in bases[:4])) for name in bus_files(bus_dir)
    )
    assert read_all(bus_dir)[:-1] == [r for r in records if r.offset >= bases[4]]
    with LogReader(bus_dir) as reader:
        assert reader.begin_offset == bases[4]
        reader.seek(bases[4] + 1)
        assert next(iter(reader)).offset > bases[4]


@pytest.mark.parametrize("policy", [{"max_bytes": 0}, {"max_age_days": 0.001, "now": T0 + 10_000 * DAY}])
def test_retention_never_deletes_the_active_segment(bus_dir: Path, policy: dict[str, float]) -> None:
    """Even when every record is over budget or expired, the active segment (and so the end offset) stays."""
    write_dated(bus_dir, 40)
    bases = segment_bases(bus_dir)
    records = read_all(bus_dir)
    with LogWriter(bus_dir, **SMALL) as writer:
        assert writer.apply_retention(**policy) == [segment_name(b) for b in bases[:-1]]  # type: ignore[arg-type]
        assert writer.apply_retention(**policy) == []  # type: ignore[arg-type]
        assert writer.begin_offset == bases[-1]
    assert segment_bases(bus_dir) == bases[-1:]
    assert read_all(bus_dir) == [r for r in records if r.offset >= bases[-1]]


def test_single_segment_bus_is_never_emptied(bus_dir: Path) -> None:
    """A bus with only its active segment keeps it, whatever the policy."""
    with LogWriter(bus_dir, **SMALL) as writer:
        writer.append("a", b"old", T0)
        assert writer.apply_retention(max_bytes=0, max_age_days=0.001, now=T0 + 1000 * DAY) == []
    assert len(read_all(bus_dir)) == 1


def newest_per_segment(bases: list[int], records: list[Record]) -> list[float]:
    ends = [*bases[1:], records[-1].next_offset]
    return [
        max(r.timestamp for r in records if base <= r.offset < end)
        for base, end in zip(bases, ends, strict=True)
    ]


def test_retention_by_age_uses_each_segments_newest_record(bus_dir: Path) -> None:
    """A closed segment goes once its newest record is older than max_age_days at `now`, oldest first."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    newest = newest_per_segment(bases, records)
    with LogWriter(bus_dir, **SMALL) as writer:
        # Just at the cutoff of segment 2's newest record: segments 0 and 1 are older, segment 2 is not.
        now = newest[2] + 3 * DAY
        assert writer.apply_retention(max_age_days=3, now=now) == [segment_name(b) for b in bases[:2]]
        # A hair later, segment 2's newest record is older than the cutoff too.
        assert writer.apply_retention(max_age_days=3, now=now + 1) == [segment_name(bases[2])]
        assert writer.begin_offset == bases[3]


def test_age_retention_keeps_the_log_contiguous(bus_dir: Path) -> None:
    """A recent segment stops age retention: an older-stamped segment after it is kept, so no gap appears."""
    with LogWriter(bus_dir, **SMALL) as writer:
        for i in range(24):
            stamp = T0 + 100 * DAY if 6 <= i < 12 else T0  # the second segment holds recent records
            writer.append("a", b"%06d:" % i + b"." * 120, stamp)
        bases = segment_bases(bus_dir)
        assert len(bases) >= 4
        records = read_all(bus_dir)
        second = [r for r in records if bases[1] <= r.offset < bases[2]]
        assert all(r.timestamp == T0 + 100 * DAY for r in second)
        assert writer.apply_retention(max_age_days=10, now=T0 + 50 * DAY) == [segment_name(bases[0])]
    assert segment_bases(bus_dir) == bases[1:]


def test_age_then_bytes(bus_dir: Path) -> None:
    """With both policies, expired segments go first, then the oldest while the bus is over max_bytes."""
    write_dated(bus_dir, 60)
    bases = segment_bases(bus_dir)
    records = read_all(bus_dir)
    newest = newest_per_segment(bases, records)
    end = records[-1].next_offset
    with LogWriter(bus_dir, **SMALL) as writer:
        deleted = writer.apply_retention(max_age_days=1, now=newest[1] + DAY + 1, max_bytes=end - bases[5])
    assert deleted == [segment_name(b) for b in bases[:5]]


@pytest.mark.parametrize(
    "policy",
    [
        {"max_bytes": -1},
        {"max_bytes": 1.5},
        {"max_bytes": "100"},
        {"max_age_days": 0},
        {"max_age_days": -1},
        {"max_age_days": float("nan")},
        {"max_age_days": "1"},
    ],
)
def test_invalid_policy_is_a_config_error(bus_dir: Path, policy: dict[str, object]) -> None:
    """A nonsensical policy is refused (ConfigError) and deletes nothing."""
    write_dated(bus_dir, 30)
    before = bus_files(bus_dir)
    with LogWriter(bus_dir, **SMALL) as writer, pytest.raises(ConfigError):
        writer.apply_retention(**policy)  # type: ignore[arg-type]
    assert bus_files(bus_dir) == before


# -- readers and retention --------------------------------------------------------------------------------------


def test_reader_in_a_deleted_segment_finishes_it_and_moves_on(bus_dir: Path) -> None:
    """A reader positioned inside a segment that retention deletes still reads the rest of that segment,
    then continues with the next (retained) segment."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    inside = [r for r in records if bases[1] <= r.offset < bases[2]]
    with LogReader(bus_dir) as reader:
        reader.seek(inside[1].offset)
        first = next(iter(reader))
        assert first == inside[1]
        with LogWriter(bus_dir, **SMALL) as writer:
            assert writer.apply_retention(max_bytes=records[-1].next_offset - bases[2]) == [
                segment_name(bases[0]),
                segment_name(bases[1]),
            ]
        assert reader.begin_offset == bases[2]
        rest = list(reader)
    assert [first, *rest] == [r for r in records if r.offset >= inside[1].offset]


def test_reader_positioned_but_not_reading_yet_finishes_the_deleted_segment(bus_dir: Path) -> None:
    """Positioned by seek only (nothing read yet), the reader still gets the records of its deleted segment."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    with LogReader(bus_dir) as reader:
        reader.seek(bases[1] + 1)
        with LogWriter(bus_dir, **SMALL) as writer:
            writer.apply_retention(max_bytes=records[-1].next_offset - bases[2])
        assert list(reader) == [r for r in records if r.offset > bases[1]]


@pytest.mark.parametrize("positioning", ["open", "seek_to_beginning"])
def test_reader_positioned_at_the_beginning_finishes_the_deleted_segment(
    bus_dir: Path, positioning: str
) -> None:
    """A reader just opened (or sent back to the beginning) is positioned in the oldest segment: when
    retention deletes that segment before the reader reads, it still finishes it, as after seek()."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    with LogReader(bus_dir) as reader:
        if positioning == "seek_to_beginning":
            reader.seek(bases[3])
            reader.seek_to_beginning()
        assert reader.position == 0
        with LogWriter(bus_dir, **SMALL) as writer:
            assert writer.apply_retention(max_bytes=records[-1].next_offset - bases[1]) == [segment_name(0)]
        assert list(reader) == records


def test_reader_whose_next_segment_was_deleted_gets_records_expired(bus_dir: Path) -> None:
    """When retention also deleted the segments after the reader's, it finishes its own segment, then
    RecordsExpiredError says records were missed and where the bus now begins."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    with LogReader(bus_dir) as reader:
        reader.seek(bases[1])
        first = next(iter(reader))
        with LogWriter(bus_dir, **SMALL) as writer:
            writer.apply_retention(max_bytes=records[-1].next_offset - bases[4])
        got = [first]
        with pytest.raises(RecordsExpiredError) as raised:
            got.extend(reader)
        assert got == [r for r in records if bases[1] <= r.offset < bases[2]]
        assert isinstance(raised.value, OffsetOutOfRangeError)
        assert raised.value.begin == bases[4]
        reader.seek(raised.value.begin)
        assert list(reader) == [r for r in records if r.offset >= bases[4]]


FOLLOWER = """
    import sys
    from filelog_bus import LogReader

    with LogReader(sys.argv[1], timeout=60) as reader:
        reader.seek(int(sys.argv[2]))
        first = next(iter(reader))
        print(first.offset, flush=True)
        sys.stdin.readline()  # retention happens now
        reader.set_timeout(0)
        print(" ".join(str(r.offset) for r in reader), flush=True)
"""


def test_reader_process_survives_retention_of_its_segment(bus_dir: Path) -> None:
    """A reader in another process, mid-way through a segment that retention deletes, reads on to the end."""
    write_dated(bus_dir, 60)
    records = read_all(bus_dir)
    bases = segment_bases(bus_dir)
    start = [r for r in records if r.offset >= bases[1]][1]
    reader = spawn_python(FOLLOWER, str(bus_dir), str(start.offset), stdin=subprocess.PIPE)
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline() == f"{start.offset}\n"
    with LogWriter(bus_dir, **SMALL) as writer:
        writer.apply_retention(max_bytes=records[-1].next_offset - bases[2])
        appended = writer.append("a", b"after retention", T0)
    out, err = reader.communicate(input="\n", timeout=PROCESS_TIMEOUT)
    assert reader.returncode == 0, err
    offsets = [int(o) for o in out.split()]
    assert offsets == [r.offset for r in records if r.offset > start.offset] + [appended]
