"""Pure format tests, without files: record framing (record.py) and byte layouts (layout.py).

Every test here works on bytes in memory; the same functions frame what the
writer puts on disk and what readers decode from it.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from decimal import Decimal

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filelog_bus.errors import InvalidRecordError
from filelog_bus.layout import (
    CATEGORY_ENTRY,
    CATEGORY_INDEX_MAGIC,
    CLEAN_CLOSE,
    FILE_HEADER_SIZE,
    FORMAT_VERSION,
    OFFSET_ENTRY,
    OFFSET_INDEX_MAGIC,
    SEGMENT_MAGIC,
    WATERMARK_MAGIC,
    WATERMARK_SLOT,
    CleanClose,
    LayoutError,
    category_index_name,
    decode_clean_close,
    decode_file_header,
    decode_watermark,
    encode_clean_close,
    encode_file_header,
    encode_index_entry,
    encode_watermark,
    entries_intact,
    offset_index_name,
    parse_segment_name,
    running_crc_after,
    segment_name,
)
from filelog_bus.record import (
    HEADER,
    HEADER_SIZE,
    MAX_CATEGORY_BYTES,
    RECORD_MAGIC,
    RECORD_VERSION,
    CategoryEncoder,
    Record,
    RecordDecodeError,
    category_key,
    decode_body,
    decode_header,
    decode_record,
    decode_records,
    encode_record,
    validate_category,
)

FEW_EXAMPLES = settings(max_examples=50, deadline=None)

#: Any category the format accepts: non-empty text (Hypothesis never generates lone surrogates).
categories = st.text(min_size=1, max_size=40)
#: Small categories, to keep exhaustive per-byte and per-bit loops short.
small_categories = st.text(min_size=1, max_size=6)
timestamps = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.sampled_from([0.0, -0.0, 1e-300, 1_700_000_000.123456, 2**63 + 0.0]),
)
payloads = st.binary(max_size=300)
record_fields = st.tuples(categories, timestamps, payloads)
small_record_fields = st.tuples(small_categories, timestamps, st.binary(max_size=24))


def frame(fields: list[tuple[str, float, bytes]]) -> tuple[bytes, list[int]]:
    """Concatenate encoded records; also return the position where each one starts."""
    starts, chunks, position = [], [], 0
    for category, timestamp, payload in fields:
        data = encode_record(category, timestamp, payload)
        starts.append(position)
        chunks.append(data)
        position += len(data)
    return b"".join(chunks), starts


def raw_record(body: bytes, *, version: int = RECORD_VERSION, magic: bytes = RECORD_MAGIC) -> bytes:
    """A record around an arbitrary body, with correct checksums (to craft well-framed bad bodies)."""
    prefix = struct.pack("<2sBBII", magic, version, 0, len(body), zlib.crc32(body))
    return prefix + zlib.crc32(prefix).to_bytes(4, "little") + body


def flip(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


# -- records: round trips ------------------------------------------------------------------------


@FEW_EXAMPLES
@given(record_fields, st.integers(min_value=0, max_value=2**62))
def test_encode_decode_round_trip(fields: tuple[str, float, bytes], offset: int) -> None:
    """decode_record(encode_record(x)) gives back x exactly, at the given offset, with the frame size."""
    category, timestamp, payload = fields
    data = encode_record(category, timestamp, payload)
    record = decode_record(data, 0, offset)
    assert record == Record(offset, float(timestamp), category, payload, len(data))
    assert type(record.timestamp) is float
    assert math.copysign(1.0, record.timestamp) == math.copysign(1.0, float(timestamp))
    assert record.next_offset == offset + len(data)
    assert data[:2] == RECORD_MAGIC and data[2] == RECORD_VERSION
    assert HEADER_SIZE + HEADER.unpack_from(data)[3] == len(data)


@FEW_EXAMPLES
@given(record_fields, st.sampled_from([0, 1, 255, 256, 65535, 65536, 70000]))
def test_encoder_builds_the_msgpack_body_byte_for_byte(fields: tuple[str, float, bytes], size: int) -> None:
    """The per-category encoder frames exactly what the format specifies: the body is
    msgpack.packb([category, float64 timestamp, bin payload]) (bin 8, 16 and 32 headers at their
    size limits), with its CRC and the header's; one encoder serves many records."""
    category, timestamp, payload = fields
    encoder = CategoryEncoder(category)
    for data in (payload, bytes(range(256)) * (size // 256) + bytes(size % 256)):
        framed = encoder.encode(timestamp, data)
        body = msgpack.packb([category, float(timestamp), data], use_bin_type=True)
        assert framed == raw_record(body)
        assert encoder.key == category_key(category)


@FEW_EXAMPLES
@given(record_fields, st.binary(max_size=20), st.binary(max_size=20))
def test_decode_record_at_a_position_inside_a_buffer(
    fields: tuple[str, float, bytes], before: bytes, after: bytes
) -> None:
    """A record decodes from the middle of a larger buffer; the bytes around it are not read."""
    data = encode_record(*fields)
    record = decode_record(before + data + after, len(before), 1000)
    assert (record.category, record.payload, record.size, record.offset) == (
        fields[0],
        fields[2],
        len(data),
        1000,
    )


@pytest.mark.parametrize("payload_type", [bytes, bytearray, memoryview])
def test_payload_may_be_any_bytes_like(payload_type: type) -> None:
    """bytes, bytearray and memoryview payloads are stored as the same bytes."""
    payload = payload_type(b"\x00\xffpayload")
    assert decode_record(encode_record("c", 1.0, payload)).payload == b"\x00\xffpayload"


def test_large_payload_round_trip() -> None:
    """A 1 MiB payload survives framing (msgpack bin32, 4-byte length)."""
    payload = bytes(range(256)) * 4096
    data = encode_record("big", 2.5, payload)
    assert decode_record(data).payload == payload


def test_unicode_categories_round_trip() -> None:
    """Categories that would be dangerous or odd as file names are plain data in records."""
    for category in ["../../etc/passwd", "a/b\\c", "\x00", "é☃🚀", "日本語", " ", "CON", "x" * 1024]:
        assert decode_record(encode_record(category, 0.0, b"")).category == category


def test_category_byte_limit_counts_utf8_bytes() -> None:
    """The 1024 limit is on UTF-8 bytes: 1024 bytes pass, 1025 bytes (or 342 three-byte chars) fail."""
    assert validate_category("é" * 512) == ("é" * 512).encode()
    encode_record("x" * MAX_CATEGORY_BYTES, 0.0, b"")
    with pytest.raises(InvalidRecordError):
        encode_record("x" * (MAX_CATEGORY_BYTES + 1), 0.0, b"")
    with pytest.raises(InvalidRecordError):
        encode_record("☃" * 342, 0.0, b"")


@FEW_EXAMPLES
@given(categories)
def test_category_key_is_crc32_of_utf8(category: str) -> None:
    """The category index key is the documented CRC-32 of the UTF-8 name."""
    assert category_key(category) == zlib.crc32(category.encode("utf-8"))


# -- records: invalid input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "category", [None, 1, b"bytes", ["c"], "", "\ud800", "a\udfffb", "x" * (MAX_CATEGORY_BYTES + 1)]
)
def test_invalid_category_raises(category: object) -> None:
    """Non-str, empty, lone-surrogate and over-long categories are InvalidRecordError (a ValueError)."""
    with pytest.raises(InvalidRecordError):
        encode_record(category, 1.0, b"p")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        validate_category(category)


@pytest.mark.parametrize("payload", [None, "text", 1, [1, 2], {b"a": b"b"}])
def test_invalid_payload_raises(payload: object) -> None:
    """A payload that is not bytes-like is InvalidRecordError, never silently converted."""
    with pytest.raises(InvalidRecordError):
        encode_record("c", 1.0, payload)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "timestamp",
    [None, "1.0", b"1", True, False, math.nan, math.inf, -math.inf, 1j, Decimal("1.5"), [1.0]],
)
def test_invalid_timestamp_raises(timestamp: object) -> None:
    """Non-numbers, bools and non-finite floats are InvalidRecordError."""
    with pytest.raises(InvalidRecordError):
        encode_record("c", timestamp, b"p")  # type: ignore[arg-type]


