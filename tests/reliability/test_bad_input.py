"""Bad input: each mistake gets a typed error with a clear message, and none harms the bus.

After every refused call the bus must read back exactly as before and the writer
must keep working (the next record lands where it would have anyway).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from helpers.bus import colliding_categories, dir_snapshot, file_contents, read_all, segment_paths

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import (
    BusClosedError,
    ConfigError,
    CorruptionError,
    FilelogBusError,
    InvalidOffsetError,
    InvalidRecordError,
    NotABusError,
    OffsetOutOfRangeError,
    UnsupportedFormatError,
)
from filelog_bus.layout import (
    FILE_HEADER,
    FILE_HEADER_SIZE,
    FORMAT_VERSION,
    LOCK_NAME,
    SEGMENT_MAGIC,
    WATERMARK_NAME,
    encode_file_header,
)

BAD_CATEGORIES = [
    (None, "must be a str"),
    (42, "must be a str"),
    (b"users", "must be a str"),
    ("", "must not be empty"),
    ("x" * 1025, "maximum is 1024"),
    ("é" * 513, "maximum is 1024"),
    ("bad\ud800surrogate", "not valid Unicode"),
]


@pytest.fixture
def small_bus(bus_dir: Path) -> Path:
    """A bus with a few records over several segments (writer closed)."""
    with LogWriter(bus_dir, segment_bytes=1024, index_interval_bytes=128) as writer:
        for i in range(30):
            writer.append(("users", "groups")[i % 2], f"record {i}".encode() * (1 + i % 7), 1000.0 + i)
    return bus_dir


def assert_unchanged_and_writable(bus: Path, before: list, writer: LogWriter) -> None:
    """The bus still holds ``before`` and the writer appends right after it."""
    assert read_all(bus) == before
    offset = writer.append("users", b"still fine")
    assert offset == before[-1].next_offset
    assert read_all(bus)[-1].payload == b"still fine"
    before.append(read_all(bus)[-1])


# -- appending ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("category", "message"), BAD_CATEGORIES)
def test_bad_category_is_refused_and_the_bus_is_unharmed(
    small_bus: Path, category: object, message: str
) -> None:
    before = read_all(small_bus)
    with LogWriter(small_bus) as writer:
        with pytest.raises(InvalidRecordError, match=message):
            writer.append(category, b"payload")  # type: ignore[arg-type]
        assert_unchanged_and_writable(small_bus, before, writer)


@pytest.mark.parametrize("payload", ["text", None, 12, ["b"], bytearray(b"ok")])
def test_payload_must_be_bytes(small_bus: Path, payload: object) -> None:
    before = read_all(small_bus)
    with LogWriter(small_bus) as writer:
        if isinstance(payload, bytearray):
            writer.append("users", payload)  # bytes-like is accepted
            before = read_all(small_bus)
        else:
            with pytest.raises(InvalidRecordError, match="payload must be bytes"):
                writer.append("users", payload)  # type: ignore[arg-type]
        assert_unchanged_and_writable(small_bus, before, writer)


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), "now", True])
def test_timestamp_must_be_a_finite_number(small_bus: Path, timestamp: object) -> None:
    before = read_all(small_bus)
    with LogWriter(small_bus) as writer:
        with pytest.raises(InvalidRecordError, match="timestamp"):
            writer.append("users", b"p", timestamp)  # type: ignore[arg-type]
        assert_unchanged_and_writable(small_bus, before, writer)


def test_records_beyond_max_record_bytes_are_refused_with_the_limit_named(small_bus: Path) -> None:
    before = read_all(small_bus)
    with LogWriter(small_bus, max_record_bytes=4096) as writer:
        contents = {p.name: p.read_bytes() for p in segment_paths(small_bus)}  # as opening left them
        with pytest.raises(InvalidRecordError, match=r"payload of 5000 bytes exceeds max_record_bytes=4096"):
            writer.append("users", b"x" * 5000)
        with pytest.raises(InvalidRecordError, match=r"record of \d+ bytes exceeds max_record_bytes=4096"):
            writer.append("users", b"x" * 4090)  # the payload fits, the framed record does not
        assert {p.name: p.read_bytes() for p in segment_paths(small_bus)} == contents, "bytes were written"
        assert_unchanged_and_writable(small_bus, before, writer)
        writer.append("users", b"x" * 4000)  # just under the limit still works
        before = read_all(small_bus)
    with LogWriter(small_bus) as writer:  # the documented default: 16 MiB
        with pytest.raises(InvalidRecordError, match="max_record_bytes=16777216"):
            writer.append("users", bytes(16 * 2**20 + 1))
        assert_unchanged_and_writable(small_bus, before, writer)


def test_closed_writer_refuses_appends(small_bus: Path) -> None:
    writer = LogWriter(small_bus)
    with pytest.raises(BusClosedError, match="not open"):
        writer.append("users", b"p")
    writer.open().close()
    with pytest.raises(BusClosedError, match="not open"):
        writer.append("users", b"p")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("durability", "sometimes"),
        ("segment_bytes", 0),
        ("segment_bytes", "1MB"),
        ("index_interval_bytes", 1),
        ("max_record_bytes", -1),
        ("lock_timeout", -1),
    ],
)
def test_bad_writer_settings_fail_before_touching_the_disk(bus_dir: Path, option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        LogWriter(bus_dir, **{option: value}).open()  # type: ignore[arg-type]
    assert not bus_dir.exists()


# -- reading -----------------------------------------------------------------------------------------------


# Went wrong: LogReader's bad timeout/poll_interval raised a bare ValueError, not ConfigError.
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", -1),
        ("timeout", "5"),
        ("timeout", float("nan")),
        ("timeout", True),
        ("poll_interval", 0),
        ("poll_interval", -0.5),
        ("poll_interval", "0.01"),
        ("poll_interval", float("nan")),
        ("poll_interval", float("inf")),
        ("poll_interval", None),
    ],
)
def test_bad_reader_settings_raise_config_error(small_bus: Path, option: str, value: object) -> None:
    """LogReader's bad timeout/poll_interval raise the typed ConfigError (still a ValueError),
    naming the setting and what to pass."""
    with pytest.raises(ConfigError, match=option) as raised:
        LogReader(small_bus, **{option: value})  # type: ignore[arg-type]
    assert raised.value.advice and "e.g." in raised.value.advice
    if option == "timeout":
        with LogReader(small_bus) as reader:
            with pytest.raises(ConfigError, match="timeout"):
                reader.set_timeout(value)  # type: ignore[arg-type]
            assert len(list(reader)) == len(read_all(small_bus))  # the refused value changed nothing


@pytest.mark.parametrize("offset", ["10", 1.0, None, True, b"\x00"])
def test_non_integer_offsets_are_refused(small_bus: Path, offset: object) -> None:
    with LogReader(small_bus) as reader:
        first = reader.read_next()
        with pytest.raises(InvalidOffsetError, match="must be an int") as failure:
            reader.seek(offset)  # type: ignore[arg-type]
        assert isinstance(failure.value, TypeError)
        assert reader.position == first.next_offset, "a refused seek moved the reader"
        assert reader.read_next().offset == first.next_offset


def test_offsets_outside_the_bus_are_refused_with_the_range(small_bus: Path) -> None:
    with LogWriter(small_bus) as writer:
        writer.apply_retention(max_bytes=1500)  # begin > 0
        begin, end = writer.begin_offset, writer.end_offset
    assert begin > 0
    with LogReader(small_bus) as reader:
        for offset in (-1, -(2**70), 0, begin - 1, end + 1, 2**64):
            with pytest.raises(OffsetOutOfRangeError) as failure:
                reader.seek(offset)
            assert isinstance(failure.value, IndexError)
            assert (failure.value.offset, failure.value.begin, failure.value.end) == (offset, begin, end)
            assert f"[{begin}, {end}]" in str(failure.value)
        assert reader.position == begin and reader.read_next().offset == begin
        reader.seek(end)  # the end itself is valid: waiting for the next record
        assert reader.read_next() is None


@pytest.mark.parametrize(("category", "message"), BAD_CATEGORIES)
def test_find_next_refuses_bad_categories(small_bus: Path, category: object, message: str) -> None:
    with LogReader(small_bus) as reader:
        with pytest.raises(InvalidRecordError, match=message):
            reader.find_next(category)  # type: ignore[arg-type]
        assert reader.position == 0


# Went wrong: find_next skipped records of a category whose CRC-32 index key collides with another's.
def test_find_next_finds_every_record_of_categories_whose_index_keys_collide(bus_dir: Path) -> None:
    """Two categories with the same CRC-32 key share index entries; find_next finds each one's records.

    The category index has one entry per key per block, so the second category's
    first record in a block is not indexed when the first one precedes it there;
    find_next must still find it (the format says keys can collide).
    """
    first, second = colliding_categories(1)
    with LogWriter(bus_dir, index_interval_bytes=256) as writer:
        for block in range(6):
            writer.append(first, b"a" * 10, float(block))
            writer.append(second, b"b" * 10, float(block))
            for _ in range(8):
                writer.append("other", b"z" * 10, float(block))
    records = read_all(bus_dir)
    with LogReader(bus_dir) as reader:
        for category in (first, second):
            reader.seek_to_beginning()
            found = []
            while (record := reader.find_next(category)) is not None:
                found.append(record.offset)
            assert found == [r.offset for r in records if r.category == category], category


# -- directories that are not (good) buses -----------------------------------------------------------------


def test_directory_of_foreign_files_is_not_a_bus(tmp_path: Path) -> None:
    """NotABusError naming the files, for a reader and a writer."""
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8 not a segment")
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(NotABusError, match="not a filelog-bus"):
        LogReader(foreign).open()
    with pytest.raises(NotABusError, match=r"holiday\.jpg, notes\.txt"):
        LogWriter(foreign).open()
    assert (foreign / "holiday.jpg").read_bytes() == b"\xff\xd8 not a segment"


# Went wrong: a writer refused on a foreign directory left watermark and writer.lock in it.
def test_refused_writer_leaves_a_foreign_directory_untouched(tmp_path: Path) -> None:
    """The refused writer creates nothing (it left watermark and writer.lock before 8a54937).

    Otherwise a reader then takes the directory for an empty bus instead of refusing it.
    """
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    before = dir_snapshot(foreign)
    with pytest.raises(NotABusError):
        LogWriter(foreign).open()
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"], "the refused writer created files"
    assert dir_snapshot(foreign) == before
    with pytest.raises(NotABusError):
        LogReader(foreign).open()


def test_paths_that_cannot_be_a_bus(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for path, message in ((a_file, "not a directory"), (tmp_path / "no" / "bus", "does not exist")):
        with pytest.raises(NotABusError, match=message):
            LogWriter(path).open()
        with pytest.raises(NotABusError):
            LogReader(path).open()
    assert a_file.read_text() == "x" and not (tmp_path / "no").exists()


def with_header(data: bytes, *, magic: bytes | None = None, version: int | None = None) -> bytes:
    """``data`` whose 32-byte file header has another magic or version (CRC kept valid)."""
    found_magic, found_version, parameter, base, _crc = FILE_HEADER.unpack_from(data)
    prefix = FILE_HEADER.pack(magic or found_magic, version or found_version, parameter, base, 0)[:24]
    return prefix + zlib.crc32(prefix).to_bytes(4, "little") + data[28:]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"magic": b"NOTABUS!"}, "wrong magic number"),
        ({"version": FORMAT_VERSION + 1}, f"format version {FORMAT_VERSION + 1} is not supported"),
    ],
)
@pytest.mark.parametrize("which", ["newest", "closed"])
def test_segment_of_unknown_format_is_refused_and_nothing_is_changed(
    small_bus: Path, change: dict[str, object], message: str, which: str
) -> None:
    """UnsupportedFormatError naming the file (position 0) from the reader, and from a writer on the newest segment."""
    before = read_all(small_bus)
    segments = segment_paths(small_bus)
    target = segments[-1] if which == "newest" else segments[1]
    original = target.read_bytes()
    target.write_bytes(with_header(original, **change))  # type: ignore[arg-type]
    contents = file_contents(small_bus, skip=[LOCK_NAME, WATERMARK_NAME])

    with pytest.raises(UnsupportedFormatError, match=message) as failure:
        read_all(small_bus)
    assert (failure.value.path, failure.value.file_position) == (str(target), 0)
    if which == "newest":
        with pytest.raises(UnsupportedFormatError, match=message) as failure:
            LogWriter(small_bus).open()
        assert failure.value.path == str(target)
    assert file_contents(small_bus, skip=[LOCK_NAME, WATERMARK_NAME]) == contents, (
        "a refused open changed the bus"
    )

    target.write_bytes(original)
    assert read_all(small_bus) == before
    with LogWriter(small_bus) as writer:
        assert_unchanged_and_writable(small_bus, before, writer)


def test_segment_whose_name_and_header_disagree_is_reported(small_bus: Path) -> None:
    segments = segment_paths(small_bus)
    target = segments[1]
    base = int(target.name.split(".")[0])
    data = target.read_bytes()
    target.write_bytes(encode_file_header(SEGMENT_MAGIC, base + 1) + data[FILE_HEADER_SIZE:])
    with pytest.raises(CorruptionError, match="file name says") as failure:
        read_all(small_bus)
    assert failure.value.path == str(target)


def test_watermark_of_unknown_format_is_reported(small_bus: Path) -> None:
    before = read_all(small_bus)
    watermark = small_bus / WATERMARK_NAME
    original = watermark.read_bytes()
    for change in ({"magic": b"NOTAWMK!"}, {"version": 7}):
        watermark.write_bytes(with_header(original, **change))  # type: ignore[arg-type]
        with pytest.raises(CorruptionError) as failure:
            read_all(small_bus)
        assert failure.value.path == str(watermark)
        assert isinstance(failure.value, FilelogBusError)
    watermark.write_bytes(original)
    assert read_all(small_bus) == before
