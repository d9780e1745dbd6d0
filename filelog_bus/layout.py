"""Pure byte layouts of the bus's files, other than records. No I/O.

* file names: ``<20-digit base offset>.log`` / ``.index`` / ``.catindex``,
  plus ``watermark`` and ``writer.lock``;
* the 32-byte header every file starts with;
* index entries, protected by a chained CRC;
* the watermark slot.

See docs/FORMAT.md for the specification.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from typing import NamedTuple

#: The format version this filelog-bus writes in segment headers, and the newest it reads. Version 2
#: segments may be preallocated: the active one's file extends past its data with zeros. Index,
#: summary and watermark files did not change and keep version 1 in their headers.
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
#: Version written in the headers of files whose layout version 2 did not change.
UNCHANGED_FILES_VERSION = 1
SEGMENT_MAGIC = b"FLBUSLOG"
OFFSET_INDEX_MAGIC = b"FLBUSIDX"
CATEGORY_INDEX_MAGIC = b"FLBUSCAT"
CATEGORY_SUMMARY_MAGIC = b"FLBUSSUM"
WATERMARK_MAGIC = b"FLBUSWMK"

SEGMENT_SUFFIX = ".log"
OFFSET_INDEX_SUFFIX = ".index"
CATEGORY_INDEX_SUFFIX = ".catindex"
CATEGORY_SUMMARY_SUFFIX = ".catsummary"
WATERMARK_NAME = "watermark"
LOCK_NAME = "writer.lock"
#: The next segment's file, zero-filled ahead of the roll (filelog_bus/standby.py); holds no record.
STANDBY_NAME = "standby.segment"
#: Suffix of the temporary files the engine writes before renaming or linking them into place.
TEMPORARY_SUFFIX = ".new"
_SEGMENT_NAME = re.compile(r"([0-9]{20})\.log")
_INDEX_NAME = re.compile(r"([0-9]{20})\.(?:index|catindex|catsummary)")

#: magic, format version, parameter (index block size; 0 elsewhere), base offset, CRC of the first 24
#: bytes, 4 zero bytes.
FILE_HEADER = struct.Struct("<8sIIQI4x")
FILE_HEADER_SIZE = FILE_HEADER.size  # 32
_HEADER_CRC_COVERS = 24

#: Offset index entry: offset (u64), timestamp (f64), chained CRC (u32).
OFFSET_ENTRY = struct.Struct("<QdI")
#: Category index (and category summary) entry: offset (u64), category key (u32), chained CRC (u32).
CATEGORY_ENTRY = struct.Struct("<QII")

#: Watermark slot after the file header: offset (u64), flags (u32), CRC of those 12 bytes (u32).
WATERMARK_SLOT = struct.Struct("<QII")
#: Watermark flag: every byte below the published offset had been fsync'd when it was published.
WATERMARK_DURABLE = 1
#: Watermark flag: the writer that published it appends without fsync (durability="never"), so
#: after a power cut any of its unsynced pages may be lost. Older readers ignore it.
WATERMARK_UNSYNCED_WRITER = 2
#: Clean-close note after the slot: active segment base, end offset, offset-index size and
#: category-index size (u64 each), CRC-32 of those 32 bytes (u32), zero (u32). All zero while a
#: writer has the bus open; written by a writer that closed cleanly.
CLEAN_CLOSE = struct.Struct("<QQQQI4x")
CLEAN_CLOSE_POSITION = FILE_HEADER_SIZE + WATERMARK_SLOT.size
WATERMARK_FILE_SIZE = CLEAN_CLOSE_POSITION + CLEAN_CLOSE.size


def holds_no_records(name: str) -> bool:
    """Whether a file of this name in a bus directory is the engine's but no part of a bus's data
    (the lock, the standby, a temporary file): a directory of only such files holds no bus."""
    return name in (LOCK_NAME, STANDBY_NAME) or name.endswith(TEMPORARY_SUFFIX)


class LayoutError(Exception):
    """Bytes do not match a layout; the caller adds the file name."""


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def offset_index_name(base: int) -> str:
    return f"{base:020d}{OFFSET_INDEX_SUFFIX}"


def category_index_name(base: int) -> str:
    return f"{base:020d}{CATEGORY_INDEX_SUFFIX}"


def category_summary_name(base: int) -> str:
    return f"{base:020d}{CATEGORY_SUMMARY_SUFFIX}"


def parse_index_name(name: str) -> int | None:
    """Base offset of an index file name (either kind), or None for any other name."""
    match = _INDEX_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def parse_segment_name(name: str) -> int | None:
    """Base offset of a segment file name, or None for any other name."""
    match = _SEGMENT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def segment_bases(names: Iterable[str]) -> list[int]:
    """Sorted base offsets of the segment files among a directory's ``names``."""
    return sorted(base for name in names if (base := parse_segment_name(name)) is not None)