def test_timestamp_int_too_large_for_a_float_raises_invalid_record() -> None:
    """An int timestamp beyond the float range is bad input: InvalidRecordError, not OverflowError."""
    with pytest.raises(InvalidRecordError):
        encode_record("c", 10**400, b"p")


# -- decode_records: concatenations, truncations, flipped bits -------------------------------------------


@FEW_EXAMPLES
@given(st.lists(record_fields, max_size=6), st.integers(min_value=0, max_value=2**50))
def test_decode_records_of_a_concatenation(fields: list[tuple[str, float, bytes]], offset: int) -> None:
    """Concatenated records decode back in order, with offsets = first offset + byte position."""
    data, starts = frame(fields)
    batch = decode_records(data, offset)
    assert batch.error is None and batch.wanted == 0 and batch.consumed == len(data)
    assert [r.offset for r in batch.records] == [offset + s for s in starts]
    assert [(r.category, r.timestamp, r.payload) for r in batch.records] == [
        (c, float(t), p) for c, t, p in fields
    ]
    for record, following in itertools.pairwise(batch.records):
        assert record.next_offset == following.offset


@settings(max_examples=30, deadline=None)
@given(st.lists(small_record_fields, min_size=1, max_size=4), st.integers(min_value=0, max_value=2**40))
def test_truncation_at_every_byte_is_incomplete_never_an_error(
    fields: list[tuple[str, float, bytes]], offset: int
) -> None:
    """Cut anywhere, a concatenation yields the whole records before the cut, then 'need more bytes'."""
    data, starts = frame(fields)
    ends = [*starts[1:], len(data)]
    full = decode_records(data, offset).records
    for cut in range(len(data) + 1):
        batch = decode_records(data[:cut], offset)
        complete = sum(1 for end in ends if end <= cut)
        assert batch.error is None, cut
        assert batch.records == full[:complete]
        assert batch.consumed == (ends[complete - 1] if complete else 0)
        remaining = cut - batch.consumed
        if remaining == 0:
            assert batch.wanted == 0
        else:
            # More bytes are needed: at least the rest of the header, exactly the record once it is known.
            assert batch.wanted > remaining
            if remaining >= HEADER_SIZE:
                assert batch.wanted == ends[complete] - starts[complete]
        with pytest.raises(RecordDecodeError):
            decode_record(data[:cut], batch.consumed)


