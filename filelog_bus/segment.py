"""Segments: one segment of the bus and every file that belongs to it (Kafka's LogSegment).

A segment is ``<base>.log`` (records whose offsets start at ``base``: the record at
file position ``FILE_HEADER_SIZE + k`` has offset ``base + k``) and its derived files:
the offset index, the category index and, once the segment is closed, the category
summary. The classes here are the only code that writes any of them, so appending,
truncating, sealing, recovering and rebuilding keep them in step in one place.

Two types, so that the state each operation needs exists by construction:

- ``ReadOnlySegment``: a segment opened to read (readers, ``check``, retention, the repair
  of a closed segment's derived files). It has no index writers and never writes its log.
- ``ActiveSegment``: the newest segment, opened by the one writer to append to. It owns
  the index writers, the deferred records and the preallocation state.

Both share ``Segment``: reading records by offset. Closed segments are also looked at and
deleted by name, without opening them (``gap_after_segment``, ``derived_files_sound``,
``delete_segment_files``: what recovery, retention and check use). The checks that report a
segment's damage as Problems live in filelog_bus/check.py.

Writing is fail-stop: a method that fails part-way raises, and the writer that owns
the segment stops using it; opening the bus again runs ``ActiveSegment.recover``.

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
from collections.abc import Iterator

from filelog_bus import fs, standby
from filelog_bus.errors import CorruptionError, DamageKind, UnsupportedFormatError
from filelog_bus.index import (
    CATEGORY_INDEX,
    CATEGORY_SUMMARY,
    INDEX_KINDS,
    INDEX_LAG_BLOCKS,
    OFFSET_INDEX,
    IndexBlocks,
    IndexKind,
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
    segment_bases,
    segment_name,
)
from filelog_bus.record import HEADER_SIZE, Record, category_key
from filelog_bus.scan import READ_CHUNK, Damage, RaiseOnDamage, RecordScanner, StopAtDamage


class Segment:
    """What every open segment does: read its records by bus offset.

    Invariants:
    - the record at file position ``FILE_HEADER_SIZE + k`` has bus offset ``base + k``, and the
      header names ``base`` too, and the format ``version`` (both read when it is opened);
    - a sound segment holds whole records from ``base`` to where its data ends (damage is what
      ``check.check_segment`` reports, and what ``ActiveSegment.recover`` cuts when it is a torn
      write); a closed segment's file ends exactly there, where the next segment begins; a
      version 2 segment's file may go on with zeros, where no record starts;
    - reads are positional (pread): one fd serves any number of cursors, and reading never
      changes a file.
    """

    def __init__(self, directory: str, base: int, fd: int, *, version: int) -> None:
        self.fd = fd  # first: owned (closed by ``__del__``) before anything else can be interrupted
        self.directory = directory
        self.base = base
        self.path = os.path.join(directory, segment_name(base))
        self.scanner = RecordScanner(self)
        #: The format version its header records (read when it is opened); version 2 may be preallocated.
        self.version = version

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

    def unwritten_at(self, offset: int) -> bool:
        """Whether no record was written at ``offset`` yet: the zeros of a preallocated tail."""
        return self.version >= 2 and self.read(offset, HEADER_SIZE) == bytes(HEADER_SIZE)

    def corruption(self, damage: Damage, advice: str = "") -> CorruptionError:
        """A CorruptionError for ``damage`` met in this segment."""
        return CorruptionError(
            f"damaged record at bus offset {damage.offset}: {damage.reason}",
            path=self.path,
            file_position=self.file_position(damage.offset),
            offset=damage.offset,
            damage=DamageKind.RECORD,
            advice=advice or "restore this segment from a backup, or move it aside to drop its records",
        )

    # -- derived files -----------------------------------------------------------------

    def rebuilt_files(self, end: int, interval: int) -> dict[str, bytes]:
        """The bytes a rebuild from the records below ``end`` gives each derived file, by name."""
        rebuild = IndexRebuild(self.base, interval)
        for record in self.records(self.base, end):
            rebuild.add(record)
        offsets, categories, summary = rebuild.files()
        names = [kind.file_name(self.base) for kind in INDEX_KINDS]
        return dict(zip(names, (offsets, categories, summary), strict=True))

    def _differing_derived(
        self, end: int, default_interval: int, kinds: tuple[IndexKind, ...]
    ) -> dict[str, bytes]:
        """The files of ``kinds`` whose bytes differ from a rebuild from the records below ``end``,
        with the bytes they should hold, by name."""
        interval = OFFSET_INDEX.recorded_interval(self.directory, self.base) or default_interval
        expected = self.rebuilt_files(end, interval)
        names = {kind.file_name(self.base) for kind in kinds}
        return {
            name: data
            for name, data in expected.items()
            if name in names and self._read_derived(name) != data
        }

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

    def close(self) -> None:
        """Close the log; safe to call twice, and after a failure."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            fs.close(fd)

    def __del__(self) -> None:
        # Dropped open (an interrupt landed before its owner held it, or while it was being closed):
        # close the log, as a dropped file object does.
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            os.close(fd)


