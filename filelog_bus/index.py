"""The derived files of a segment: offset index, category index and category summary.

Each is a file of fixed-size entries after the 32-byte file header: one offset-index
entry for the first record starting in each index block (``index_interval_bytes`` of
the segment), one category-index entry for the first record of each category in each
block, and (closed segments only) one summary entry for the first record of each
category in the segment. Every entry ends with a chained CRC, so one CRC pass
validates a whole file.

Indexes are derived data: the segment that owns them (``segment.ActiveSegment``) writes
them, the segment classes rebuild them and ``check`` checks them, through this module;
readers (IndexView) only trust entries below the published watermark and scan otherwise. ``OFFSET_INDEX``, ``CATEGORY_INDEX``
and ``CATEGORY_SUMMARY`` describe the three kinds, each with its own check.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from filelog_bus import fs
from filelog_bus.errors import DamageKind
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
from filelog_bus.problem import Problem
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
            data = fs.read_file(path)
        except OSError as exc:
            if not fs.failed_call(exc):
                raise
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
    """Appends entries to one index file, keeping the chained CRC; writes at explicit positions.

    Entries are kept in memory until ``flush`` (the segment flushes every ``INDEX_LAG_BLOCKS``
    index blocks of records, and before any sync), so that most appends write one file, not
    three. An index may lag its segment (readers scan past its last block), never run ahead.
    """

    def __init__(self, path: str, magic: bytes, entry: struct.Struct, base: int, interval: int) -> None:
        self.path = path
        self.magic = magic
        self.entry = entry
        self.base = base
        self.interval = interval
        self.fd = fs.open_or_explain(path, os.O_RDWR | os.O_CREAT)
        self.count = 0
        self.running_crc = 0
        self._pending: list[tuple[int | float, ...]] = []

    def reset(self) -> None:
        """Start the file afresh: header only."""
        self._pending.clear()
        fs.ftruncate(self.fd, 0)
        fs.pwrite_all(self.fd, encode_file_header(self.magic, self.base, self.interval), 0)
        self.count = 0
        self.running_crc = 0

    def keep_below(self, view: IndexView | None, offset: int) -> None:
        """Keep the trusted entries of ``view`` whose offset is below ``offset``; drop the rest."""
        if view is None or view.interval != self.interval:
            self.reset()
            return
        self._pending.clear()
        count = view.bisect_offset(offset)
        size = FILE_HEADER_SIZE + count * self.entry.size
        fs.ftruncate(self.fd, size)
        self.count = count
        self.running_crc = running_crc_after(view.data[size - self.entry.size : size]) if count else 0

    def size(self) -> int:
        return FILE_HEADER_SIZE + self.count * self.entry.size

    def continue_at(self, size: int) -> bool:
        """Continue a file a clean close left at ``size`` bytes, reading only its header and tail."""
        self._pending.clear()
        if os.fstat(self.fd).st_size != size or not self._header_ok():
            return False
        if size < FILE_HEADER_SIZE or (size - FILE_HEADER_SIZE) % self.entry.size:
            return False
        self.count = (size - FILE_HEADER_SIZE) // self.entry.size
        last = os.pread(self.fd, self.entry.size, size - self.entry.size) if self.count else b""
        self.running_crc = running_crc_after(last) if self.count else 0
        return True

    def _header_ok(self) -> bool:
        try:
            base, interval = decode_file_header(self.magic, os.pread(self.fd, FILE_HEADER_SIZE, 0))
        except LayoutError:
            return False
        return base == self.base and interval == self.interval

    def last_entry(self) -> tuple[int, int | float] | None:
        """(offset, second field) of the last entry, or None when there is none."""
        self.flush()
        if not self.count:
            return None
        fields = self.entry.unpack(os.pread(self.fd, self.entry.size, self.size() - self.entry.size))
        return fields[0], fields[1]

    def tail_offsets(self, since: int) -> list[tuple[int, int]]:
        """(offset, u32 field) of the last entries whose offset is >= ``since``, oldest first."""
        self.flush()
        found: list[tuple[int, int]] = []
        i = self.count - 1
        while i >= 0:
            offset, value, _crc = self.entry.unpack(
                os.pread(self.fd, self.entry.size, FILE_HEADER_SIZE + i * self.entry.size)
            )
            if offset < since:
                break
            found.append((offset, value))
            i -= 1
        found.reverse()
        return found

    def sync(self) -> None:
        self.flush()
        fs.fsync(self.fd)

    def append(self, *fields: int | float) -> None:
        """Add an entry; it is encoded and written at the next ``flush``."""
        self._pending.append(fields)
        self.count += 1

    def flush(self) -> None:
        """Write the entries appended since the last flush."""
        if not self._pending:
            return
        parts = []
        running_crc = self.running_crc
        for fields in self._pending:
            data, running_crc = encode_index_entry(self.entry, running_crc, *fields)
            parts.append(data)
        data = b"".join(parts)
        fs.pwrite_all(self.fd, data, self.size() - len(data))
        self.running_crc = running_crc
        self._pending.clear()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            fs.close(fd)

    def __del__(self) -> None:
        # Dropped open (an interrupt landed before its segment held it): close the file.
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            os.close(fd)


#: How many index blocks of records the active segment's index entries may wait in memory before
#: they are written (32 KiB with the default 4 KiB blocks): a reader's find_next in the active
#: segment, or a recovery, scans at most that much more.
INDEX_LAG_BLOCKS = 8


# -- the three kinds, and how each is checked ------------------------------------------------

INDEX_ADVICE = (
    "indexes are derived data: `filelog-bus verify --repair` rebuilds it (until then readers scan the "
    "segment instead)"
)


@dataclass(frozen=True, eq=False)
class IndexKind:
    """One kind of derived file: its name, layout, and the entries a rebuild gives it.

    The three kinds below are the only instances, compared and hashed by identity (readers key
    their caches by them).
    """

    label: str
    magic: bytes
    entry: struct.Struct
    file_name: Callable[[int], str]
    per_category: bool
    #: The entries of this file in a rebuild of its segment.
    rebuilt_entries: Callable[[IndexRebuild], list[tuple[int, float]] | list[tuple[int, int]]]
    #: What a reader loads: the file as a view trusted below an end offset, None if unusable.
    load: Callable[[str, int, int], IndexView | None]
    #: Only closed segments have one.
    closed_only: bool = False

    def header_sound(self, directory: str, base: int) -> bool:
        """Cheap check: present, right header, whole entries (what opening a bus checks)."""
        found = self._header(directory, base)
        if found is None:
            return False
        (recorded_base, interval), size = found
        return recorded_base == base and interval > 0 and not (size - FILE_HEADER_SIZE) % self.entry.size

    def recorded_interval(self, directory: str, base: int) -> int | None:
        """The index block size the file's header records; None if the file is missing or its header
        unreadable."""
        found = self._header(directory, base)
        return None if found is None else found[0][1] or None

    def _header(self, directory: str, base: int) -> tuple[tuple[int, int], int] | None:
        """((base, interval) from the file's header, the file's size); None if missing or misshapen."""
        try:
            fd = fs.open(os.path.join(directory, self.file_name(base)), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            header = os.pread(fd, FILE_HEADER_SIZE, 0)
            size = os.fstat(fd).st_size
        finally:
            fs.close(fd)
        try:
            return decode_file_header(self.magic, header), size
        except LayoutError:
            return None

    def start_check(self, directory: str, base: int) -> IndexCheck:
        """Read the file and its header; the check is finished once its segment's records are fed."""
        name = self.file_name(base)
        try:
            data: bytes | None = fs.read_file(os.path.join(directory, name))
        except FileNotFoundError:
            data = None
        check = IndexCheck(self, name, data)
        if data is None:
            check.problem(None, None, f"the {self.label} file is missing; {INDEX_ADVICE}")
            return check
        try:
            recorded_base, interval = decode_file_header(self.magic, data)
        except LayoutError as exc:
            check.problem(0, None, f"bad {self.label} file header: {exc}; {INDEX_ADVICE}")
            return check
        if recorded_base != base:
            check.problem(
                0,
                None,
                f"the {self.label} header says base offset {recorded_base} but the file name says {base}; "
                f"{INDEX_ADVICE}",
            )
        elif interval <= 0:
            check.problem(0, None, f"the {self.label} header gives an index block size of 0; {INDEX_ADVICE}")
        else:
            check.rebuild = IndexRebuild(base, interval)
        return check


