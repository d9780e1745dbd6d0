"""LogSegment: one ``<base>.log`` file, its header and its records.

A segment holds the records whose offsets start at ``base``; the record at file
position ``FILE_HEADER_SIZE + k`` has offset ``base + k``. Only the newest
segment is ever appended to; older ones are immutable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from filelog_bus.errors import CorruptionError, UnsupportedFormatError
from filelog_bus.fsutil import fsync_directory, open_or_explain
from filelog_bus.layout import (
    FILE_HEADER_SIZE,
    SEGMENT_MAGIC,
    LayoutError,
    decode_file_header,
    encode_file_header,
    parse_segment_name,
    segment_name,
)
from filelog_bus.record import (
    HEADER_SIZE,
    RECORD_MAGIC,
    DecodedBatch,
    Record,
    RecordDecodeError,
    decode_records,
)

#: How much a sequential read asks the OS for at a time.
READ_CHUNK = 256 * 1024


class LogSegment:
    """An open segment file. Reading is positional (pread), so one fd serves any number of cursors."""

    def __init__(self, directory: str, base: int, fd: int, writable: bool) -> None:
        self.directory = directory
        self.base = base
        self.path = os.path.join(directory, segment_name(base))
        self.fd = fd
        self.writable = writable

    @classmethod
    def create(cls, directory: str, base: int) -> LogSegment:
        """Create a new, empty segment durably (file and directory entry fsync'd).

        The header is written under a temporary name first, so nobody ever lists a
        segment without its header; linking refuses to replace an existing segment.
        """
        path = os.path.join(directory, segment_name(base))
        temporary = path + ".new"
        fd = open_or_explain(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, encode_file_header(SEGMENT_MAGIC, base))
            os.fsync(fd)
            os.link(temporary, path)
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(temporary)
        fsync_directory(directory)
        return cls(directory, base, fd, writable=True)

    @classmethod
    def open(cls, directory: str, base: int, *, writable: bool = False) -> LogSegment:
        """Open an existing segment and check its header. FileNotFoundError if it is gone."""
        path = os.path.join(directory, segment_name(base))
        fd = open_or_explain(path, os.O_RDWR if writable else os.O_RDONLY)
        segment = cls(directory, base, fd, writable)
        try:
            segment.check_header()
        except BaseException:
            segment.close()
            raise
        return segment

    @classmethod
    def open_newest(cls, directory: str, base: int) -> LogSegment:
        """Open the active segment for appending, finishing a creation that a crash cut short."""
        path = os.path.join(directory, segment_name(base))
        fd = open_or_explain(path, os.O_RDWR)
        header = encode_file_header(SEGMENT_MAGIC, base)
        try:
            existing = os.pread(fd, FILE_HEADER_SIZE, 0)
            if len(existing) < FILE_HEADER_SIZE and header.startswith(existing):
                os.pwrite(fd, header, 0)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        segment = cls(directory, base, fd, writable=True)
        try:
            segment.check_header()
        except BaseException:
            segment.close()
            raise
        os.lseek(fd, 0, os.SEEK_END)
        return segment

    def check_header(self) -> None:
        header = os.pread(self.fd, FILE_HEADER_SIZE, 0)
        try:
            recorded_base, _ = decode_file_header(SEGMENT_MAGIC, header)
        except LayoutError as exc:
            raise UnsupportedFormatError(
                f"not a readable filelog-bus segment: {exc}; if this file does not belong to the bus, "
                f"move it out of the bus directory",
                path=self.path,
                offset=0,
            ) from None
        if recorded_base != self.base:
            raise CorruptionError(
                f"segment header says base offset {recorded_base} but the file name says {self.base}; "
                f"the file was renamed or damaged: restore it from a backup or move it aside",
                path=self.path,
                offset=0,
            )

    def end(self) -> int:
        """Offset just past the last byte in the file (complete or not)."""
        return self.base + max(os.fstat(self.fd).st_size - FILE_HEADER_SIZE, 0)

    def file_position(self, offset: int) -> int:
        return offset - self.base + FILE_HEADER_SIZE

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes starting at bus offset ``offset`` (fewer at end of file)."""
        return os.pread(self.fd, length, self.file_position(offset))

    def read_batch(self, offset: int, end: int, chunk: int = READ_CHUNK) -> DecodedBatch:
        """Decode the complete records in [offset, end), reading at most about ``chunk`` bytes.

        A record larger than ``chunk`` is read whole. The batch is empty (consumed
        0, no error) when no complete record starts at ``offset`` before ``end``.
        """
        data = self.read(offset, min(chunk, end - offset))
        batch = decode_records(data, offset)
        if not batch.records and batch.error is None and len(data) < batch.wanted <= end - offset:
            data = self.read(offset, batch.wanted)
            batch = decode_records(data, offset)
        return batch

    def iter_records(self, start: int, end: int) -> Iterator[Record]:
        """Every record in [start, end), which must be whole records; CorruptionError on damage."""
        position = start
        while position < end:
            batch = self.read_batch(position, end)
            yield from batch.records
            position += batch.consumed
            if batch.error is not None or not batch.records:
                error = batch.error or RecordDecodeError(f"record extends past the end of the data at {end}")
                raise self.corruption(position, error)

    def find_valid_record(self, start: int, end: int) -> int | None:
        """Offset of the first complete, valid record starting in [start, end), or None.

        Used after damage: to tell mid-log damage (valid records follow) from a torn
        tail, and to resume checking past it. Reads in chunks, whatever the distance.
        """
        position = start
        while end - position >= HEADER_SIZE:
            data = self.read(position, min(READ_CHUNK, end - position))
            found = data.find(RECORD_MAGIC)
            while found >= 0:
                candidate = position + found
                if self.read_batch(candidate, end, 4096).records:
                    return candidate
                found = data.find(RECORD_MAGIC, found + 1)
            position += max(len(data) - 1, 1)  # keep one byte: a magic may straddle two reads
        return None

    def corruption(self, offset: int, error: RecordDecodeError, what_to_do: str = "") -> CorruptionError:
        """A CorruptionError for damage at bus offset ``offset`` in this segment."""
        advice = what_to_do or (
            "the segment is damaged; run `filelog-bus verify` on the bus and restore this file from a "
            "backup, or move it aside to drop its records"
        )
        return CorruptionError(
            f"damaged record at bus offset {offset}: {error}; {advice}",
            path=self.path,
            offset=self.file_position(offset),
        )

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end of the file; partial writes are retried."""
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def truncate(self, offset: int) -> None:
        """Cut the file at bus offset ``offset`` and place the write position there."""
        os.ftruncate(self.fd, self.file_position(offset))
        os.lseek(self.fd, 0, os.SEEK_END)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def list_segment_bases(directory: str) -> list[int]:
    """Sorted base offsets of the segments in ``directory``."""
    bases = [base for name in os.listdir(directory) if (base := parse_segment_name(name)) is not None]
    bases.sort()
    return bases