@settings(max_examples=30, deadline=None)
@given(st.lists(small_record_fields, min_size=1, max_size=3))
def test_single_flipped_bit_is_never_a_wrong_record(fields: list[tuple[str, float, bytes]]) -> None:
    """Flip any one bit: the records before the damaged one decode unchanged, the damaged one never does."""
    data, starts = frame(fields)
    full = decode_records(data, 0).records
    for bit in range(len(data) * 8):
        damaged_index = max(i for i, s in enumerate(starts) if s * 8 <= bit)
        batch = decode_records(flip(data, bit), 0)
        assert batch.records == full[:damaged_index], bit
        assert batch.consumed == starts[damaged_index]
        assert batch.error is not None or batch.consumed < len(data)
        with pytest.raises(RecordDecodeError):
            decode_record(flip(data, bit), starts[damaged_index])


@FEW_EXAMPLES
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**40))
def test_decode_records_never_raises_on_arbitrary_bytes(data: bytes, offset: int) -> None:
    """Garbage is reported in the batch (error or incomplete), never raised, never decoded as a record."""
    batch = decode_records(data, offset)
    assert batch.records == [] or data[:2] == RECORD_MAGIC
    assert 0 <= batch.consumed <= len(data)


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb(7),
        msgpack.packb({"category": "c"}),
        msgpack.packb(["c", 1.0]),
        msgpack.packb("abc"),
        msgpack.packb(b"abc"),
        msgpack.packb([1, 1.0, b"p"]),
        msgpack.packb(["c", 1, b"p"]),
        msgpack.packb(["c", "1.0", b"p"]),
        msgpack.packb(["c", 1.0, "text payload"]),
        msgpack.packb(["c", 1.0, b"p"], use_bin_type=False),
        msgpack.packb(["c", 1.0, b"p"], use_bin_type=True) + b"\x00",
        b"\xc1",
        b"",
    ],
)
def test_well_framed_bad_body_is_an_error(body: bytes) -> None:
    """A body with valid checksums but not [str, float, bin] is a decode error, never an exception."""
    data = raw_record(body) + encode_record("after", 1.0, b"")
    batch = decode_records(data, 0)
    assert batch.records == [] and batch.consumed == 0 and batch.error is not None
    with pytest.raises(RecordDecodeError):
        decode_record(data)
    with pytest.raises(RecordDecodeError):
        decode_body(body, zlib.crc32(body))


