"""LogSegment: one segment of the bus and every file that belongs to it (Kafka's LogSegment).

A segment is ``<base>.log`` (records whose offsets start at ``base``: the record at
file position ``FILE_HEADER_SIZE + k`` has offset ``base + k``) and its derived files:
the offset index, the category index and, once the segment is closed, the category
summary. This class is the only code that writes any of them, so appending,
truncating, sealing, recovering, checking and rebuilding keep them in step in one
place. Only the newest segment (the *active* one) is ever appended to.

Writing is fail-stop: a method that fails part-way raises, and the writer that owns
the segment stops using it; opening the bus again runs ``recover``.

Segments of format version 2 are *preallocated*: created at their full size, written with
zeros (up to ``PREALLOCATION_STEP``; larger segments grow by that much ahead of their
appends), so that appends overwrite written space and a durable append is one data-only
fdatasync. The zeros are usually written ahead, in the standby file a roll takes
(filelog_bus/standby.py). The active segment's file therefore extends past its data with
zeros (no record starts with a zero byte); sealing cuts it to its data, so closed segments
end exactly where the next begins, as in version 1.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from filelog_bus import fs, standby
from filelog_bus.errors import (
    DAMAGED_HEADER,
    DAMAGED_RECORD,
    DAMAGED_WATERMARK,
    CorruptionError,
    UnsupportedFormatError,
)
from filelog_bus.index import (
    CATEGORY_INDEX,
    CATEGORY_SUMMARY,
    INDEX_KINDS,
    INDEX_LAG_BLOCKS,
    OFFSET_INDEX,
    IndexBlocks,
    IndexCheck,
    IndexRebuild,
    IndexView,
    IndexWriter,
    encode_category_summary,
    load_category_index,
    load_offset_index,
    summarize_categories,
)
from filelog_bus.layout import (
    FILE_HEADER_SIZE,
    FORMAT_VERSION,
    SEGMENT_MAGIC,
    TEMPORARY_SUFFIX,
    CleanClose,
    LayoutError,
    decode_file_header,
    encode_file_header,
    file_header_version,
    parse_segment_name,
    segment_name,
)
from filelog_bus.problem import Problem
from filelog_bus.record import HEADER_SIZE, Record, category_key
from filelog_bus.scan import (
    READ_CHUNK,
    CollectDamage,
    Damage,
    RaiseOnDamage,
    RecordScanner,
    StopAtDamage,
)

_RECORD_ADVICE = "restore the segment from a backup: readers stop with an error at this offset"

#: ``progress(bytes_done)`` of one segment's check, called as records are read.
Progress = Callable[[int], None]


class LogSegment:
    """A segment. Reading is positional (pread), so one fd serves any number of cursors.

    Opened read-only (``open``) it reads records and checks or rebuilds its derived files;
    opened for appending (``create``, ``open_active``) it also owns writers for its indexes.
    """

    def __init__(self, directory: str, base: int, fd: int) -> None:
        self.directory = directory
        self.base = base
        self.path = os.path.join(directory, segment_name(base))
        self.fd = fd
        self.scanner = RecordScanner(self)
        #: The format version of its header (known once checked); version 2 may be preallocated.
        self.version = 1
        # Only for the active segment: the index writers and which records they index.
        self._offsets: IndexWriter | None = None
        self._categories: IndexWriter | None = None
        self._blocks: IndexBlocks | None = None
        #: Only for the active segment: how many bytes of records it takes before a roll (segment_capacity).
        self.capacity = 0
        self._allocated_end = base
        self._index_flush_at = base
        #: Deferred records not written yet (``append(deferred=True)``), the first at ``_deferred_at``.
        self._deferred: list[bytes] = []
        self._deferred_at = base

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, base: int, *, check_header: bool = True) -> LogSegment:
        """Open an existing segment to read it. FileNotFoundError if it is gone."""
        fd = fs.open_or_explain(os.path.join(directory, segment_name(base)), os.O_RDONLY)
        segment = cls(directory, base, fd)
        if check_header:
            try:
                segment.check_header()
            except BaseException:
                segment.close()
                raise
        return segment

    @classmethod
    def create(cls, directory: str, base: int, interval: int, segment_bytes: int) -> LogSegment:
        """Create the new active segment, durably, zero-filled to its size, with empty indexes.

        Its file is the standby when one is ready (filelog_bus/standby.py), else zero-filled
        here (a bus's first segment is small: ``segment_capacity``). The header is written and
        fsync'd under a temporary name first, so nobody ever lists a segment without its header;
        linking refuses to replace an existing segment.
        """
        path = os.path.join(directory, segment_name(base))
        temporary = path + TEMPORARY_SUFFIX
        capacity = segment_capacity(base, segment_bytes)
        size = preallocated_size(capacity)
        from_standby = standby.take(directory, size, temporary)
        fd = fs.open_or_explain(temporary, os.O_RDWR | (0 if from_standby else os.O_CREAT | os.O_TRUNC))
        try:
            fs.pwrite_all(fd, encode_file_header(SEGMENT_MAGIC, base, version=FORMAT_VERSION), 0)
            if not from_standby:
                standby.fill_zeros(fd, FILE_HEADER_SIZE, size)
            fs.fsync(fd)
            fs.link(temporary, path)
            fs.unlink(temporary)
            fs.fsync_directory(directory)
        except BaseException:
            fs.close(fd)
            raise
        segment = cls(directory, base, fd)
        segment.version = FORMAT_VERSION
        try:
            segment._open_indexes(interval, capacity)
            segment._reset_indexes()
        except BaseException:
            segment.close()
            raise
        return segment

    @classmethod
    def open_active(cls, directory: str, base: int, interval: int, segment_bytes: int) -> LogSegment:
        """Open the newest segment for appending, finishing a creation a crash cut short.

        The caller then either continues after a clean close or runs ``recover``.
        """
        fd = fs.open_or_explain(os.path.join(directory, segment_name(base)), os.O_RDWR)
        segment = cls(directory, base, fd)
        try:
            if cls.header_incomplete(os.pread(fd, FILE_HEADER_SIZE, 0), base):
                fs.pwrite_all(fd, encode_file_header(SEGMENT_MAGIC, base), 0)
                fs.fsync(fd)
            segment.check_header()
            segment._open_indexes(interval, segment_capacity(base, segment_bytes))
        except BaseException:
            segment.close()
            raise
        return segment

    def _open_indexes(self, interval: int, capacity: int) -> None:
        """Become the active segment: open the index writers; know how far the file is allocated."""
        self.capacity = capacity
        self._allocated_end = self.file_end()
        self._offsets = IndexWriter(
            os.path.join(self.directory, OFFSET_INDEX.file_name(self.base)),
            OFFSET_INDEX.magic,
            OFFSET_INDEX.entry,
            self.base,
            interval,
        )
        self._categories = IndexWriter(
            os.path.join(self.directory, CATEGORY_INDEX.file_name(self.base)),
            CATEGORY_INDEX.magic,
            CATEGORY_INDEX.entry,
            self.base,
            interval,
        )
        self._blocks = IndexBlocks(self.base, interval)

    @staticmethod
    def gap_after(directory: str, base: int, next_base: int) -> tuple[int, int] | None:
        """For a closed segment: (where its data ends, its file size) when that is not where the next
        segment begins (the file was truncated or extended), else None. FileNotFoundError if gone."""
        size = os.stat(os.path.join(directory, segment_name(base))).st_size
        end = base + size - FILE_HEADER_SIZE
        return None if end == next_base else (end, size)

    @staticmethod
    def header_incomplete(header: bytes, base: int) -> bool:
        """Whether a segment file's first bytes are only the start of its (version 1) header: an older
        filelog-bus created segments in place and may have crashed doing so. (This one links a
        complete header into place.)"""
        return len(header) < FILE_HEADER_SIZE and encode_file_header(SEGMENT_MAGIC, base).startswith(header)

    def check_header(self) -> None:
        header = os.pread(self.fd, FILE_HEADER_SIZE, 0)
        try:
            recorded_base, _ = decode_file_header(SEGMENT_MAGIC, header)
        except LayoutError as exc:
            raise UnsupportedFormatError(
                f"not a readable filelog-bus segment: {exc}",
                path=self.path,
                file_position=0,
                damage=DAMAGED_HEADER,
                advice="if this file does not belong to the bus, move it out of the bus directory",
            ) from None
        self.version = file_header_version(header)
        if recorded_base != self.base:
            raise CorruptionError(
                f"segment header says base offset {recorded_base} but the file name says {self.base}",
                path=self.path,
                file_position=0,
                damage=DAMAGED_HEADER,
                advice="the file was renamed or damaged: restore it from a backup or move it aside",
            )

    # -- reading -----------------------------------------------------------------------

    def file_end(self) -> int:
        """Offset just past the last byte in the file: the data end, or past it when preallocated."""
        return self.base + max(os.fstat(self.fd).st_size - FILE_HEADER_SIZE, 0)

    def file_position(self, offset: int) -> int:
        return offset - self.base + FILE_HEADER_SIZE

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes starting at bus offset ``offset`` (fewer at end of file)."""
        return os.pread(self.fd, length, self.file_position(offset))

    def records(self, start: int, end: int) -> Iterator[Record]:
        """Every record in [start, end), which must be whole records; CorruptionError on damage."""
        return self.scanner.records(
            start, end, RaiseOnDamage(lambda _source, damage: self.corruption(damage))
        )

    def corruption(self, damage: Damage, advice: str = "") -> CorruptionError:
        """A CorruptionError for ``damage`` met in this segment."""
        return CorruptionError(
            f"damaged record at bus offset {damage.offset}: {damage.reason}",
            path=self.path,
            file_position=self.file_position(damage.offset),
            offset=damage.offset,
            damage=DAMAGED_RECORD,
            advice=advice or "restore this segment from a backup, or move it aside to drop its records",
        )

    # -- appending (active segment) ---------------------------------------------------

    def append(
        self,
        offset: int,
        data: bytes,
        timestamp: float,
        key: int,
        *,
        sync: bool = False,
        deferred: bool = False,
    ) -> None:
        """Write one record at ``offset`` (the end) and note its index entries; with ``sync``, make it
        (and every record before it) durable before returning, with one fdatasync.

        This is the hot path of a durable append: one method, one write, one sync. A ``deferred``
        record (one nobody may read before the next sync) waits in memory with the next ones and
        is written with them, at the latest by the next sync.
        """
        end = offset + len(data)
        if end > self._allocated_end and self.version >= 2:
            self._allocate_ahead(end)
        if deferred:
            if not self._deferred:
                self._deferred_at = offset
            self._deferred.append(data)
            if end - self._deferred_at >= DEFERRED_WRITE_BYTES:
                self._write_deferred()
        else:
            if self._deferred:  # (checked here: this is the hot path)
                self._write_deferred()
            fs.pwrite_all(self.fd, data, offset - self.base + FILE_HEADER_SIZE)
        self._index(offset, timestamp, key)
        if sync:
            fs.fdatasync(self.fd)

    def _write_deferred(self) -> None:
        """Write the deferred records waiting in memory, if any, in one write, then the index entries
        that waited with them."""
        if not self._deferred:
            return
        data = b"".join(self._deferred)
        fs.pwrite_all(self.fd, data, self.file_position(self._deferred_at))
        self._deferred.clear()
        self._flush_index(self._deferred_at + len(data))

    def _index(self, offset: int, timestamp: float, key: int) -> None:
        """Note the index entries a record at ``offset`` needs (IndexBlocks decides which); they are
        written every INDEX_LAG_BLOCKS blocks, or with the deferred records when some wait (an index
        never runs ahead of its records in the file)."""
        assert self._offsets is not None and self._categories is not None and self._blocks is not None
        new_block, new_key = self._blocks.admit(offset, key)
        if new_block:
            self._offsets.append(offset, timestamp)
            if offset >= self._index_flush_at and not self._deferred:
                self._flush_index(offset)
        if new_key:
            self._categories.append(offset, key)

    def _flush_index(self, written_to: int) -> None:
        """Write the index entries waiting in memory (their records are in the file below ``written_to``)."""
        assert self._offsets is not None and self._categories is not None and self._blocks is not None
        self._offsets.flush()
        self._categories.flush()
        self._index_flush_at = written_to + INDEX_LAG_BLOCKS * self._blocks.interval

    def _allocate_ahead(self, needed: int) -> None:
        """Preallocate the next step of the file (never past the segment's size, unless a record is)."""
        target = max(needed, min(self._allocated_end + PREALLOCATION_STEP, self.base + self.capacity))
        _preallocate(self.fd, target - self._allocated_end, self.file_position(self._allocated_end))
        self._allocated_end = target  # even when the file system refused: then writes extend the file

    def unwritten_at(self, offset: int) -> bool:
        """Whether no record was written at ``offset`` yet: the zeros of a preallocated tail."""
        return self.version >= 2 and self.read(offset, HEADER_SIZE) == bytes(HEADER_SIZE)

    def discard_from(self, offset: int) -> None:
        """Best effort, after a failed append: cut the log back to ``offset`` (never published).

        If this fails too, the next open's recovery decides: the record may survive, but only
        at the offset it was appended at.
        """
        self._deferred.clear()
        with contextlib.suppress(OSError):
            fs.ftruncate(self.fd, self.file_position(offset))

    def sync_data(self) -> None:
        """Make the appended records durable (the indexes can be rebuilt from them)."""
        self._write_deferred()
        fs.fdatasync(self.fd)

    def write_pending(self) -> None:
        """Write what waits in memory (deferred records, index entries) to the files; no sync."""
        assert self._offsets is not None and self._categories is not None
        self._write_deferred()
        self._offsets.flush()
        self._categories.flush()

    def sync(self) -> None:
        """Make the records and the indexes durable."""
        assert self._offsets is not None and self._categories is not None
        self.sync_data()
        self._offsets.sync()
        self._categories.sync()

    def clean_close_note(self, end: int) -> CleanClose:
        assert self._offsets is not None and self._categories is not None
        return CleanClose(self.base, end, self._offsets.size(), self._categories.size())

    def seal(self, end: int) -> None:
        """Close the segment for good at ``end`` (a roll): cut its preallocated tail, sync everything
        (the new size too), then write its summary."""
        self._write_deferred()
        if self.file_end() != end:
            fs.ftruncate(self.fd, self.file_position(end))
        self.sync()  # fdatasync flushes the new size too: later reads depend on it
        categories = load_category_index(self.directory, self.base, end)
        name = CATEGORY_SUMMARY.file_name(self.base)
        if categories is not None:
            entries = summarize_categories(categories)
            summary = encode_category_summary(self.base, categories.interval, entries, end)
        else:  # unreadable (damaged, or a failing read): rebuild it from the records themselves
            assert self._blocks is not None
            summary = self.rebuilt_files(end, self._blocks.interval)[name]
        self._write_derived({name: summary})

    def continue_after_clean_close(self, note: CleanClose) -> bool:
        """Pick up where a clean close left the files; False if they are not as it left them."""
        assert self._offsets is not None and self._categories is not None and self._blocks is not None
        if note.base != self.base or not self._ends_at(note.end):
            return False
        if not (
            self._offsets.continue_at(note.offset_index_size)
            and self._categories.continue_at(note.category_index_size)
        ):
            return False
        self._blocks = IndexBlocks(self.base, self._blocks.interval)
        last = self._offsets.last_entry()
        if last is not None:
            self._blocks.block = (last[0] - self.base) // self._blocks.interval
            block_start = self.base + self._blocks.block * self._blocks.interval
            self._blocks.seen = {key for _, key in self._categories.tail_offsets(block_start)}
        return True

    # -- recovery (active segment) ---------------------------------------------------

    def recover(self, durable_to: int, unsynced_writer: bool) -> int:
        """Make the segment end on a record boundary, with indexes to match; return the end.

        Every record after the last point known to be durable (``durable_to``) is checked,
        not only those after the last index entry. At the first damage (incomplete or bad
        bytes) at or after ``durable_to`` the tail is cut, unless the writer synced every
        append (not ``unsynced_writer``) and a valid record follows: that is damage to
        acknowledged records, not a torn write. Damage below ``durable_to`` raises
        CorruptionError. Ends with everything synced.
        """
        assert self._offsets is not None and self._categories is not None and self._blocks is not None
        interval = self._blocks.interval
        file_end = self.file_end()
        offsets = load_offset_index(self.directory, self.base, file_end)
        categories = load_category_index(self.directory, self.base, file_end)
        start = _resume_point(self.base, offsets, categories, interval, durable_to)
        end = self._index_from(start, file_end, offsets, categories)
        if end == start and self.base < start < file_end:
            end = self._index_from(self.base, file_end, None, None)  # the index pointed at garbage
        if end < file_end:
            if end < durable_to:
                raise self._damage_to_keep(end, file_end, "records known to be durable are damaged")
            if not unsynced_writer:
                # A writer that synced every append leaves no hole: valid records after the damage
                # (even past zeros: a lagging watermark can hide a page lost to a failing device)
                # mean damage to acknowledged records, not a torn write.
                search_from = self.scanner.resync_from(end, file_end)
                if (
                    search_from < file_end
                    and self.scanner.find_valid_record(search_from, file_end) is not None
                ):
                    raise self._damage_to_keep(end, file_end, "valid records follow the damage")
            if not self._only_zeros(end, file_end):
                # Cut whatever follows (a torn write, pages an unsynced writer left past a hole), so
                # that no stale bytes can ever line up behind a later append.
                self._cut(end)
        self._refill()
        self.sync()
        return end

    def _refill(self) -> None:
        """Zero-fill a version 2 segment back to its size after a cut (a recovery's, or a failed
        append's), so that appends there stay overwrites of written space."""
        size, full = os.fstat(self.fd).st_size, preallocated_size(self.capacity)
        if self.version >= 2 and size < full:
            standby.fill_zeros(self.fd, size, full)
            self._allocated_end = self.file_end()

    def _only_zeros(self, start: int, end: int) -> bool:
        """Whether [start, end) holds only zeros: the unwritten tail of a preallocated segment."""
        if self.version < 2:
            return start >= end
        for position in range(start, end, READ_CHUNK):
            chunk = self.read(position, min(READ_CHUNK, end - position))
            if chunk != bytes(len(chunk)):
                return False
        return True

    def _cut(self, end: int) -> None:
        """Cut everything from ``end``, durably (the next append allocates ahead again)."""
        fs.ftruncate(self.fd, self.file_position(end))
        fs.fsync(self.fd)
        self._allocated_end = end

    def _ends_at(self, end: int) -> bool:
        """Whether the data ends exactly at ``end``: the file ends there, or zeros follow."""
        file_end = self.file_end()
        return file_end == end or (file_end > end and self.unwritten_at(end))

    def _index_from(
        self, start: int, end: int, offsets: IndexView | None, categories: IndexView | None
    ) -> int:
        """Keep the index entries below ``start``, index the valid records from there; return where they stop."""
        assert self._offsets is not None and self._categories is not None and self._blocks is not None
        if start > self.base:
            self._offsets.keep_below(offsets, start)
            self._categories.keep_below(categories, start)
        else:
            self._reset_indexes()
        self._blocks = IndexBlocks(self.base, self._blocks.interval)
        stop = StopAtDamage()
        position = start
        for record in self.scanner.records(start, end, stop):
            self._add_to_indexes(record)
            position = record.next_offset
        return position if stop.found is None else stop.found.offset

    def _add_to_indexes(self, record: Record) -> None:
        self._index(record.offset, record.timestamp, category_key(record.category))

    def _reset_indexes(self) -> None:
        assert self._offsets is not None and self._categories is not None and self._blocks is not None
        self._offsets.reset()
        self._categories.reset()
        self._blocks = IndexBlocks(self.base, self._blocks.interval)

    def _damage_to_keep(self, offset: int, file_end: int, why: str) -> CorruptionError:
        return self.corruption(
            Damage(
                offset,
                f"invalid bytes that recovery must not cut ({file_end - offset} bytes to the end): {why}",
                False,
            ),
            "it is not a torn write: restore the segment from a backup",
        )

    # -- rebuilding derived files ---------------------------------------------------

    def rebuilt_files(self, end: int, interval: int) -> dict[str, bytes]:
        """The bytes a rebuild from the records below ``end`` gives each derived file, by name."""
        rebuild = IndexRebuild(self.base, interval)
        for record in self.records(self.base, end):
            rebuild.add(record)
        offsets, categories, summary = rebuild.files()
        names = [kind.file_name(self.base) for kind in INDEX_KINDS]
        return dict(zip(names, (offsets, categories, summary), strict=True))

    def reindex(self, end: int) -> None:
        """Index the active segment's records below ``end`` afresh (CorruptionError if damaged)."""
        self._reset_indexes()
        for record in self.records(self.base, end):
            self._add_to_indexes(record)
        self.sync()

    def repair_derived(self, end: int, *, closed: bool, default_interval: int) -> list[str]:
        """Rewrite the derived files that differ from a rebuild; return the names rewritten.

        A closed segment's files are replaced atomically; the active segment's indexes are
        reindexed in place (its writers hold them open).
        """
        if not closed:
            self.write_pending()  # compare files that hold everything appended, not lagging ones
        interval = OFFSET_INDEX.recorded_interval(self.directory, self.base) or default_interval
        expected = self.rebuilt_files(end, interval)
        if not closed:
            del expected[CATEGORY_SUMMARY.file_name(self.base)]
        differing = {name: data for name, data in expected.items() if self._read_derived(name) != data}
        if not differing:
            return []
        if closed:
            self._write_derived(differing)
        else:
            self.reindex(end)
        return sorted(differing)

    def _read_derived(self, name: str) -> bytes | None:
        try:
            return fs.read_file(os.path.join(self.directory, name))
        except FileNotFoundError:
            return None

    def _write_derived(self, files: dict[str, bytes]) -> None:
        """Replace derived files atomically (readers see the old or the new file), durably."""
        for name, data in files.items():
            fs.write_file_atomically(os.path.join(self.directory, name), data)
        fs.fsync_directory(self.directory)

    @staticmethod
    def derived_files_sound(directory: str, base: int) -> bool:
        """Cheap check of a closed segment's derived files: present, right header, whole entries."""
        return all(kind.header_sound(directory, base) for kind in INDEX_KINDS)

    # -- checking ---------------------------------------------------------------------

    def check(
        self,
        end: int | None,
        *,
        active: bool,
        progress: Progress | None = None,
        on_record: Callable[[Record], None] | None = None,
    ) -> SegmentCheck:
        """Check every record below ``end`` and each derived file against a rebuild. Never raises.

        ``on_record`` sees every valid record read, in order (verify looks at their stamps).

        ``end`` None: the watermark is unknown, so an incomplete tail of the active segment
        may be an append in progress and is not reported.
        """
        result = SegmentCheck()
        name = segment_name(self.base)
        try:
            self.check_header()
        except CorruptionError as exc:
            result.problems.append(Problem(name, exc.file_position, None, DAMAGED_HEADER, exc.reason))
        kinds = [kind for kind in INDEX_KINDS if not (active and kind.closed_only)]
        indexes = [kind.start_check(self.directory, self.base) for kind in kinds]
        file_end = self.file_end()
        scan_end = file_end if end is None else max(self.base, min(end, file_end))
        damage = CollectDamage()
        first_damage: int | None = None
        for record in self.scanner.records(self.base, scan_end, damage):
            if first_damage is None and damage.found:
                first_damage = damage.found[0].offset
            result.records += 1
            if on_record is not None:
                on_record(record)
            if first_damage is None:
                for index in indexes:
                    if index.rebuild is not None:
                        index.rebuild.add(record)
            if progress is not None and result.records % 1024 == 0:
                progress(record.offset - self.base)
        if first_damage is None and damage.found:
            first_damage = damage.found[0].offset
        for found in damage.found:
            if active and found.resume is None:
                if end is None:
                    break  # no watermark to trust: the tail may be an append in progress, or zeros
                if self.unwritten_at(found.offset):
                    result.problems.append(self._unrecovered_problem(found.offset))
                    break
            result.problems.append(self._damage_problem(found, scan_end))
        result.bytes = scan_end - self.base
        result.index_files = sum(index.data is not None for index in indexes)
        # A rebuild stops at damage: entries from there on cannot be judged, nor can a summary.
        judged_to = scan_end if first_damage is None else first_damage
        for index in indexes:
            if first_damage is None or index.kind is not CATEGORY_SUMMARY:
                index.finish(judged_to, complete=not active and first_damage is None, lenient=active)
            result.problems += index.problems
            if active:
                result.lagging.append(index)
        return result

    def _unrecovered_problem(self, offset: int) -> Problem:
        """Nothing was written at ``offset``, below the watermark: a crash state (pages an unsynced
        writer never got to the disk) that no writer has recovered yet. Readers wait there."""
        return Problem(
            segment_name(self.base),
            self.file_position(offset),
            offset,
            DAMAGED_WATERMARK,
            "nothing was written here, below the published watermark: the bus was not recovered after a "
            "crash (readers wait here); open it once with a writer, which cuts the lost tail",
        )

    def _damage_problem(self, damage: Damage, end: int) -> Problem:
        if damage.resume is None:
            extent = f"no valid record follows before offset {end}"
        else:
            extent = (
                f"{damage.resume - damage.offset} bytes are unreadable, up to the next valid record at "
                f"offset {damage.resume}"
            )
        return Problem(
            segment_name(self.base),
            self.file_position(damage.offset),
            damage.offset,
            DAMAGED_RECORD,
            f"damaged record: {damage.reason}; {extent}; {_RECORD_ADVICE}",
        )

    @staticmethod
    def delete(directory: str, base: int) -> str:
        """Delete a closed segment durably: the log first (readers never find a log without its
        base), then its derived files (an open after a crash deletes those left behind), then
        fsync the directory. Returns the log's name."""
        for name in (segment_name(base), *(kind.file_name(base) for kind in INDEX_KINDS)):
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(os.path.join(directory, name))
        fs.fsync_directory(directory)
        return segment_name(base)

    def close(self) -> None:
        """Close every file; safe to call twice, and after a failure."""
        offsets, categories, self._offsets, self._categories = self._offsets, self._categories, None, None
        try:
            fs.close_all(offsets, categories)
        finally:
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                fs.close(fd)


@dataclass
class SegmentCheck:
    """What ``LogSegment.check`` found."""

    records: int = 0
    bytes: int = 0
    index_files: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: The active segment's index checks, to report how far they lag (normal, not damage).
    lagging: list[IndexCheck] = field(default_factory=list)


#: Deferred records wait in memory until they fill this much (or the next sync), then go in one write.
DEFERRED_WRITE_BYTES = 256 * 1024

#: How much of a version 2 segment is allocated at a time: a segment of the default 64 MiB takes its
#: full size on disk (zero-filled) when it is created; larger ones grow by this much (posix_fallocate)
#: ahead of their appends.
PREALLOCATION_STEP = 64 * 2**20


#: The first segment of a bus (base offset 0) takes at most this much before it rolls: creating a bus
#: then zero-fills 1 MiB before open() returns, not a whole segment (what that saves:
#: benchmarks/RESULTS.md, "Creating a bus"); the full segments after it are prepared in the
#: background (the standby) while it fills.
FIRST_SEGMENT_BYTES = 2**20


def segment_capacity(base: int, segment_bytes: int) -> int:
    """How many bytes of records the segment at ``base`` takes before the writer rolls (a bigger
    record still goes alone into it): ``segment_bytes``, except for a bus's first segment."""
    return min(segment_bytes, FIRST_SEGMENT_BYTES) if base == 0 else segment_bytes


def preallocated_size(segment_bytes: int) -> int:
    """The size of a new segment's file (header included): zeros up to its size, or the first step."""
    return FILE_HEADER_SIZE + min(segment_bytes, PREALLOCATION_STEP)


def _preallocate(fd: int, length: int, position: int) -> None:
    """Allocate ``length`` bytes from ``position`` (zeros), if the file system can: preallocation only
    makes appends faster, so a full disk or a file system without it is not an error here."""
    if length <= 0:
        return
    try:
        fs.fallocate(fd, position, length)
    except OSError as exc:
        if exc.errno not in (*standby.NO_SPACE, errno.EOPNOTSUPP, errno.EINVAL):
            raise


def _resume_point(
    base: int, offsets: IndexView | None, categories: IndexView | None, interval: int, durable_to: int
) -> int:
    """Latest offset at or below ``durable_to`` below which both indexes are complete.

    It is the first record of an index block: indexing can resume there.
    """
    if offsets is None or categories is None or not offsets.count or not categories.count:
        return base
    if offsets.interval != interval or categories.interval != interval:
        return base  # index_interval_bytes changed: rebuild with the new one
    last_category = categories.offset_at(categories.count - 1)
    block_start = base + (last_category - base) // interval * interval
    first_of_block = categories.offset_at(categories.bisect_offset(block_start))
    resume = min(offsets.offset_at(offsets.count - 1), first_of_block)
    if resume > durable_to:
        below = offsets.bisect_offset(durable_to + 1)
        resume = offsets.offset_at(below - 1) if below else base
    return resume


def list_segment_bases(directory: str) -> list[int]:
    """Sorted base offsets of the segments in ``directory``."""
    bases = [base for name in os.listdir(directory) if (base := parse_segment_name(name)) is not None]
    bases.sort()
    return bases
