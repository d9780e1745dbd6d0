"""LogWriter: the single process that appends to a bus.

It holds an exclusive inter-process lock for as long as it is open, recovers the
bus on open (``recovery.load_segments``), appends records (fdatasync'd before
``append`` returns with the default ``durability="always"``) through the active
``ActiveSegment``, rolls segments, publishes the watermark readers stop at, and applies
retention.

Writing is fail-stop. When a write-side call fails part-way (an OSError, or any
exception such as KeyboardInterrupt landing in the middle), the writer does not try
to restore its files in place: it remembers the failure, cuts back the record it was
appending when that is provably safe, and refuses every later call with
``BusClosedError`` until it is closed and a writer is opened again, whose open runs
the one recovery path. Nothing it published is ever taken back.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import NoReturn

from filelog_bus import fs
from filelog_bus.bus_directory import DirectoryState, classify
from filelog_bus.config import DURABILITY_ALWAYS, WriterConfig
from filelog_bus.errors import (
    BusClosedError,
    BusWriteError,
    CorruptionError,
    DamageKind,
    FilelogBusError,
    InvalidRecordError,
    NotABusError,
)
from filelog_bus.os_errors import io_error, permission_error
from filelog_bus.record import CategoryEncoder
from filelog_bus.recovery import DurablePoint, load_segments
from filelog_bus.retention import (
    check_policy,
    plan_retention_of,
    segment_spans,
)
from filelog_bus.segment import (
    ActiveSegment,
    ReadOnlySegment,
    delete_segment_files,
    list_segment_bases,
    preallocated_size,
)
from filelog_bus.standby import BACKGROUND_BYTES, StandbyPreparer
from filelog_bus.watermark import WatermarkPublisher
from filelog_bus.writer_lock import WriterLock

#: Categories whose encoder the writer remembers (Hermes uses a handful).
_CACHED_CATEGORIES = 1024


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
        self._lock: WriterLock | None = None
        self._segment: ActiveSegment | None = None
        self._watermark: WatermarkPublisher | None = None
        self._bases: list[int] = []
        self._end = 0
        self._failure: BaseException | None = None
        #: An interrupt that landed once an append was published: raised by the next call (see append).
        self._held_interrupt: BaseException | None = None
        #: An encoder per category appended so far (the category is checked and packed once).
        self._encoders: dict[str, CategoryEncoder] = {}
        #: Appending past this offset needs ``_before_append`` first (a roll, the standby, ...).
        self._attention_at = 0
        self._standby: StandbyPreparer | None = None
        self._retention_note: str | None = None

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> LogWriter:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> LogWriter:
        """Lock the bus (creating it if needed) and recover it. Every failure is a FilelogBusError."""
        if self._segment is not None:
            if self._failure is None:
                return self
            self.close()  # a stopped writer: reopening recovers the bus
        self._failure = None
        try:
            self._prepare_directory()
            self._lock = WriterLock.acquire(self.path, self.config.lock_timeout)
            self._load()
        except BaseException as exc:
            self._release()
            _raise_as(_write_error(exc, f"could not open the bus at {self.path} for writing", self.path), exc)
        return self

    def close(self) -> None:
        """Flush to disk, leave a clean-close note for a cheap next open, release the lock. Idempotent.

        A stopped writer only releases its files and lock: the next open recovers the bus. An
        interrupt held back by an append (see there) is raised once the writer is closed (unless
        closing failed: that error is raised instead).
        """
        held, self._held_interrupt = self._held_interrupt, None
        try:
            if self._segment is not None and self._watermark is not None and self._failure is None:
                try:
                    self._segment.sync()
                    # The note before the publication: a close whose note cannot be written has shown
                    # readers nothing new (deferred records stay invisible until a writer opens).
                    self._watermark.leave_clean_close(self._segment.clean_close_note(self._end))
                    self._watermark.publish(self._end, durable=True, synced=True)
                except OSError as exc:
                    _raise_as(
                        _write_error(exc, f"closing the bus at {self.path} failed", self._segment.path), exc
                    )
        finally:
            self._release()
            self._failure = None
        if held is not None:
            raise held

    def _release(self) -> None:
        """Close every file and release the lock, whatever state they are in."""
        segment, watermark, lock = self._segment, self._watermark, self._lock
        self._segment = self._watermark = self._lock = None
        try:
            if self._standby is not None:
                self._standby.wait()  # no thread may write in a bus this writer no longer holds
        finally:
            fs.close_all(segment, watermark, lock)  # the lock last

    def __del__(self) -> None:
        """A writer dropped while open: release its lock and files, and say so with a ResourceWarning,
        as Python's own files do. No clean-close note: the next open recovers, as after a crash."""
        if getattr(self, "_lock", None) is None and getattr(self, "_segment", None) is None:
            return  # never opened, closed, or cut short in __init__
        if sys.is_finalizing():
            return  # the interpreter is exiting: the system releases the lock and files
        warnings.warn(
            f"unclosed LogWriter of {self.path}: close() it or use it in a with block",
            ResourceWarning,
            source=self,
            stacklevel=2,
        )
        self._release()

    @property
    def retention_note(self) -> str | None:
        """Why the last ``apply_retention`` stopped deleting by age at a segment stamped in the future
        (the clock was ahead when it was written), or None."""
        return self._retention_note

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped this writer (it then refuses every call until reopened), or None."""
        return self._failure

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
        """Create the bus directory if it is missing; refuse, before creating anything, a path that
        is not a bus's (a file, a non-empty directory holding no bus) or that may not be looked at."""
        directory = classify(self.path)
        if directory.state is DirectoryState.MISSING:
            if not directory.parent_exists:
                raise NotABusError(
                    f"cannot create the bus directory {self.path}: its parent {directory.parent} does not exist",
                    path=self.path,
                    advice="create the parent directory first",
                )
            if self._create_directory(directory.parent):
                return
            directory = classify(self.path)  # created by someone else meanwhile
        if directory.state is DirectoryState.UNREADABLE:
            raise directory.permission_error("open the bus for writing")
        if directory.state is DirectoryState.NOT_A_BUS and not directory.is_directory:
            raise NotABusError(
                f"{self.path} exists and is not a directory",
                path=self.path,
                advice="give the bus its own directory",
            )
        if directory.state is DirectoryState.NOT_A_BUS:
            foreign = directory.foreign
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise NotABusError(
                f"{self.path} is not empty and holds no filelog-bus ({shown})",
                path=self.path,
                advice="give the bus an empty or new directory",
            )

    def _create_directory(self, parent: str) -> bool:
        """Create the bus directory, durably; False when another process created it first."""
        try:
            fs.mkdir(self.path)
        except FileExistsError:
            return False
        except PermissionError as exc:
            raise permission_error(
                exc,
                f"permission denied creating the bus directory {self.path} in {parent}",
                path=parent,
                advice="run as a user that may write to the parent directory, or create the bus directory first",
            ) from None
        fs.fsync_directory(parent)  # the bus directory's own entry must survive a power cut
        return True

    def _load(self) -> None:
        interval = self.config.index_interval_bytes
        self._watermark = WatermarkPublisher(self.path, unsynced_writer=not self._sync_each_append)
        previous = self._watermark.published()
        clean_close = self._watermark.take_clean_close()
        bases = list_segment_bases(self.path)
        if bases:
            durable = DurablePoint(
                previous.offset if previous is not None and previous.durable else 0,
                previous is not None and previous.unsynced_writer,
            )
            loaded = load_segments(
                self.path,
                bases,
                interval,
                self.config.segment_bytes,
                durable,
                clean_close,
                self._before_first_write,
            )
            self._segment, self._bases, self._end = loaded.active, loaded.bases, loaded.end
        else:
            if previous is not None and previous.offset:
                raise CorruptionError(
                    f"the bus has published records up to offset {previous.offset} but no segment file is left",
                    path=self._watermark.path,
                    damage=DamageKind.MISSING_SEGMENTS,
                    advice="restore the segments from a backup, or start a new bus in an empty directory "
                    "(and reset the consumers' offsets)",
                )
            self._segment = ActiveSegment.create(self.path, 0, interval, self.config.segment_bytes)
            self._bases, self._end = [0], 0
        self._watermark.publish_at_open(self._end, previous)
        size = preallocated_size(self.config.segment_bytes)
        self._standby = StandbyPreparer(self.path, size) if size >= BACKGROUND_BYTES else None
        self._attention_at = 0  # the first append checks what it must do first

    # -- appending -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._held_interrupt is not None:
            held, self._held_interrupt = self._held_interrupt, None
            raise held
        if self._failure is not None:
            raise BusClosedError(
                f"the writer of {self.path} stopped after a failed write ({self._failure!r})",
                path=self.path,
                advice="close it and open a new writer, which recovers the bus",
                failure=self._failure,
            )
        if self._segment is None:
            raise BusClosedError(
                f"the writer of {self.path} is not open",
                path=self.path,
                advice="call open() or use it in a with block",
            )

    def append(
        self, category: str, payload: bytes, timestamp: float | None = None, *, deferred: bool = False
    ) -> int:
        """Append one record and return its offset; durable on return with durability="always".

        ``deferred=True``: the record is written but neither synced nor shown to readers until
        ``sync()``, a later append that is not deferred, or ``close()`` makes it durable and
        publishes it with everything before it. A crash before then may lose it, and any deferred
        record after it, never a record made durable before.

        An interrupt (Ctrl-C, what a signal handler raises) that lands once the record is visible
        to readers does not make the append fail: it returns the offset, and the writer's next
        call raises the interrupt before it changes anything (Hermes would send the event again).
        """
        if self._failure is not None or self._segment is None or self._held_interrupt is not None:
            self._check_open()
        encoder = (
            self._encoders.get(category) if type(category) is str else None
        )  # (unhashable: refused below)
        if encoder is None:
            encoder = self._encoder_for(category)
        limit = self.config.max_record_bytes
        if type(payload) is bytes and len(payload) > limit:  # before encoding a huge payload
            raise InvalidRecordError(
                f"payload of {len(payload)} bytes exceeds max_record_bytes={limit}",
                advice="split it or raise max_record_bytes",
            )
        if timestamp is None:
            timestamp = time.time()
        data = encoder.encode(timestamp, payload)
        size = len(data)
        if size > limit:
            raise InvalidRecordError(
                f"record of {size} bytes exceeds max_record_bytes={limit}",
                advice="split it or raise max_record_bytes",
            )
        segment = self._segment
        watermark = self._watermark
        assert segment is not None and watermark is not None
        offset = self._end
        try:
            if offset + size > self._attention_at:
                segment = self._before_append(offset, size)
            if deferred:
                watermark.hold_unsynced()
            sync = self._sync_each_append and not deferred
            segment.append(offset, data, timestamp, encoder.key, sync=sync, deferred=deferred)
            self._end = offset + size
            if deferred:
                return offset
            watermark.publish(self._end, self._sync_each_append, synced=sync)
            return offset  # inside the try: an interrupt landing here is held too, the record is visible
        except BaseException as exc:
            durable = self._sync_each_append  # (and synced: a record that is not deferred)
            if not deferred and self._published_despite(exc, offset + size, durable, durable):
                return offset
            self._stop(exc, f"append at offset {offset} failed", segment.path, offset)

    def _published_despite(self, exc: BaseException, end: int, durable: bool, synced: bool) -> bool:
        """Whether ``exc``, an interrupt, landed once everything up to ``end`` was published: then
        nothing failed, and the interrupt is held for the writer's next call (``_check_open``).

        The publication is repeated (the same bytes again) so that the publisher's own record of it
        is complete too. A failed call, one of the writer's own errors (its checks of its files), or
        anything going wrong here, is a failure as before.
        """
        if (
            fs.failed_call(exc)
            or isinstance(exc, FilelogBusError)
            or self._end != end
            or self._watermark is None
        ):
            return False
        try:
            published = self._watermark.published()
            if published is None or published.offset < end or (durable and not published.durable):
                return False
            self._watermark.publish(end, durable, synced=synced)
        except BaseException:
            return False  # (a second interrupt: the writer stops for the first one)
        self._held_interrupt = exc
        return True

    def _encoder_for(self, category: str) -> CategoryEncoder:
        """A new category's encoder (InvalidRecordError for a bad category), remembered."""
        encoder = CategoryEncoder(category)
        if len(self._encoders) >= _CACHED_CATEGORIES:
            self._encoders.clear()
        self._encoders[category] = encoder
        return encoder

    def _before_append(self, offset: int, size: int) -> ActiveSegment:
        """What must happen before a record of ``size`` bytes goes at ``offset``, rarely: make the
        clean-close note's erasure durable, roll, start preparing the standby. Returns the segment
        to append to, and sets the next offset that needs this again."""
        self._before_first_write()
        segment = self._segment
        assert segment is not None
        if offset > segment.base and offset + size > segment.base + segment.capacity:
            segment = self._roll()
        self._attention_at = segment.base + segment.capacity  # the roll
        if self._standby is not None:
            half_full = segment.base + segment.capacity // 2
            if offset + size > half_full:
                self._standby.start()
            else:
                self._attention_at = half_full
        return segment

    def _before_first_write(self) -> None:
        """Before the bus's files change: the erasure of the clean-close note must be durable, or a
        power cut could leave a note that vouches for files whose unsynced writes were lost."""
        assert self._watermark is not None
        if self._watermark.erasure_pending:
            self._watermark.before_first_write()

    def sync(self) -> int:
        """Make every record appended so far durable and visible to readers; return the end offset.

        Needed only after deferred appends (``append(..., deferred=True)``), or to make the
        records of a ``durability="never"`` writer durable at a point of your choosing.
        """
        self._check_open()
        assert self._segment is not None and self._watermark is not None
        try:
            self._check_in_place()
            self._segment.sync_data()
            self._watermark.publish(self._end, durable=True, synced=True)
        except BaseException as exc:
            if not self._published_despite(exc, self._end, durable=True, synced=True):
                self._stop(exc, "sync failed", self._segment.path)
        return self._end

    def _check_in_place(self) -> None:
        """BusFileChangedError if the bus directory or the watermark was deleted, replaced or truncated
        under the writer. Checked before the writer creates, renames or deletes files by name (a
        roll, retention, repairs), which it must not do in another writer's bus created at the same
        path, and before ``sync()`` promises anything; not per append (see ``check_in_place``)."""
        assert self._lock is not None and self._watermark is not None
        self._lock.check_held()
        self._watermark.check_in_place()

    def _stop(self, exc: BaseException, what: str, path: str, offset: int | None = None) -> NoReturn:
        """Fail-stop: remember the failure, cut back a record that was not published, raise.

        The error raised is typed (BusWriteError) for an OSError; anything else (an
        interrupt) propagates as it is.
        """
        self._failure = exc  # first: an interrupt landing in this handler must still leave the writer stopped
        failure = self._failure = _write_error(exc, what, path, offset)
        segment = self._segment
        if (
            offset is not None
            and segment is not None
            and offset >= segment.base
            and self._unpublished_from(offset)
        ):
            segment.discard_from(offset)
        _raise_as(failure, exc)

    def _unpublished_from(self, offset: int) -> bool:
        """Whether readers were shown nothing from ``offset`` on: the record appended there may be cut
        back. Also once ``_end`` moved past it (an interrupt between the append and its publication:
        the append fails, so the record must not come back at the next open, a duplicate)."""
        if self._end == offset:
            return True
        try:
            published = None if self._watermark is None else self._watermark.published()
        except OSError:
            return False  # cannot tell: the next open's recovery decides
        return published is not None and published.offset <= offset

    def _roll(self) -> ActiveSegment:
        """Seal the active segment durably and start a new one at the current end."""
        assert self._segment is not None
        self._check_in_place()
        old = self._segment
        old.seal(self._end)
        if self._standby is not None:
            self._standby.wait()
        new = ActiveSegment.create(
            self.path, self._end, self.config.index_interval_bytes, self.config.segment_bytes
        )
        self._segment = new
        self._bases.append(new.base)
        old.close()
        return new

    # -- maintenance -------------------------------------------------------------

    def repair_indexes(self) -> list[str]:
        """Check every derived file against a rebuild from its segment and rewrite those that differ.

        Opening only checks closed segments' derived files cheaply (header and size), so
        that it costs the same on any log size, and readers bypass an index whose
        checksum fails. This finds and fixes any damage to offset indexes, category
        indexes and category summaries (`filelog-bus verify --repair`); it reads the
        whole bus. Returns the names of the files rewritten.
        """
        self._check_open()
        assert self._segment is not None
        interval = self.config.index_interval_bytes
        repaired: list[str] = []
        try:
            self._check_in_place()
            self._before_first_write()
            for span in segment_spans(self._bases, self._end):
                if span.base == self._segment.base:
                    repaired += self._segment.repair_derived(span.end, default_interval=interval)
                    continue
                segment = ReadOnlySegment.open(self.path, span.base)
                try:
                    repaired += segment.repair_derived(span.end, default_interval=interval)
                finally:
                    segment.close()
        except CorruptionError:
            raise  # found while reading, before anything was written: nothing to stop for
        except BaseException as exc:
            self._stop(exc, "repairing the indexes failed", self.path)
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
        """Delete closed segments beyond the age or size budget, oldest first; return their file names.

        With ``keep_from``, the age budget spares segments holding offsets >= keep_from. Which
        segments the age budget deletes when the clock went back: docs/RELIABILITY.md, "Time going
        backwards"; ``retention_note`` then says where it stopped, and why.
        """
        self._check_open()
        check_policy(max_age_days, max_bytes)
        spans = segment_spans(self._bases, self._end)
        self._retention_note = None
        try:
            doomed, future_stop = plan_retention_of(
                self.path,
                spans,
                now=time.time() if now is None else now,
                max_age_days=max_age_days,
                max_bytes=max_bytes,
                keep_from=keep_from,
            )
        except OSError as exc:  # reading timestamps, before anything is deleted: the writer goes on
            if not fs.failed_call(exc):
                raise
            raise io_error(exc, "retention could not read the segments' timestamps", self.path) from exc
        if future_stop is not None:
            self._retention_note = future_stop.note()
        deleted: list[str] = []
        try:
            if doomed:
                self._check_in_place()
                self._before_first_write()
            for span in doomed:
                assert self._segment is not None and span.base < self._segment.base  # never the active one
                deleted.append(delete_segment_files(self.path, span.base))
                self._bases.remove(span.base)
        except BaseException as exc:
            self._stop(exc, "retention failed", self.path)
        return deleted


def _write_error(exc: BaseException, failed: str, path: str, offset: int | None = None) -> BaseException:
    """The typed error for a failed write-side call.

    What did not come from a failed system call is kept as it is: an interrupt, and an OSError
    without an errno (what a signal handler raises, a TimeoutError say: not a disk error).
    """
    if not fs.failed_call(exc):
        return exc
    return io_error(
        exc,
        failed,
        path,
        error_type=BusWriteError,
        offset=offset,
        advice_prefix="the record is not visible to readers and earlier records are intact; "
        if offset is not None
        else "",
    )


def _raise_as(failure: BaseException, exc: BaseException) -> NoReturn:
    """Raise ``failure`` (``_write_error``'s for ``exc``), caused by ``exc``, or ``exc`` kept as it is."""
    if failure is exc:
        raise exc
    raise failure from exc
