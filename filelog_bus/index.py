"""Sparse indexes of a segment: OffsetIndex (offset + timestamp) and CategoryIndex.

Both are append-only files of fixed-size entries after a 24-byte header, one
offset-index entry for the first record starting in each index block
(``index_interval_bytes`` of the segment) and one category-index entry for the
first record of each category in each block. Every entry ends with a chained
CRC, so one CRC pass validates a whole file.

Indexes are derived data. The writer (SegmentIndexer) rebuilds them from the
segment when they are missing or damaged; readers (IndexView) only trust
entries below the published watermark and fall back to scanning otherwise.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import NamedTuple

from filelog_bus.fsutil import open_or_explain
from filelog_bus.layout import (
    CATEGORY_ENTRY,
    CATEGORY_INDEX_MAGIC,
    CATEGORY_SUMMARY_MAGIC,
    FILE_HEADER_SIZE,
    OFFSET_ENTRY,
    OFFSET_INDEX_MAGIC,
    LayoutError,
    category_index_name,
    category_summary_name,
    decode_file_header,
    encode_file_header,
    encode_index_entry,
    entries_intact,
    offset_index_name,
    running_crc_after,
)
from filelog_bus.record import Record, category_key

_OFFSET = struct.Struct("<Q")


class IndexView:
    """Read-only view of the trusted entries of one index file, kept as raw bytes.

    Lookups are binary searches and ``bytes.find`` over the raw entries, so a
    large index costs one read and one CRC pass, not one Python object per entry.
    """

    def __init__(self, data: bytes, entry: struct.Struct, count: int, interval: int) -> None:
        self.data = data
        self.entry = entry
        self.count = count
        #: The index block size the writer used (index_interval_bytes).
        self.interval = interval

    @classmethod
    def load(cls, path: str, magic: bytes, entry: struct.Struct, base: int, end: int) -> IndexView | None:
        """Entries for offsets below ``end`` if the file is intact; None if missing or damaged."""
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            return None
        try:
            recorded_base, interval = decode_file_header(magic, data)
        except LayoutError:
            return None
        if recorded_base != base or interval <= 0:
            return None
        view = cls(data, entry, (len(data) - FILE_HEADER_SIZE) // entry.size, interval)
        view.count = view.bisect_offset(end)
        if not entries_intact(
            memoryview(data)[FILE_HEADER_SIZE : FILE_HEADER_SIZE + view.count * entry.size]
        ):
            return None
        return view

    def offset_at(self, i: int) -> int:
        return _OFFSET.unpack_from(self.data, FILE_HEADER_SIZE + i * self.entry.size)[0]

    def entry_at(self, i: int) -> tuple[int | float, ...]:
        return self.entry.unpack_from(self.data, FILE_HEADER_SIZE + i * self.entry.size)

    def bisect_offset(self, offset: int) -> int:
        """Number of entries whose offset is below ``offset``."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.offset_at(mid) < offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find_key(self, key: int, start: int) -> int:
        """Index of the first entry at or after ``start`` whose u32 field 1 is ``key``, or -1."""
        needle = key.to_bytes(4, "little")
        size = self.entry.size
        limit = FILE_HEADER_SIZE + self.count * size
        pos = FILE_HEADER_SIZE + start * size + 8
        while True:
            pos = self.data.find(needle, pos, limit)
            if pos < 0:
                return -1
            if (pos - FILE_HEADER_SIZE) % size == 8:
                return (pos - FILE_HEADER_SIZE) // size
            pos += 1


def load_offset_index(directory: str, base: int, end: int) -> IndexView | None:
    return IndexView.load(
        os.path.join(directory, offset_index_name(base)), OFFSET_INDEX_MAGIC, OFFSET_ENTRY, base, end
    )