def encode_file_header(
    magic: bytes, base: int, parameter: int = 0, version: int = UNCHANGED_FILES_VERSION
) -> bytes:
    prefix = FILE_HEADER.pack(magic, version, parameter, base, 0)[:_HEADER_CRC_COVERS]
    return FILE_HEADER.pack(magic, version, parameter, base, zlib.crc32(prefix))


def file_header_version(buf: bytes) -> int:
    """The format version a (checked) file header records."""
    return FILE_HEADER.unpack_from(buf)[1]


def decode_file_header(magic: bytes, buf: bytes) -> tuple[int, int]:
    """Check a file header and return the (base offset, parameter) it records."""
    if len(buf) < FILE_HEADER_SIZE:
        raise LayoutError(f"file header is {len(buf)} bytes, expected {FILE_HEADER_SIZE}")
    found_magic, version, parameter, base, crc = FILE_HEADER.unpack_from(buf)
    if found_magic != magic:
        raise LayoutError(f"wrong magic number {found_magic!r}, expected {magic!r}")
    if zlib.crc32(buf[:_HEADER_CRC_COVERS]) != crc:
        raise LayoutError("file header checksum mismatch")
    if buf[_HEADER_CRC_COVERS + 4 : FILE_HEADER_SIZE] != bytes(FILE_HEADER_SIZE - _HEADER_CRC_COVERS - 4):
        raise LayoutError("file header's reserved bytes are not zero")
    if version not in SUPPORTED_VERSIONS:
        raise LayoutError(
            f"format version {version} is not supported (this filelog-bus reads versions up to {FORMAT_VERSION})"
        )
    return base, parameter


def encode_index_entry(entry: struct.Struct, running_crc: int, *fields: int | float) -> tuple[bytes, int]:
    """Encode one index entry; return (bytes, running CRC after it).

    The last field of each entry is the CRC-32 of every entry byte before it in
    the file, so checking the last entry checks the whole file in one pass.
    """
    key = entry.pack(*fields, 0)[:-4]
    crc = zlib.crc32(key, running_crc)
    tail = crc.to_bytes(4, "little")
    return key + tail, zlib.crc32(tail, crc)


def running_crc_after(entry_bytes: bytes | memoryview) -> int:
    """Running CRC after an entry, derived from the entry alone."""
    crc = int.from_bytes(entry_bytes[-4:], "little")
    return zlib.crc32(entry_bytes[-4:], crc)


def entries_intact(entries: bytes | memoryview) -> bool:
    """True when the chained CRC of the last entry covers all the bytes before it."""
    if len(entries) < 4:
        return len(entries) == 0
    return zlib.crc32(entries[:-4]) == int.from_bytes(entries[-4:], "little")


class Watermark(NamedTuple):
    """A published watermark: readers may read below ``offset``."""

    offset: int
    #: Every byte below ``offset`` had been fsync'd when it was published.
    durable: bool
    #: The publishing writer does not sync each append (see WATERMARK_UNSYNCED_WRITER).
    unsynced_writer: bool = False


def encode_watermark(offset: int, durable: bool, unsynced_writer: bool = False) -> bytes:
    flags = (WATERMARK_DURABLE if durable else 0) | (WATERMARK_UNSYNCED_WRITER if unsynced_writer else 0)
    fields = WATERMARK_SLOT.pack(offset, flags, 0)[:12]
    return fields + zlib.crc32(fields).to_bytes(4, "little")


def decode_watermark(buf: bytes) -> Watermark | None:
    """The published watermark, or None if the slot is torn or damaged."""
    if len(buf) < WATERMARK_SLOT.size:
        return None
    offset, flags, crc = WATERMARK_SLOT.unpack_from(buf)
    if zlib.crc32(buf[:12]) != crc:
        return None
    return Watermark(offset, bool(flags & WATERMARK_DURABLE), bool(flags & WATERMARK_UNSYNCED_WRITER))


class CleanClose(NamedTuple):
    """What a writer left behind when it closed cleanly, so the next open can skip recovery."""

    base: int
    end: int
    offset_index_size: int
    category_index_size: int


def encode_clean_close(note: CleanClose | None) -> bytes:
    if note is None:
        return bytes(CLEAN_CLOSE.size)
    fields = CLEAN_CLOSE.pack(*note, 0)[:32]
    return CLEAN_CLOSE.pack(*note, zlib.crc32(fields))


def decode_clean_close(buf: bytes) -> CleanClose | None:
    """The note, or None when absent (zeros), torn or damaged."""
    if len(buf) < CLEAN_CLOSE.size:
        return None
    *fields, crc = CLEAN_CLOSE.unpack_from(buf)
    if crc == 0 or zlib.crc32(buf[:32]) != crc:
        return None
    return CleanClose(*fields)