OFFSET_INDEX = IndexKind(
    "offset index",
    OFFSET_INDEX_MAGIC,
    OFFSET_ENTRY,
    offset_index_name,
    False,
    lambda r: r.offset_entries,
    load=load_offset_index,
)
CATEGORY_INDEX = IndexKind(
    "category index",
    CATEGORY_INDEX_MAGIC,
    CATEGORY_ENTRY,
    category_index_name,
    True,
    lambda r: r.category_entries,
    load=load_category_index,
)
#: With the completeness mark as its last entry.
CATEGORY_SUMMARY = IndexKind(
    "category summary",
    CATEGORY_SUMMARY_MAGIC,
    CATEGORY_ENTRY,
    category_summary_name,
    True,
    lambda r: [*r.summary_entries, (r.end, 0)],
    load=load_category_summary,
    closed_only=True,
)
INDEX_KINDS = (OFFSET_INDEX, CATEGORY_INDEX, CATEGORY_SUMMARY)


@dataclass
class IndexCheck:
    """One derived file as read, compared with a rebuild from its segment's records."""

    kind: IndexKind
    name: str
    data: bytes | None
    #: Fed the segment's records; None when the header gives nothing to rebuild with.
    rebuild: IndexRebuild | None = None
    problems: list[Problem] = field(default_factory=list)

    def problem(self, file_position: int | None, offset: int | None, message: str) -> None:
        self.problems.append(
            Problem(self.name, file_position, offset, DamageKind.INDEX, message, repairable=True)
        )

    def entries(self) -> list[tuple[int, int | float, int]]:
        assert self.data is not None
        size = self.kind.entry.size
        count = (len(self.data) - FILE_HEADER_SIZE) // size
        return [self.kind.entry.unpack_from(self.data, FILE_HEADER_SIZE + i * size) for i in range(count)]

    def lag(self) -> int:
        """How many entries a rebuild has beyond the file's (an active segment's index may lag)."""
        if self.rebuild is None or self.data is None:
            return 0
        return max(len(self.kind.rebuilt_entries(self.rebuild)) - len(self.entries()), 0)

    def finish(self, end: int, *, complete: bool, lenient: bool) -> None:
        """Check the chained CRC and that each entry is what a rebuild would write.

        ``end``: the rebuild covers the records below it. ``complete``: the segment is closed and
        undamaged, so the file must hold exactly the rebuilt entries. ``lenient`` (the active
        segment): entries past the rebuilt ones belong to an append in progress unless they index
        a record below ``end``, and missing trailing entries are not damage.
        """
        if self.data is None or self.rebuild is None:
            return
        kind, data, expected = self.kind, self.data, self.kind.rebuilt_entries(self.rebuild)
        size = kind.entry.size
        entries = self.entries()
        if lenient:
            checked = min(len(entries), len(expected))
            extra = [i for i in range(checked, len(entries)) if entries[i][0] < end]
        else:
            checked = len(entries)
            extra = list(range(len(expected), len(entries))) if complete else []
            trailing = (len(data) - FILE_HEADER_SIZE) % size
            if trailing:
                self.problem(
                    len(data) - trailing,
                    None,
                    f"the {kind.label} ends with {trailing} bytes of an incomplete entry; {INDEX_ADVICE}",
                )
        crc_ok = self._check_chained_crc(checked)
        compared = min(checked, len(expected))
        differing = [i for i in range(compared) if crc_ok[i] and entries[i][:2] != expected[i]]
        if differing:
            i = differing[0]
            more = f" (and {_entries_count(len(differing) - 1)} more differ)" if len(differing) > 1 else ""
            self.problem(
                FILE_HEADER_SIZE + i * size,
                entries[i][0],
                f"{kind.label} entry {i} is {self._show(entries[i][:2])} but a rebuild from the segment "
                f"gives {self._show(expected[i])}{more}: readers trust this entry and may skip or "
                f"misplace records; {INDEX_ADVICE}",
            )
        if extra:
            self.problem(
                FILE_HEADER_SIZE + extra[0] * size,
                entries[extra[0]][0],
                f"the {kind.label} has {_entries_count(len(extra))} more than a rebuild from the segment; "
                f"{INDEX_ADVICE}",
            )
        if complete and len(entries) < len(expected):
            self.problem(
                FILE_HEADER_SIZE + len(entries) * size,
                expected[len(entries)][0],
                f"the {kind.label} lacks its last {_entries_count(len(expected) - len(entries))} (a rebuild "
                f"from the segment has {len(expected)}): readers scan the blocks it lacks; {INDEX_ADVICE}",
            )

    def _check_chained_crc(self, count: int) -> list[bool]:
        """Check the chained CRC of the first ``count`` entries; report each entry whose CRC fails.

        After a failure the chain goes on from the stored CRC, so one damaged entry is reported once.
        """
        assert self.data is not None
        size = self.kind.entry.size
        ok = []
        running = 0
        for i in range(count):
            position = FILE_HEADER_SIZE + i * size
            key = self.data[position : position + size - 4]
            stored = int.from_bytes(self.data[position + size - 4 : position + size], "little")
            good = zlib.crc32(key, running) == stored
            ok.append(good)
            if not good:
                self.problem(
                    position,
                    None,
                    f"{self.kind.label} entry {i} fails its chained CRC: the file is damaged (readers "
                    f"ignore the whole index and scan the segment); {INDEX_ADVICE}",
                )
            running = zlib.crc32(stored.to_bytes(4, "little"), stored)
        return ok

    def _show(self, entry: tuple[int, int | float]) -> str:
        if self.kind.per_category:
            return f"(offset {entry[0]}, category key {entry[1]:#010x})"
        return f"(offset {entry[0]}, timestamp {entry[1]!r})"


def _entries_count(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"