def load_category_summary(directory: str, base: int, end: int) -> IndexView | None:
    """The summary of the closed segment ``[base, end)``, if intact and complete (see encode_category_summary)."""
    path = os.path.join(directory, category_summary_name(base))
    view = IndexView.load(path, CATEGORY_SUMMARY_MAGIC, CATEGORY_ENTRY, base, end + 1)
    if (
        view is None
        or not view.count
        or FILE_HEADER_SIZE + view.count * CATEGORY_ENTRY.size != len(view.data)
    ):
        return None
    if view.entry_at(view.count - 1)[:2] != (end, 0):
        return None
    view.count -= 1
    return view


def load_category_index(directory: str, base: int, end: int) -> IndexView | None:
    return IndexView.load(
        os.path.join(directory, category_index_name(base)), CATEGORY_INDEX_MAGIC, CATEGORY_ENTRY, base, end
    )


class IndexBlocks:
    """Which records get index entries: pure, shared by the writer, rebuilds and `verify`.

    The first record starting in each block gets an offset-index entry; the first
    record of each category key in each block gets a category-index entry.
    """

    __slots__ = ("base", "block", "interval", "seen")

    def __init__(self, base: int, interval: int) -> None:
        self.base = base
        self.interval = interval
        self.block = -1
        self.seen: set[int] = set()

    def admit(self, offset: int, key: int) -> tuple[bool, bool]:
        """(needs an offset-index entry, needs a category-index entry) for this record."""
        block = (offset - self.base) // self.interval
        new_block = block != self.block
        if new_block:
            self.block = block
            self.seen = set()  # a new object, so a saved mark keeps the old one intact
        new_key = key not in self.seen
        if new_key:
            self.seen.add(key)
        return new_block, new_key


class IndexRebuild:
    """The entries a rebuild of a segment's indexes holds, fed its records in order. Pure."""

    def __init__(self, base: int, interval: int) -> None:
        self.base = base
        self.interval = interval
        self.blocks = IndexBlocks(base, interval)
        self.offset_entries: list[tuple[int, float]] = []
        self.category_entries: list[tuple[int, int]] = []
        self.summary_entries: list[tuple[int, int]] = []
        self._summarized: set[int] = set()
        self.end = base

    def add(self, record: Record) -> None:
        key = category_key(record.category)
        self.end = record.offset + record.size
        new_block, new_key = self.blocks.admit(record.offset, key)
        if new_block:
            self.offset_entries.append((record.offset, record.timestamp))
        if new_key:
            self.category_entries.append((record.offset, key))
            if key not in self._summarized:
                self._summarized.add(key)
                self.summary_entries.append((record.offset, key))

    def files(self) -> tuple[bytes, bytes, bytes]:
        """The complete bytes of the offset index, the category index and the category summary."""
        return (
            _encode_index_file(
                OFFSET_INDEX_MAGIC, OFFSET_ENTRY, self.base, self.interval, self.offset_entries
            ),
            _encode_index_file(
                CATEGORY_INDEX_MAGIC, CATEGORY_ENTRY, self.base, self.interval, self.category_entries
            ),
            encode_category_summary(self.base, self.interval, self.summary_entries, self.end),
        )


def encode_category_summary(base: int, interval: int, entries: list[tuple[int, int]], end: int) -> bytes:
    """A closed segment's category summary: the first record of each category key in it.

    A last entry (end of the segment, key 0) marks the summary complete: a summary
    missing entries would make readers skip records, where a short index only
    makes them scan.
    """
    return _encode_index_file(CATEGORY_SUMMARY_MAGIC, CATEGORY_ENTRY, base, interval, [*entries, (end, 0)])


def summarize_categories(categories: IndexView) -> list[tuple[int, int]]:
    """(offset, key) of the first category-index entry of each key: a segment's summary entries."""
    first: dict[int, int] = {}
    for i in range(categories.count):
        offset, key, _crc = categories.entry_at(i)
        first.setdefault(int(key), int(offset))
    return sorted((offset, key) for key, offset in first.items())


def _encode_index_file(
    magic: bytes,
    entry: struct.Struct,
    base: int,
    interval: int,
    entries: list[tuple[int, float]] | list[tuple[int, int]],
) -> bytes:
    parts = [encode_file_header(magic, base, interval)]
    running_crc = 0
    for fields in entries:
        data, running_crc = encode_index_entry(entry, running_crc, *fields)
        parts.append(data)
    return b"".join(parts)


