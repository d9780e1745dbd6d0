"""Record framing: pure encode/decode of one record, no I/O.

A record is a 16-byte header followed by a msgpack body::

    magic (2) | version (1) | flags (1) | body_length (4) | body_crc (4) | header_crc (4)

``body_crc`` is CRC-32 of the body and ``header_crc`` CRC-32 of the first 12
header bytes, so a damaged length is caught before the body is read. The body
is the msgpack array ``[category: str, timestamp: float, payload: bin]``;
readers ignore extra trailing elements. See docs/FORMAT.md.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple

import msgpack

from filelog_bus.errors import InvalidRecordError

RECORD_MAGIC = b"\xfbL"
RECORD_VERSION = 1
HEADER = struct.Struct("<2sBBIII")
HEADER_SIZE = HEADER.size  # 16
_HEADER_PREFIX = struct.Struct("<2sBBII")
MAX_CATEGORY_BYTES = 1024
#: Hard ceiling of a record's body; the writer's ``max_record_bytes`` is lower.
MAX_BODY_BYTES = 2**31 - 1


class RecordDecodeError(Exception):
    """Bytes are not a valid record; the caller adds file and offset."""


class Record(NamedTuple):
    """One record as read back from the bus."""

    offset: int
    timestamp: float
    category: str
    payload: bytes
    size: int

    @property
    def next_offset(self) -> int:
        """Offset just past this record: where the following record starts."""
        return self.offset + self.size


def validate_category(category: object) -> bytes:
    """Return the UTF-8 bytes of a valid category or raise InvalidRecordError."""
    if not isinstance(category, str):
        raise InvalidRecordError(f"category must be a str, got {type(category).__name__}")
    if not category:
        raise InvalidRecordError("category must not be empty")
    try:
        encoded = category.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRecordError(f"category {category!r} is not valid Unicode text: {exc}") from None
    if len(encoded) > MAX_CATEGORY_BYTES:
        raise InvalidRecordError(
            f"category is {len(encoded)} bytes in UTF-8; the maximum is {MAX_CATEGORY_BYTES}"
        )
    return encoded


def category_key(category: str) -> int:
    """32-bit key of a category used by the category index (collisions are checked)."""
    return zlib.crc32(category.encode("utf-8"))


def _check_timestamp(timestamp: object) -> float:
    if not isinstance(timestamp, bool) and isinstance(timestamp, (int, float)):
        try:
            value = float(timestamp)
        except OverflowError:
            value = math.inf
        if math.isfinite(value):
            return value
    raise InvalidRecordError(f"timestamp must be a finite float (UTC epoch seconds), got {timestamp!r}")


class CategoryEncoder:
    """Frames the records of one category: the category is checked, packed and hashed once.

    A writer appends to a handful of categories, each thousands of times: keeping one
    encoder per category leaves only the timestamp, the payload and the two CRCs to do
    per record. The body is the msgpack array ``[category, float64 timestamp, bin payload]``,
    built here byte for byte as ``msgpack.packb`` builds it (tests/engine/test_record_format.py checks).
    """

    __slots__ = ("_head", "category", "key")

    def __init__(self, category: str) -> None:
        encoded = validate_category(category)
        self.category = category
        #: The category-index key (``category_key``).
        self.key = zlib.crc32(encoded)
        self._head = b"\x93" + msgpack.packb(category)  # fixarray of 3, then the str

    def encode(self, timestamp: float, payload: bytes) -> bytes:
        """Frame one record. Raises InvalidRecordError for a bad timestamp or payload."""
        if type(timestamp) is not float or not math.isfinite(timestamp):
            timestamp = _check_timestamp(timestamp)
        if type(payload) is not bytes:
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise InvalidRecordError(f"payload must be bytes, got {type(payload).__name__}")
            payload = bytes(payload)
        size = len(payload)
        if size < 0x100:
            binary = _BIN8.pack(0xC4, size)
        elif size < 0x10000:
            binary = _BIN16.pack(0xC5, size)
        else:
            binary = _BIN32.pack(0xC6, size)
        before_payload = self._head + _FLOAT64.pack(0xCB, timestamp) + binary
        length = len(before_payload) + size
        if length > MAX_BODY_BYTES:
            raise InvalidRecordError(f"record body of {length} bytes exceeds the format limit")
        prefix = _HEADER_PREFIX.pack(
            RECORD_MAGIC, RECORD_VERSION, 0, length, zlib.crc32(payload, zlib.crc32(before_payload))
        )
        return b"".join((prefix, zlib.crc32(prefix).to_bytes(4, "little"), before_payload, payload))


_FLOAT64 = struct.Struct(">Bd")
_BIN8 = struct.Struct(">BB")
_BIN16 = struct.Struct(">BH")
_BIN32 = struct.Struct(">BI")


def encode_record(category: str, timestamp: float, payload: bytes) -> bytes:
    """Frame one record. Raises InvalidRecordError for bad input."""
    return CategoryEncoder(category).encode(timestamp, payload)


def decode_header(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Check the header at ``buf[pos:]`` and return (body_length, body_crc)."""
    if len(buf) - pos < HEADER_SIZE:
        raise RecordDecodeError("short record header")
    magic, version, _flags, length, body_crc, header_crc = HEADER.unpack_from(buf, pos)
    if magic != RECORD_MAGIC:
        raise RecordDecodeError(f"bad record magic {bytes(magic)!r}")
    if zlib.crc32(buf[pos : pos + 12]) != header_crc:
        raise RecordDecodeError("record header checksum mismatch")
    if version != RECORD_VERSION:
        raise RecordDecodeError(f"unsupported record version {version}")
    return length, body_crc