class ReadOnlySegment(Segment):
    """A segment opened to read: a closed one, or the newest while a writer appends to it.

    Invariants:
    - its log is open read-only and it has no index writers: it never writes the log, so any
      number of them may be open beside the writer;
    - it replaces derived files only whole and atomically (a closed segment's, ``repair_derived``),
      so a reader sees the old file or the new one;
    - in the newest segment only records below the published watermark are meaningful: past it
      is an append in progress, or zeros.
    """

    def __init__(
        self, directory: str, base: int, fd: int, *, version: int, header_damage: CorruptionError | None
    ) -> None:
        super().__init__(directory, base, fd, version=version)
        #: What is wrong with its header (not a segment's, or of another base); None when sound.
        self.header_damage = header_damage

    @classmethod
    def open(cls, directory: str, base: int, *, check_header: bool = True) -> ReadOnlySegment:
        """Open an existing segment to read it, with its header's format version. FileNotFoundError if
        it is gone.

        A bad header raises, unless ``check_header`` is False (a check, which reports
        ``header_damage`` and goes on reading the records): then a segment whose header names
        another base keeps its recorded version, and one whose header is unreadable is read as
        version 1 (no preallocated tail).
        """
        path = os.path.join(directory, segment_name(base))
        fd = fs.open_or_explain(path, os.O_RDONLY)
        try:
            damage: CorruptionError | None = None
            try:
                recorded_base, version = _read_header(fd, path)
            except UnsupportedFormatError as exc:
                damage, version = exc, 1
            else:
                if recorded_base != base:
                    damage = _wrong_base(path, recorded_base, base)
            if damage is not None and check_header:
                raise damage
        except BaseException:
            fs.close(fd)
            raise
        return cls(directory, base, fd, version=version, header_damage=damage)

    def repair_derived(self, end: int, *, default_interval: int) -> list[str]:
        """Replace, atomically, a closed segment's derived files that differ from a rebuild from its
        records below ``end`` (its data end); return the names rewritten."""
        differing = self._differing_derived(end, default_interval, INDEX_KINDS)
        if differing:
            self._write_derived(differing)
        return sorted(differing)