class IndexWriter:
    """Appends entries to one index file, maintaining the chained CRC."""

    def __init__(self, path: str, magic: bytes, entry: struct.Struct, base: int, interval: int) -> None:
        self.path = path
        self.magic = magic
        self.entry = entry
        self.base = base
        self.interval = interval
        self.fd = open_or_explain(path, os.O_RDWR | os.O_CREAT)
        self.count = 0
        self.running_crc = 0

    def reset(self) -> None:
        """Start the file afresh: header only."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, encode_file_header(self.magic, self.base, self.interval), 0)
        os.lseek(self.fd, FILE_HEADER_SIZE, os.SEEK_SET)
        self.count = 0
        self.running_crc = 0

    def keep_below(self, view: IndexView | None, offset: int) -> None:
        """Keep the trusted entries of ``view`` whose offset is below ``offset``; drop the rest."""
        if view is None or view.interval != self.interval:
            self.reset()
            return
        self.count = view.bisect_offset(offset)
        size = FILE_HEADER_SIZE + self.count * self.entry.size
        os.ftruncate(self.fd, size)
        os.lseek(self.fd, size, os.SEEK_SET)
        self.running_crc = running_crc_after(view.data[size - self.entry.size : size]) if self.count else 0

    def size(self) -> int:
        return FILE_HEADER_SIZE + self.count * self.entry.size

    def continue_at(self, size: int) -> bool:
        """Continue a file a clean close left at ``size`` bytes, reading only its header and tail."""
        if os.fstat(self.fd).st_size != size or not self._header_ok():
            return False
        if size < FILE_HEADER_SIZE or (size - FILE_HEADER_SIZE) % self.entry.size:
            return False
        self.count = (size - FILE_HEADER_SIZE) // self.entry.size
        last = os.pread(self.fd, self.entry.size, size - self.entry.size) if self.count else b""
        self.running_crc = running_crc_after(last) if self.count else 0
        os.lseek(self.fd, size, os.SEEK_SET)
        return True

    def _header_ok(self) -> bool:
        try:
            base, interval = decode_file_header(self.magic, os.pread(self.fd, FILE_HEADER_SIZE, 0))
        except LayoutError:
            return False
        return base == self.base and interval == self.interval

    def tail_offsets(self, since: int) -> list[tuple[int, int]]:
        """(offset, u32 field) of the last entries whose offset is >= ``since``, oldest first."""
        found: list[tuple[int, int]] = []
        i = self.count - 1
        while i >= 0:
            offset, field, _crc = self.entry.unpack(
                os.pread(self.fd, self.entry.size, FILE_HEADER_SIZE + i * self.entry.size)
            )
            if offset < since:
                break
            found.append((offset, field))
            i -= 1
        found.reverse()
        return found

    def sync(self) -> None:
        os.fsync(self.fd)

    def append(self, *fields: int | float) -> None:
        data, self.running_crc = encode_index_entry(self.entry, self.running_crc, *fields)
        os.write(self.fd, data)
        self.count += 1

    def truncate_to_size(self, size: int, running_crc: int) -> None:
        """Roll back to an earlier (size, running CRC) after a failed append."""
        os.ftruncate(self.fd, size)
        os.lseek(self.fd, size, os.SEEK_SET)
        self.count = (size - FILE_HEADER_SIZE) // self.entry.size
        self.running_crc = running_crc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SegmentIndexer:
    """Keeps both indexes of the active segment in step with the records appended to it."""

    def __init__(self, directory: str, base: int, interval: int) -> None:
        self.base = base
        self.interval = interval
        self.offsets = IndexWriter(
            os.path.join(directory, offset_index_name(base)), OFFSET_INDEX_MAGIC, OFFSET_ENTRY, base, interval
        )
        try:
            self.categories = IndexWriter(
                os.path.join(directory, category_index_name(base)),
                CATEGORY_INDEX_MAGIC,
                CATEGORY_ENTRY,
                base,
                interval,
            )
        except BaseException:
            self.offsets.close()
            raise
        self.blocks = IndexBlocks(base, interval)

    def reset(self) -> None:
        self.offsets.reset()
        self.categories.reset()
        self.blocks = IndexBlocks(self.base, self.interval)

    def continue_after_clean_close(self, offsets_size: int, categories_size: int) -> bool:
        """Pick up where a clean close left both files; False if they are not as it left them."""
        if not (self.offsets.continue_at(offsets_size) and self.categories.continue_at(categories_size)):
            return False
        self.blocks = IndexBlocks(self.base, self.interval)
        if self.offsets.count:
            last_offset = _OFFSET.unpack(
                os.pread(self.offsets.fd, 8, FILE_HEADER_SIZE + (self.offsets.count - 1) * OFFSET_ENTRY.size)
            )[0]
            self.blocks.block = (last_offset - self.base) // self.interval
            block_start = self.base + self.blocks.block * self.interval
            self.blocks.seen = {key for _, key in self.categories.tail_offsets(block_start)}
        return True

    def sync(self) -> None:
        self.offsets.sync()
        self.categories.sync()

    def sizes(self) -> tuple[int, int]:
        return self.offsets.size(), self.categories.size()

    def resume(self, offsets: IndexView | None, categories: IndexView | None, start: int) -> None:
        """Keep the entries below ``start`` (the first record of an index block) and index from there."""
        self.offsets.keep_below(offsets, start)
        self.categories.keep_below(categories, start)
        self.blocks = IndexBlocks(self.base, self.interval)

    def add(self, offset: int, timestamp: float, key: int) -> None:
        new_block, new_key = self.blocks.admit(offset, key)
        if new_block:
            self.offsets.append(offset, timestamp)
        if new_key:
            self.categories.append(offset, key)

    def add_records(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record.offset, record.timestamp, category_key(record.category))

    def mark(self) -> IndexerMark:
        """State to roll back to if an append fails half-way (cheap: no copies)."""
        return IndexerMark(
            self.offsets.size(),
            self.offsets.running_crc,
            self.categories.size(),
            self.categories.running_crc,
            self.blocks.block,
            self.blocks.seen,
        )

    def rollback(self, mark: IndexerMark, key: int) -> None:
        """Undo the entries written since ``mark`` for a record of category ``key``."""
        added_to_same_block = (
            self.blocks.block == mark.block and self.categories.size() != mark.categories_size
        )
        self.offsets.truncate_to_size(mark.offsets_size, mark.offsets_crc)
        self.categories.truncate_to_size(mark.categories_size, mark.categories_crc)
        if added_to_same_block:
            mark.seen.discard(key)
        self.blocks.block = mark.block
        self.blocks.seen = mark.seen

    def close(self) -> None:
        self.offsets.close()
        self.categories.close()


class IndexerMark(NamedTuple):
    offsets_size: int
    offsets_crc: int
    categories_size: int
    categories_crc: int
    block: int
    seen: set[int]


def index_headers_sound(directory: str, base: int) -> bool:
    """Cheap check of a closed segment's indexes and summary: present, whole entries, right header."""
    for name, magic, entry in _INDEX_FILES:
        try:
            with open(os.path.join(directory, name(base)), "rb") as file:
                header = file.read(FILE_HEADER_SIZE)
                size = os.fstat(file.fileno()).st_size
            recorded_base, interval = decode_file_header(magic, header)
        except (FileNotFoundError, LayoutError):
            return False
        if recorded_base != base or interval <= 0 or (size - FILE_HEADER_SIZE) % entry.size:
            return False
    return True


_INDEX_FILES = (
    (offset_index_name, OFFSET_INDEX_MAGIC, OFFSET_ENTRY),
    (category_index_name, CATEGORY_INDEX_MAGIC, CATEGORY_ENTRY),
    (category_summary_name, CATEGORY_SUMMARY_MAGIC, CATEGORY_ENTRY),
)
