"""LogWriter: the single process that appends to a bus.

It holds an exclusive inter-process lock for as long as it is open, recovers
the newest segment on open, appends records (fdatasync'd before ``append``
returns with the default ``durability="always"``), keeps the sparse indexes in
step, rolls segments, publishes the watermark readers stop at, and applies
retention.
"""

from __future__ import annotations

import errno
import os
import time
from typing import IO

import portalocker

from filelog_bus.config import DURABILITY_ALWAYS, WriterConfig
from filelog_bus.errors import (
    BusClosedError,
    BusLockedError,
    BusPermissionError,
    BusWriteError,
    CorruptionError,
    InvalidRecordError,
    NotABusError,
)
from filelog_bus.fsutil import fsync_directory, is_directory, stat_or_explain
from filelog_bus.index import IndexerMark, SegmentIndexer
from filelog_bus.layout import LOCK_NAME, WATERMARK_NAME, CleanClose, parse_segment_name, segment_name
from filelog_bus.record import category_key, encode_record
from filelog_bus.recovery import (
    check_closed_segments,
    current_indexes,
    expected_indexes,
    recover_active_segment,
    reindex,
    remove_orphan_indexes,
    repair_closed_indexes,
    write_category_summary,
)
from filelog_bus.retention import (
    check_policy,
    delete_segments,
    plan_retention,
    read_newest_timestamp,
    segment_spans,
)
from filelog_bus.segment import LogSegment, list_segment_bases
from filelog_bus.watermark import WatermarkPublisher

_LOCK_RETRY_SECONDS = 0.05