class ActiveSegment(Segment):
    """The newest segment, which the one writer holding the bus's lock appends to.

    Invariants:
    - only its owner writes its log and its indexes, and only at the end: ``append`` at the data
      end, ``discard_from``/``recover`` cut back to a record boundary, ``seal`` ends it for good;
    - deferred records wait in memory, contiguous from ``_deferred_at``, and are written before
      anything after them (an append that is not deferred, a sync, a seal);
    - an index entry never reaches its file before the record it points at: entries wait in
      memory (``INDEX_LAG_BLOCKS`` blocks at most) and are written after their records;
    - a version 2 file is allocated up to ``_allocated_end``: an append past it allocates the
      next step first, so appends overwrite written space.
    """

    def __init__(
        self, directory: str, base: int, fd: int, *, version: int, interval: int, capacity: int
    ) -> None:
        """Take ``fd`` (closed here if the index files cannot be opened) and open the index writers."""
        super().__init__(directory, base, fd, version=version)
        #: How many bytes of records it takes before a roll (segment_capacity).
        self.capacity = capacity
        #: Which records the indexes take an entry for.
        self._blocks = IndexBlocks(base, interval)
        self._index_flush_at = base
        #: Deferred records not written yet (``append(deferred=True)``), the first at ``_deferred_at``.
        self._deferred: list[bytes] = []
        self._deferred_at = base
        try:
            self._allocated_end = self.file_end()
            self._offsets, self._categories = _open_index_writers(directory, base, interval)
        except BaseException:
            super().close()
            raise

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, base: int, interval: int, segment_bytes: int) -> ActiveSegment:
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
        segment = cls(directory, base, fd, version=FORMAT_VERSION, interval=interval, capacity=capacity)
        try:
            segment._reset_indexes()
        except BaseException:
            segment.close()
            raise
        return segment

    @classmethod
    def open(cls, directory: str, base: int, interval: int, segment_bytes: int) -> ActiveSegment:
        """Open the newest segment for appending, finishing a creation a crash cut short.

        The caller then either continues after a clean close or runs ``recover``.
        """
        path = os.path.join(directory, segment_name(base))
        fd = fs.open_or_explain(path, os.O_RDWR)
        try:
            if header_incomplete(os.pread(fd, FILE_HEADER_SIZE, 0), base):
                fs.pwrite_all(fd, encode_file_header(SEGMENT_MAGIC, base), 0)
                fs.fsync(fd)
            recorded_base, version = _read_header(fd, path)
            if recorded_base != base:
                raise _wrong_base(path, recorded_base, base)
        except BaseException:
            fs.close(fd)
            raise
        capacity = segment_capacity(base, segment_bytes)
        return cls(directory, base, fd, version=version, interval=interval, capacity=capacity)

    # -- appending ---------------------------------------------------------------------

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
        new_block, new_key = self._blocks.admit(offset, key)
        if new_block:
            self._offsets.append(offset, timestamp)
            if offset >= self._index_flush_at and not self._deferred:
                self._flush_index(offset)
        if new_key:
            self._categories.append(offset, key)

    def _flush_index(self, written_to: int) -> None:
        """Write the index entries waiting in memory (their records are in the file below ``written_to``)."""
        self._offsets.flush()
        self._categories.flush()
        self._index_flush_at = written_to + INDEX_LAG_BLOCKS * self._blocks.interval

    def _allocate_ahead(self, needed: int) -> None:
        """Preallocate the next step of the file (never past the segment's size, unless a record is)."""
        target = max(needed, min(self._allocated_end + PREALLOCATION_STEP, self.base + self.capacity))
        _preallocate(self.fd, target - self._allocated_end, self.file_position(self._allocated_end))
        self._allocated_end = target  # even when the file system refused: then writes extend the file

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

    def _write_pending(self) -> None:
        """Write what waits in memory (deferred records, index entries) to the files; no sync."""
        self._write_deferred()
        self._offsets.flush()
        self._categories.flush()

    def sync(self) -> None:
        """Make the records and the indexes durable."""
        self.sync_data()
        self._offsets.sync()
        self._categories.sync()

    # -- closing -----------------------------------------------------------------------

    def clean_close_note(self, end: int) -> CleanClose:
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
            summary = self.rebuilt_files(end, self._blocks.interval)[name]
        self._write_derived({name: summary})

    def close(self) -> None:
        """Close every file; safe to call twice, and after a failure."""
        try:
            fs.close_all(self._offsets, self._categories)
        finally:
            super().close()

    # -- opening again: a clean close's note, or recovery --------------------------------

    def continue_after_clean_close(self, note: CleanClose) -> bool:
        """Pick up where a clean close left the files; False if they are not as it left them."""
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

    def recover(self, durable_to: int, unsynced_writer: bool) -> int:
        """Make the segment end on a record boundary, with indexes to match; return the end.

        Every record after the last point known to be durable (``durable_to``) is checked,
        not only those after the last index entry. At the first damage (incomplete or bad
        bytes) at or after ``durable_to`` the tail is cut, unless the writer synced every
        append (not ``unsynced_writer``) and a valid record follows: that is damage to
        acknowledged records, not a torn write. Damage below ``durable_to`` raises
        CorruptionError. Ends with everything synced. The passes:

        1. find where indexing can resume: the last index point at or below ``durable_to``
           (``base`` when the indexes are missing, damaged or of another interval);
        2. index the valid records from there to the first damage or the end of the file (from
           ``base`` again when the index pointed at garbage): their end is the segment's end;
        3. judge what follows the end: damage to keep (CorruptionError), or a torn write;
        4. cut a torn write (anything but the zeros of a preallocated tail);
        5. zero-fill a version 2 segment back to its size, and sync everything.
        """
        interval = self._blocks.interval
        file_end = self.file_end()
        offsets = load_offset_index(self.directory, self.base, file_end)  # 1
        categories = load_category_index(self.directory, self.base, file_end)
        start = _resume_point(self.base, offsets, categories, interval, durable_to)
        end = self._index_from(start, file_end, offsets, categories)  # 2
        if end == start and self.base < start < file_end:
            end = self._index_from(self.base, file_end, None, None)  # the index pointed at garbage
        if end < file_end:
            if end < durable_to:  # 3
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
            if not self._only_zeros(end, file_end):  # 4
                # Cut whatever follows (a torn write, pages an unsynced writer left past a hole), so
                # that no stale bytes can ever line up behind a later append.
                self._cut(end)
        self._refill()  # 5
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

    # -- rebuilding its indexes ----------------------------------------------------------

    def _reindex(self, end: int) -> None:
        """Index the records below ``end`` afresh (CorruptionError if damaged)."""
        self._reset_indexes()
        for record in self.records(self.base, end):
            self._add_to_indexes(record)
        self.sync()

    def repair_derived(self, end: int, *, default_interval: int) -> list[str]:
        """Reindex in place (its writers hold the indexes open) when an index differs from a rebuild
        from the records below ``end``; return the names of the indexes that differed."""
        self._write_pending()  # compare files that hold everything appended, not lagging ones
        differing = self._differing_derived(end, default_interval, (OFFSET_INDEX, CATEGORY_INDEX))
        if differing:
            self._reindex(end)
        return sorted(differing)