def decode_body(body: bytes | memoryview, body_crc: int) -> tuple[str, float, bytes]:
    """Check and decode a record body into (category, timestamp, payload)."""
    if zlib.crc32(body) != body_crc:
        raise RecordDecodeError("record body checksum mismatch")
    try:
        fields = msgpack.unpackb(body, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise RecordDecodeError(f"record body is not valid msgpack: {exc}") from None
    if (
        not isinstance(fields, tuple)
        or len(fields) < 3
        or not isinstance(fields[0], str)
        or not isinstance(fields[1], float)
        or not isinstance(fields[2], bytes)
    ):
        raise RecordDecodeError("record body does not hold [category, timestamp, payload]")
    return fields[0], fields[1], fields[2]


def decode_record(buf: bytes | memoryview, pos: int = 0, offset: int = 0) -> Record:
    """Decode the complete record at ``buf[pos:]``; ``offset`` is its bus offset."""
    length, body_crc = decode_header(buf, pos)
    start = pos + HEADER_SIZE
    if len(buf) - start < length:
        raise RecordDecodeError("short record body")
    category, timestamp, payload = decode_body(buf[start : start + length], body_crc)
    return Record(offset, timestamp, category, payload, HEADER_SIZE + length)


class DecodedBatch(NamedTuple):
    """Result of decode_records: what decoded cleanly, and why it stopped."""

    records: list[Record]
    consumed: int
    #: Set when the bytes at ``consumed`` are damaged (not merely incomplete).
    error: RecordDecodeError | None
    #: Size of the incomplete record at ``consumed`` when known from its header, else 0.
    wanted: int


def decode_records(buf: bytes | memoryview, offset: int) -> DecodedBatch:
    """Decode every complete record at the start of ``buf`` (whose first byte is at ``offset``).

    Stops at the first incomplete record (more bytes needed) or damaged one
    (``error`` set); the records before it are returned either way.
    """
    view = memoryview(buf)
    size = len(view)
    records: list[Record] = []
    append = records.append
    unpack_header = HEADER.unpack_from
    crc32 = zlib.crc32
    unpackb = msgpack.unpackb
    pos = 0
    while size - pos >= HEADER_SIZE:
        magic, version, _flags, length, body_crc, header_crc = unpack_header(view, pos)
        if magic != RECORD_MAGIC or crc32(view[pos : pos + 12]) != header_crc or version != RECORD_VERSION:
            try:
                decode_header(view, pos)
            except RecordDecodeError as exc:
                return DecodedBatch(records, pos, exc, 0)
        end = pos + HEADER_SIZE + length
        if end > size:
            return DecodedBatch(records, pos, None, HEADER_SIZE + length)
        body = view[pos + HEADER_SIZE : end]
        if crc32(body) != body_crc:
            return DecodedBatch(records, pos, RecordDecodeError("record body checksum mismatch"), 0)
        try:
            fields = unpackb(body, raw=False, use_list=False)
            category, timestamp, payload = fields[0], fields[1], fields[2]
        except Exception:
            try:
                decode_body(body, body_crc)
            except RecordDecodeError as exc:
                return DecodedBatch(records, pos, exc, 0)
            raise
        if type(category) is not str or type(timestamp) is not float or type(payload) is not bytes:
            return DecodedBatch(
                records, pos, RecordDecodeError("record body does not hold [category, timestamp, payload]"), 0
            )
        append(Record(offset + pos, timestamp, category, payload, end - pos))
        pos = end
    return DecodedBatch(records, pos, None, HEADER_SIZE if size - pos else 0)