def test_extra_body_elements_are_ignored() -> None:
    """Forward compatibility: readers ignore trailing elements of the body array."""
    data = raw_record(msgpack.packb(["c", 2.0, b"p", "future", 3], use_bin_type=True))
    record = decode_records(data, 5).records[0]
    assert (record.offset, record.category, record.timestamp, record.payload) == (5, "c", 2.0, b"p")


def test_other_version_or_magic_is_an_error() -> None:
    """A header with valid checksums but another version or magic is refused, not guessed at."""
    body = msgpack.packb(["c", 1.0, b"p"], use_bin_type=True)
    for data in (raw_record(body, version=RECORD_VERSION + 1), raw_record(body, magic=b"XX")):
        batch = decode_records(data, 0)
        assert batch.records == [] and batch.error is not None
        with pytest.raises(RecordDecodeError):
            decode_header(data)


# -- layouts: file headers, index entries, watermark, names -----------------------------------------------


@FEW_EXAMPLES
@given(
    st.sampled_from([SEGMENT_MAGIC, OFFSET_INDEX_MAGIC, CATEGORY_INDEX_MAGIC, WATERMARK_MAGIC]),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_file_header_round_trip_and_damage(magic: bytes, base: int, parameter: int) -> None:
    """File headers round-trip; any flipped bit in the checked 28 bytes, a short or foreign header fails."""
    header = encode_file_header(magic, base, parameter)
    assert len(header) == FILE_HEADER_SIZE
    assert decode_file_header(magic, header) == (base, parameter)
    assert decode_file_header(magic, header + b"trailing") == (base, parameter)
    for bit in range(28 * 8):
        with pytest.raises(LayoutError):
            decode_file_header(magic, flip(header, bit))
    with pytest.raises(LayoutError):
        decode_file_header(magic, header[:-1])
    other = SEGMENT_MAGIC if magic != SEGMENT_MAGIC else WATERMARK_MAGIC
    with pytest.raises(LayoutError):
        decode_file_header(other, header)


def test_file_header_of_another_format_version_is_refused() -> None:
    """A well-checksummed header of a future format version is refused with a message naming it."""
    prefix = struct.pack("<8sIIQ", SEGMENT_MAGIC, FORMAT_VERSION + 1, 0, 0)
    header = prefix + zlib.crc32(prefix).to_bytes(4, "little") + bytes(4)
    with pytest.raises(LayoutError, match=str(FORMAT_VERSION + 1)):
        decode_file_header(SEGMENT_MAGIC, header)


offset_entries = st.lists(
    st.tuples(st.integers(0, 2**64 - 1), st.floats(allow_nan=False)), min_size=1, max_size=12
)
category_entries = st.lists(
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=12
)


def encode_entries(entry: struct.Struct, rows: list[tuple[int | float, ...]]) -> tuple[bytes, list[int]]:
    """Encode index entries with the chained CRC; return the bytes and the running CRC after each."""
    chunks, crcs, crc = [], [], 0
    for row in rows:
        data, crc = encode_index_entry(entry, crc, *row)
        chunks.append(data)
        crcs.append(crc)
    return b"".join(chunks), crcs


@FEW_EXAMPLES
@given(
    st.one_of(
        offset_entries.map(lambda r: (OFFSET_ENTRY, r)), category_entries.map(lambda r: (CATEGORY_ENTRY, r))
    )
)
def test_index_entries_round_trip_and_chain(
    case: tuple[struct.Struct, list[tuple[int | float, ...]]],
) -> None:
    """Index entries decode to their fields; every whole-entry prefix checks; the CRC chains."""
    entry, rows = case
    data, crcs = encode_entries(entry, rows)
    assert len(data) == entry.size * len(rows)
    for i, row in enumerate(rows):
        chunk = data[i * entry.size : (i + 1) * entry.size]
        *fields, crc = entry.unpack(chunk)
        assert fields == list(row)
        assert crc == zlib.crc32(data[: (i + 1) * entry.size - 4])
        assert running_crc_after(chunk) == crcs[i]
        assert entries_intact(data[: (i + 1) * entry.size])


@settings(max_examples=30, deadline=None)
@given(
    st.one_of(
        offset_entries.map(lambda r: (OFFSET_ENTRY, r)), category_entries.map(lambda r: (CATEGORY_ENTRY, r))
    )
)
def test_chained_crc_detects_any_flipped_bit(
    case: tuple[struct.Struct, list[tuple[int | float, ...]]],
) -> None:
    """One check of the last entry's CRC catches a flipped bit anywhere in the index entries."""
    entry, rows = case
    data, _ = encode_entries(entry, rows)
    for bit in range(len(data) * 8):
        assert not entries_intact(flip(data, bit)), bit


def test_entries_intact_edge_cases() -> None:
    """No entries is intact; fewer than 4 bytes cannot be; an unchained entry is not."""
    assert entries_intact(b"")
    for size in (1, 2, 3):
        assert not entries_intact(b"\x00" * size)
    assert not entries_intact(OFFSET_ENTRY.pack(1, 2.0, 0))


@FEW_EXAMPLES
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_watermark_slot_round_trip_and_damage(offset: int) -> None:
    """The watermark slot round-trips; a flipped bit in offset, flags or CRC, or a short slot, reads as None."""
    for durable in (False, True):
        for unsynced_writer in (False, True):
            slot = encode_watermark(offset, durable, unsynced_writer)
            assert len(slot) == WATERMARK_SLOT.size
            assert decode_watermark(slot) == (offset, durable, unsynced_writer)
    for bit in range(16 * 8):
        assert decode_watermark(flip(slot, bit)) is None
    for size in range(len(slot)):
        assert decode_watermark(slot[:size]) is None


@FEW_EXAMPLES
@given(st.tuples(*[st.integers(min_value=0, max_value=2**64 - 1)] * 4))
def test_clean_close_note_round_trip_and_damage(fields: tuple[int, int, int, int]) -> None:
    """The clean-close note round-trips; absent (zeros), short, or with any checked bit flipped it is None."""
    note = CleanClose(*fields)
    data = encode_clean_close(note)
    assert len(data) == CLEAN_CLOSE.size
    assert decode_clean_close(data) == note
    assert decode_clean_close(encode_clean_close(None)) is None
    assert decode_clean_close(data[:-1]) is None
    for bit in range(36 * 8):
        assert decode_clean_close(flip(data, bit)) is None


@FEW_EXAMPLES
@given(st.lists(st.integers(min_value=0, max_value=10**20 - 1), min_size=1, max_size=20))
def test_segment_names_sort_like_offsets_and_parse_back(bases: list[int]) -> None:
    """20-digit names sort in offset order and parse back; index names share the base."""
    names = [segment_name(b) for b in bases]
    assert all(len(n) == 24 and n.endswith(".log") for n in names)
    assert sorted(names) == [segment_name(b) for b in sorted(bases)]
    assert [parse_segment_name(n) for n in names] == bases
    for base in bases:
        assert offset_index_name(base) == segment_name(base)[:-4] + ".index"
        assert category_index_name(base) == segment_name(base)[:-4] + ".catindex"


@pytest.mark.parametrize(
    "name",
    [
        "00000000000000000000.index",
        "00000000000000000000.catindex",
        "watermark",
        "writer.lock",
        "1.log",
        "000000000000000000001.log",
        "0000000000000000000.log",
        "0000000000000000000a.log",
        "00000000000000000000.log.tmp",
        "00000000000000000000.LOG",
        " 0000000000000000000.log",
        "00000000000000000000.log\n",
        "\u0660" * 20 + ".log",  # Arabic-Indic digits: int() would parse them as 0
    ],
)
def test_parse_segment_name_rejects_other_names(name: str) -> None:
    """Only exact 20-digit '.log' names are segments; everything else in the directory is not."""
    assert parse_segment_name(name) is None