class LogWriter:
    """Appends records to the bus at ``path``. See docs/API.md."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = DURABILITY_ALWAYS,
        segment_bytes: int = 64 * 2**20,
        index_interval_bytes: int = 4096,
        max_record_bytes: int = 16 * 2**20,
        lock_timeout: float | None = 0.0,
    ) -> None:
        self.path = os.fspath(path)
        self.config = WriterConfig(
            durability, segment_bytes, index_interval_bytes, max_record_bytes, lock_timeout
        )
        self._sync_each_append = durability == DURABILITY_ALWAYS
        self._lock_file: IO[str] | None = None
        self._segment: LogSegment | None = None
        self._indexer: SegmentIndexer | None = None
        self._watermark: WatermarkPublisher | None = None
        self._bases: list[int] = []
        self._end = 0
        self._broken: str | None = None
        #: Set once open() succeeded: only then may close() vouch for the files with a clean-close note.
        self._ready = False

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> LogWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> LogWriter:
        if self._segment is not None:
            return self
        self._prepare_directory()
        self._refuse_foreign_directory()
        self._lock()
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        self._ready = True
        return self

    def close(self) -> None:
        """Flush to disk, leave a clean-close note for a cheap next open, release the lock. Idempotent."""
        try:
            if (
                self._ready
                and self._segment is not None
                and self._indexer is not None
                and self._broken is None
            ):
                self._segment.sync()
                self._indexer.sync()
                assert self._watermark is not None
                self._watermark.publish(self._end, durable=True)
                self._watermark.leave_clean_close(
                    CleanClose(self._segment.base, self._end, *self._indexer.sizes())
                )
        finally:
            for part in (self._indexer, self._segment, self._watermark):
                if part is not None:
                    part.close()
            self._indexer = self._segment = self._watermark = None
            if self._lock_file is not None:
                self._lock_file.close()  # closing the file releases the flock
                self._lock_file = None
            self._broken = None
            self._ready = False

    @property
    def end_offset(self) -> int:
        """The offset the next appended record will get."""
        self._check_open()
        return self._end

    @property
    def begin_offset(self) -> int:
        """The oldest offset still on the bus."""
        self._check_open()
        return self._bases[0]

    def _prepare_directory(self) -> None:
        status = stat_or_explain(self.path, "open the bus for writing")
        if is_directory(status):
            return
        if status is not None:
            raise NotABusError(f"{self.path} exists and is not a directory: give the bus its own directory")
        parent = os.path.dirname(os.path.abspath(self.path))
        if not is_directory(stat_or_explain(parent, "create the bus directory")):
            raise NotABusError(
                f"cannot create the bus directory {self.path}: its parent {parent} does not exist; create it first"
            )
        try:
            os.mkdir(self.path)
            fsync_directory(parent)  # the bus directory's own entry must survive a power cut
        except FileExistsError:
            pass
        except PermissionError:
            raise BusPermissionError(
                errno.EACCES, f"permission denied creating the bus directory {self.path} in {parent}"
            ) from None

    def _refuse_foreign_directory(self) -> None:
        """Refuse, before creating anything, a non-empty directory that holds no bus."""
        names = set(os.listdir(self.path))
        if WATERMARK_NAME in names or any(parse_segment_name(name) is not None for name in names):
            return
        foreign = sorted(names - {LOCK_NAME, WATERMARK_NAME + ".new"})
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise NotABusError(
                f"{self.path} is not empty and holds no filelog-bus ({shown}): give the bus an empty or new directory"
            )

    def _lock(self) -> None:
        lock_path = os.path.join(self.path, LOCK_NAME)
        try:
            lock_file = open(lock_path, "a+", encoding="ascii")  # noqa: SIM115 - held while open
        except PermissionError:
            raise BusPermissionError(
                errno.EACCES,
                f"permission denied creating {lock_path}: the writer needs write access to the bus directory",
            ) from None
        timeout = self.config.lock_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                portalocker.lock(lock_file, portalocker.LOCK_EX | portalocker.LOCK_NB)
                break
            except portalocker.LockException:
                if deadline is not None and time.monotonic() >= deadline:
                    lock_file.seek(0)
                    holder = lock_file.read().strip() or "unknown"
                    lock_file.close()
                    raise BusLockedError(
                        f"another writer (pid {holder}) holds the lock {lock_path} "
                        f"(waited {timeout} s): only one writer may append to a bus; stop the other "
                        f"writer, or wait for it (lock_timeout)",
                        lock_path=lock_path,
                        holder=holder,
                    ) from None
                time.sleep(_LOCK_RETRY_SECONDS)
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file

    def _load(self) -> None:
        bases = list_segment_bases(self.path)
        self._watermark = WatermarkPublisher(self.path)
        published = self._watermark.published()
        clean_close = self._watermark.take_clean_close()
        if not bases:
            self._create_bus(published)
            return
        remove_orphan_indexes(self.path, bases)
        check_closed_segments(self.path, bases, self.config.index_interval_bytes)
        segment = LogSegment.open_newest(self.path, bases[-1])
        self._segment = segment
        self._indexer = SegmentIndexer(self.path, segment.base, self.config.index_interval_bytes)
        self._bases = bases
        if not self._continue_after_clean_close(clean_close):
            # Only a durable watermark proves that damage below it hit acknowledged records;
            # data a "never" writer published may legitimately be torn by a power cut.
            durably_published = published[0] if published is not None and published[1] else None
            self._end = recover_active_segment(
                segment, self._indexer, self.config.index_interval_bytes, durably_published
            )
        self._watermark.publish(self._end, durable=True)

    def _continue_after_clean_close(self, note: CleanClose | None) -> bool:
        """Skip recovery when the files are exactly as a clean close left them (cheap open)."""
        assert self._segment is not None and self._indexer is not None
        if note is None or note.base != self._segment.base or note.end != self._segment.end():
            return False
        if not self._indexer.continue_after_clean_close(note.offset_index_size, note.category_index_size):
            return False
        self._end = note.end
        return True

    def _create_bus(self, published: tuple[int, bool] | None) -> None:
        assert self._watermark is not None
        if published is not None and published[0]:
            raise CorruptionError(
                f"the bus has published records up to offset {published[0]} but no segment file is left; "
                f"restore the segments from a backup, or start a new bus in an empty directory "
                f"(and reset the consumers' offsets)",
                path=self._watermark.path,
            )
        self._watermark.publish(0, durable=True)
        self._segment = LogSegment.create(self.path, 0)
        self._indexer = SegmentIndexer(self.path, 0, self.config.index_interval_bytes)
        self._indexer.reset()
        self._bases = [0]
        self._end = 0

    # -- appending -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._segment is None:
            raise BusClosedError(
                f"the writer of {self.path} is not open: call open() or use it in a with block"
            )
        if self._broken is not None:
            raise BusClosedError(
                f"the writer of {self.path} stopped after an unrecoverable I/O error ({self._broken}); "
                f"close it and open a new writer, which recovers the bus"
            )

    def append(self, category: str, payload: bytes, timestamp: float | None = None) -> int:
        """Append one record and return its offset; durable on return with durability="always"."""
        self._check_open()
        limit = self.config.max_record_bytes
        if isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) > limit:
            raise InvalidRecordError(
                f"payload of {len(payload)} bytes exceeds max_record_bytes={limit}; "
                f"split it or raise max_record_bytes"
            )
        if timestamp is None:
            timestamp = time.time()
        data = encode_record(category, timestamp, payload)
        if len(data) > limit:
            raise InvalidRecordError(
                f"record of {len(data)} bytes exceeds max_record_bytes={limit}; split it or raise max_record_bytes"
            )
        segment = self._segment
        indexer = self._indexer
        assert segment is not None and indexer is not None and self._watermark is not None
        offset = self._end
        if offset > segment.base and offset - segment.base + len(data) > self.config.segment_bytes:
            segment, indexer = self._roll()
        key = category_key(category)
        mark = indexer.mark()
        try:
            segment.append(data)
            indexer.add(offset, float(timestamp), key)
            if self._sync_each_append:
                segment.sync()
        except OSError as exc:
            self._undo_append(offset, mark, key, exc)
        self._end = offset + len(data)
        self._watermark.publish(self._end, self._sync_each_append)
        return offset

    def _undo_append(self, offset: int, mark: IndexerMark, key: int, exc: OSError) -> None:
        """Remove every byte of a failed append, then raise BusWriteError."""
        assert self._segment is not None and self._indexer is not None
        try:
            self._segment.truncate(offset)
            self._indexer.rollback(mark, key)
        except OSError as undo_exc:
            self._broken = f"{exc}; then, undoing it: {undo_exc}"
        else:
            if exc.errno == errno.EIO:
                self._broken = str(exc)  # after a failed fsync the page cache cannot be trusted
        raise _write_error(
            exc,
            f"append at offset {offset} to {self._segment.path} failed",
            "the record was not written and earlier records are intact",
        ) from exc

    def _roll(self) -> tuple[LogSegment, SegmentIndexer]:
        """Close the active segment durably and start a new one at the current end.

        On failure the bus is left as it was (the new segment's files are removed),
        so the append can be retried once the cause is fixed.
        """
        assert self._segment is not None and self._indexer is not None
        failed = f"could not start a new segment at offset {self._end} in {self.path}"
        try:
            self._segment.sync()
            self._indexer.sync()  # closed segments' indexes are trusted on open after a cheap check
            write_category_summary(self.path, self._segment.base, self._end)
            segment = LogSegment.create(self.path, self._end)
        except OSError as exc:
            raise _write_error(exc, failed, "nothing was written") from exc
        try:
            indexer = SegmentIndexer(self.path, segment.base, self.config.index_interval_bytes)
            indexer.reset()
        except OSError as exc:
            segment.close()
            try:
                delete_segments(self.path, [segment.base])
            except OSError as undo_exc:
                self._broken = f"{exc}; then, removing the new segment: {undo_exc}"
            raise _write_error(exc, failed, "nothing was written") from exc
        self._indexer.close()
        self._segment.close()
        self._segment = segment
        self._indexer = indexer
        self._bases.append(segment.base)
        return segment, indexer

    # -- maintenance -------------------------------------------------------------

    def repair_indexes(self) -> list[str]:
        """Check every index against a rebuild from its segment and rewrite those that differ.

        Opening only checks closed segments' indexes cheaply (header and size), so
        that it costs the same on any log size, and readers bypass an index whose
        checksum fails. This finds and fixes any index damage (`filelog-bus verify
        --repair`); it reads the whole bus. Returns the repaired segments' names.
        """
        self._check_open()
        assert self._segment is not None and self._indexer is not None
        interval = self.config.index_interval_bytes
        repaired = []
        for span in segment_spans(self._bases, self._end):
            if span.base != self._segment.base:
                if not repair_closed_indexes(self.path, span.base, span.end, interval):
                    continue
            elif (
                current_indexes(self.path, span.base)[:2]
                == expected_indexes(self._segment, span.end, interval)[:2]
            ):
                continue
            else:
                reindex(self._segment, self._indexer, span.end)
            repaired.append(segment_name(span.base))
        return repaired

    # -- retention -------------------------------------------------------------

    def apply_retention(
        self,
        *,
        max_age_days: float | None = None,
        max_bytes: int | None = None,
        now: float | None = None,
        keep_from: int | None = None,
    ) -> list[str]:
        """Delete closed segments beyond the age or size budget; return their file names.

        With ``keep_from``, the age budget spares segments holding offsets >= keep_from.
        """
        self._check_open()
        check_policy(max_age_days, max_bytes)
        spans = segment_spans(self._bases, self._end)
        doomed = plan_retention(
            spans,
            now=time.time() if now is None else now,
            max_age_days=max_age_days,
            max_bytes=max_bytes,
            newest_timestamp=lambda span: read_newest_timestamp(self.path, span.base, span.end),
            keep_from=keep_from,
        )
        try:
            return delete_segments(self.path, [span.base for span in doomed])
        finally:
            self._bases = list_segment_bases(self.path)  # also right when a deletion failed half-way


def _write_error(exc: OSError, failed: str, consequence: str) -> BusWriteError:
    error_number = exc.errno or errno.EIO
    return BusWriteError(
        error_number, f"{failed}: {os.strerror(error_number)}; {consequence}; {_advice(error_number)}"
    )


def _advice(error_number: int | None) -> str:
    if error_number in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space (or apply retention), then append again"
    if error_number == errno.EFBIG:
        return "the file-size limit (ulimit -f) was reached: raise it or lower segment_bytes"
    if error_number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the bus directory's permissions and that its file system is writable"
    return "check the disk and the system log, then reopen the writer"