def _read_header(fd: int, path: str) -> tuple[int, int]:
    """(base, format version) from the header of the segment file ``fd`` (at ``path``);
    UnsupportedFormatError when it is not a segment's header."""
    header = os.pread(fd, FILE_HEADER_SIZE, 0)
    try:
        recorded_base, _ = decode_file_header(SEGMENT_MAGIC, header)
    except LayoutError as exc:
        raise UnsupportedFormatError(
            f"not a readable filelog-bus segment: {exc}",
            path=path,
            file_position=0,
            damage=DamageKind.FILE_HEADER,
            advice="if this file does not belong to the bus, move it out of the bus directory",
        ) from None
    return recorded_base, file_header_version(header)


def _wrong_base(path: str, recorded_base: int, base: int) -> CorruptionError:
    return CorruptionError(
        f"segment header says base offset {recorded_base} but the file name says {base}",
        path=path,
        file_position=0,
        damage=DamageKind.FILE_HEADER,
        advice="the file was renamed or damaged: restore it from a backup or move it aside",
    )


def header_incomplete(header: bytes, base: int) -> bool:
    """Whether a segment file's first bytes are only the start of its (version 1) header: an older
    filelog-bus created segments in place and may have crashed doing so. (This one links a
    complete header into place.)"""
    return len(header) < FILE_HEADER_SIZE and encode_file_header(SEGMENT_MAGIC, base).startswith(header)


def _open_index_writers(directory: str, base: int, interval: int) -> tuple[IndexWriter, IndexWriter]:
    """Open the active segment's offset and category index writers (neither left open on a failure)."""
    offsets = _open_index_writer(directory, base, interval, OFFSET_INDEX)
    try:
        return offsets, _open_index_writer(directory, base, interval, CATEGORY_INDEX)
    except BaseException:
        offsets.close()
        raise


def _open_index_writer(directory: str, base: int, interval: int, kind: IndexKind) -> IndexWriter:
    return IndexWriter(os.path.join(directory, kind.file_name(base)), kind.magic, kind.entry, base, interval)


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
    return segment_bases(os.listdir(directory))


# -- closed segments, by name: what recovery, retention and check use without opening them --------


def gap_after_segment(directory: str, base: int, next_base: int) -> tuple[int, int] | None:
    """For a closed segment: (where its data ends, its file size) when that is not where the next
    segment begins (the file was truncated or extended), else None. FileNotFoundError if gone."""
    size = os.stat(os.path.join(directory, segment_name(base))).st_size
    end = base + size - FILE_HEADER_SIZE
    return None if end == next_base else (end, size)


def derived_files_sound(directory: str, base: int) -> bool:
    """Cheap check of a closed segment's derived files: present, right header, whole entries."""
    return all(kind.header_sound(directory, base) for kind in INDEX_KINDS)


def delete_segment_files(directory: str, base: int) -> str:
    """Delete a closed segment durably (retention, and recovery finishing a retention pass a crash
    cut short): the log first (readers never find a log without its base), then its derived files
    (an open after a crash deletes those left behind), then fsync the directory. Returns the log's
    name."""
    for name in (segment_name(base), *(kind.file_name(base) for kind in INDEX_KINDS)):
        with contextlib.suppress(FileNotFoundError):
            fs.unlink(os.path.join(directory, name))
    fs.fsync_directory(directory)
    return segment_name(base)
