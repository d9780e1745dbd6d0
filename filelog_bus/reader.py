"""LogReader: reads a bus from any process, without the writer's lock and without writing.

A reader keeps one open segment and one decoded batch of records, so its
memory stays flat whatever the log size. It never reads past the published
watermark, follows the writer across segment rolls, and tolerates retention
deleting the segment it is reading (the open file stays readable).
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator

from filelog_bus import fs
from filelog_bus.bus_directory import DirectoryState, classify, refuse_unless_directory
from filelog_bus.errors import (
    BusClosedError,
    BusDeletedError,
    BusPermissionError,
    ConfigError,
    CorruptionError,
    FilelogBusError,
    InvalidOffsetError,
    NotABusError,
    OffsetOutOfRangeError,
    RecordsExpiredError,
)
from filelog_bus.index import CATEGORY_INDEX, CATEGORY_SUMMARY, OFFSET_INDEX, IndexKind, IndexView
from filelog_bus.layout import WATERMARK_NAME
from filelog_bus.os_errors import io_error, permission_error
from filelog_bus.record import HEADER_SIZE, Record, RecordDecodeError, category_key, validate_category
from filelog_bus.scan import READ_CHUNK, Damage
from filelog_bus.segment import ReadOnlySegment, list_segment_bases
from filelog_bus.wakeup import RECHECK_SECONDS, Waiter
from filelog_bus.watermark import WatermarkReader

#: Bytes read per lookup of one record during seek and find_next.
_LOOKUP_CHUNK = 16 * 1024
#: A cached index of the active segment is reloaded once the segment has grown this much since.
_STALE_INDEX_BYTES = 64 * 1024
#: Index files kept loaded (each up to a few MiB) and category summaries (a few bytes per category).
_CACHED_INDEXES = 4
_CACHED_SUMMARIES = 4096


class LogReader:
    """Reads the bus at ``path``. See docs/API.md."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = 0.0,
        missing_ok: bool = False,
        poll_interval: float = 0.01,
    ) -> None:
        self.path = os.fspath(path)
        self.missing_ok = missing_ok
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or not 0 < poll_interval < math.inf
        ):
            raise ConfigError(
                f"poll_interval must be a number of seconds > 0, got {poll_interval!r}",
                advice="pass how long to sleep between looks at the watermark, e.g. poll_interval=0.01",
            )
        self.poll_interval = float(poll_interval)
        self._timeout: float | None = None
        self.set_timeout(timeout)
        self._open = False
        self._watermark: WatermarkReader | None = None
        self._bases: list[int] = []
        self._segment: ReadOnlySegment | None = None
        self._batch: list[Record] = []
        self._next_in_batch = 0
        self._position = 0
        self._index_cache: OrderedDict[tuple[IndexKind, int], tuple[int, IndexView | None]] = OrderedDict()
        self._summary_cache: OrderedDict[tuple[IndexKind, int], tuple[int, IndexView | None]] = OrderedDict()
        self._chunk = READ_CHUNK
        #: Set while the newest segment's file is behind the watermark: (watermark, segment, its data end).
        self._stalled: tuple[int, ReadOnlySegment, int] | None = None
        #: Sleeps until the watermark moves (made at the first wait; see filelog_bus/wakeup.py).
        self._waiter: Waiter | None = None
        #: The watermark read by the last _has_news, which the waiter sleeps on.
        self._checked_end = 0
        #: The bus directory's (st_dev, st_ino) once the bus exists, and when to check it is still there.
        self._directory_id: tuple[int, int] | None = None
        self._check_bus_at = 0.0

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> LogReader:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> LogReader:
        if self._open:
            return self
        try:
            directory = classify(self.path)
        except OSError as exc:
            if not fs.failed_call(exc):
                raise
            raise self._unopened(exc) from exc
        if directory.state is DirectoryState.UNREADABLE and directory.denied_listing:
            raise self._unlistable(directory.denied) from None
        refuse_unless_directory(directory, "read the bus", missing_ok=self.missing_ok)
        self._open = True
        try:
            self._attach()
            self.seek_to_beginning()
        except BaseException as exc:
            self.close()
            if fs.failed_call(exc):
                raise self._unopened(exc) from exc
            raise
        return self

    def _unopened(self, exc: OSError) -> FilelogBusError:
        """Open's error for a failed call: the errno's advice, then open the reader again."""
        return io_error(
            exc, f"could not open the bus at {self.path} for reading", self.path, then="open the reader again"
        )

    def close(self) -> None:
        self._close_watermark()
        self._directory_id = None  # a reader opened again follows the bus at the path then
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        self._drop_batch()
        self._index_cache.clear()
        self._summary_cache.clear()
        self._open = False

    def _attach(self) -> None:
        """Open the watermark once the bus exists; until then (missing_ok) the bus is empty."""
        if self._watermark is not None:
            return
        if (
            self.missing_ok
            and fs.stat_or_explain(os.path.join(self.path, WATERMARK_NAME), "read the bus") is None
        ):
            return
        self._watermark = WatermarkReader(self.path)
        if self._directory_id is None:
            self._directory_id = _identity(os.stat(self.path))

    def _close_watermark(self) -> None:
        waiter, watermark = self._waiter, self._watermark
        self._waiter = self._watermark = None
        fs.close_all(waiter, watermark)

    def _check_open(self) -> None:
        if not self._open:
            raise BusClosedError(
                f"the reader of {self.path} is not open",
                path=self.path,
                advice="call open() or use it in a with block",
            )

    # -- where things are --------------------------------------------------------

    def set_timeout(self, seconds: float | None) -> None:
        """How long iteration waits at the end of the bus for a new record (None: forever)."""
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0
        ):
            raise ConfigError(
                f"timeout must be a number of seconds >= 0 or None, got {seconds!r}",
                advice="pass how long iteration waits at the end of the bus, e.g. timeout=5.0 (None: forever)",
            )
        self._timeout = None if seconds is None else float(seconds)

    @property
    def position(self) -> int:
        """Offset of the next record iteration will yield (or the end, if none yet)."""
        return self._position

    @property
    def end_offset(self) -> int:
        """End of what readers may read now: the published watermark."""
        self._check_open()
        return self._end()

    @property
    def begin_offset(self) -> int:
        """The oldest offset still on the bus."""
        self._check_open()
        self._refresh_bases()
        return self._bases[0] if self._bases else self._end()

    def _end(self) -> int:
        self._attach()
        return self._watermark.read() if self._watermark is not None else 0

    def _refresh_bases(self) -> None:
        if self._watermark is None:
            self._bases = []
            return
        try:
            self._bases = list_segment_bases(self.path)
        except FileNotFoundError:
            raise NotABusError(f"the bus directory {self.path} was removed", path=self.path) from None
        except PermissionError as exc:
            raise self._unlistable(exc) from None

    def _unlistable(self, exc: OSError) -> BusPermissionError:
        return permission_error(
            exc,
            f"permission denied listing the bus directory {self.path}",
            path=self.path,
            advice="readers need read and search (r-x) permission on it (see docs/RELIABILITY.md, 'Permissions')",
        )

    # -- positioning --------------------------------------------------------------

    def seek_to_beginning(self) -> None:
        """Position on the oldest record still on the bus."""
        self._check_open()
        self._drop_batch()
        while True:
            self._position = self.begin_offset
            end = self._end()
            if self._position >= end:
                return
            # Hold the segment open, as retention may delete it now. A damaged header is
            # reported when the records are read, not here: seeking elsewhere must still work.
            try:
                self._locate(self._position, end)
            except RecordsExpiredError:
                continue  # deleted between listing and opening: the beginning has moved on
            except CorruptionError:
                pass
            return

    def seek(self, offset: int) -> None:
        """Position on the first record whose offset is >= ``offset``."""
        self._check_open()
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise InvalidOffsetError(f"an offset must be an int (a byte position), got {offset!r}")
        end = self._end()
        begin = self._bases[0] if self._bases and offset >= self._bases[0] else self.begin_offset
        if offset < begin or offset > end:
            raise OffsetOutOfRangeError(
                f"cannot seek on the bus at {self.path}", offset=offset, begin=begin, end=end
            )
        self._drop_batch()
        self._position = self._first_record_from(offset, end)
        self._chunk = _LOOKUP_CHUNK  # a seek is often followed by one read: start small

    def _first_record_from(self, offset: int, end: int) -> int:
        if offset >= end:
            return end
        segment, segment_end = self._locate(offset, end)
        start = segment.base
        index = self._index(OFFSET_INDEX, segment.base, segment_end)
        if index is not None:
            count = index.bisect_offset(offset + 1)
            if count:
                start = index.offset_at(count - 1)
        position = start
        while position < segment_end:
            batch = segment.scanner.batch(position, segment_end, _LOOKUP_CHUNK)
            for record in batch.records:
                if record.offset >= offset:
                    return record.offset
            position = self._advance(
                segment, position, batch.consumed, batch.error, bool(batch.records), segment_end
            )
        return segment_end

    def _locate(self, offset: int, end: int) -> tuple[ReadOnlySegment, int]:
        """The segment holding ``offset`` and where its readable records end."""
        for attempt in range(3):
            if attempt:
                self._refresh_bases()
            i = bisect_right(self._bases, offset) - 1
            if i < 0:
                if attempt:
                    raise self._expired(offset, end)
                continue
            base = self._bases[i]
            try:
                segment = self._open_segment(base)
            except FileNotFoundError:
                continue
            if i + 1 < len(self._bases):
                # A closed segment may end past the watermark (deferred appends, then a roll).
                return segment, min(self._bases[i + 1], end)
            segment_end = min(end, segment.file_end())
            if offset < segment_end or attempt == 2:
                return segment, segment_end
        raise self._expired(offset, end)

    def _expired(self, offset: int, end: int) -> OffsetOutOfRangeError:
        begin = self._bases[0] if self._bases else end
        if offset < begin:
            return RecordsExpiredError(
                f"retention deleted the records at {self.path} before this reader got to them; "
                f"seek to the oldest offset {begin} to go on, knowing records were missed",
                offset=offset,
                begin=begin,
                end=end,
            )
        return OffsetOutOfRangeError(
            f"no segment of {self.path} holds this offset", offset=offset, begin=begin, end=end
        )

    def _open_segment(self, base: int) -> ReadOnlySegment:
        if self._segment is not None and self._segment.base == base:
            return self._segment
        segment = ReadOnlySegment.open(self.path, base)
        if self._segment is not None:
            self._segment.close()
        self._segment = segment
        return segment

    def _index(self, kind: IndexKind, base: int, end: int) -> IndexView | None:
        """An index of a segment, trusted below ``end``; the most recently used few are cached."""
        summary = kind is CATEGORY_SUMMARY
        cache = self._summary_cache if summary else self._index_cache
        key = (kind, base)
        cached = cache.get(key)
        if cached is not None and cached[0] <= end < cached[0] + _STALE_INDEX_BYTES:
            cache.move_to_end(key)
            return cached[1]  # entries it lacks only make lookups scan a little more
        view = kind.load(self.path, base, end)
        cache[key] = (end, view)
        if len(cache) > (_CACHED_SUMMARIES if summary else _CACHED_INDEXES):
            cache.popitem(last=False)
        return view

    def _advance(
        self,
        segment: ReadOnlySegment,
        position: int,
        consumed: int,
        error: RecordDecodeError | None,
        got_records: bool,
        segment_end: int,
    ) -> int:
        """Where to read next after a batch; raises on damage or a record cut by the segment end."""
        if not got_records:
            if error is None:
                error = RecordDecodeError(
                    f"record extends past the end of its segment's data at {segment_end}"
                )
            raise segment.corruption(Damage(position + consumed, str(error), False))
        return position + consumed

    def _drop_batch(self) -> None:
        self._batch = []
        self._next_in_batch = 0
        self._stalled = None

    # -- reading ----------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        """Yield records from the position; at the end wait up to the timeout for more."""
        self._check_open()
        while True:
            record = self._read_next()
            if record is not None:
                yield record
            elif not self.wait_for_records():
                return

    def read_next(self) -> Record | None:
        """The next record if one is on the bus now, else None (never waits)."""
        self._check_open()
        return self._read_next()

    def _read_next(self) -> Record | None:
        if self._next_in_batch < len(self._batch):
            record = self._batch[self._next_in_batch]
            self._next_in_batch += 1
            self._position = record.offset + record.size
            return record
        end = self._end()
        position = self._position
        if position >= end:
            return None
        segment, segment_end = self._locate(position, end)
        if position >= segment_end:
            return self._stall(end, segment)
        batch = segment.scanner.batch(position, segment_end, self._chunk)
        self._chunk = min(self._chunk * 4, READ_CHUNK)
        if not batch.records:
            file_behind = batch.error is None and segment_end < end and segment_end == segment.file_end()
            # The same crash state in a preallocated segment: zeros below the watermark where a record
            # should start or, past what an unsynced writer made durable, any damage (which the
            # writer's recovery cuts as a torn tail).
            lost = (
                batch.error is not None
                and segment.base == self._bases[-1]
                and (not self._watermark_durable() or segment.unwritten_at(position))
            )
            if file_behind or lost:
                return self._stall(end, segment)
            self._advance(segment, position, batch.consumed, batch.error, False, segment_end)
        self._batch = batch.records
        self._next_in_batch = 0
        return self._read_next()

    def _watermark_durable(self) -> bool:
        return self._watermark is None or self._watermark.durable

    def _stall(self, watermark: int, segment: ReadOnlySegment) -> None:
        """The newest segment's data ends before the watermark (a crash state, until a writer recovers
        the bus): until the watermark or the file changes, behave as at the end of the bus."""
        self._stalled = (watermark, segment, segment.file_end())

    def _has_news(self) -> bool:
        """Whether a record may be read after the position now."""
        end = self._checked_end = self._end()
        if end <= self._position:
            return False
        if self._stalled is not None:
            watermark, segment, data_end = self._stalled
            if end == watermark and segment.fd >= 0 and segment.file_end() == data_end:
                return False
            self._stalled = None
        return True

    def wait_for_records(self) -> bool:
        """Wait, up to the timeout, until a record is on the bus after the position; False if none came.

        Sleeps until the writer's wake-up (filelog_bus/wakeup.py), re-checking the watermark every
        ``RECHECK_SECONDS`` anyway; sleep-polls every ``poll_interval`` where the wake-up is unavailable, and
        until the bus exists. BusDeletedError once the bus was deleted (or created again) under it.
        """
        self._check_open()
        if self._has_news():
            return True
        self._check_same_bus()
        timeout = self._timeout
        if timeout == 0:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._pause(remaining)
            if self._has_news():
                if not self._bases:
                    self._refresh_bases()
                return True
            self._check_same_bus()

    def _pause(self, limit: float | None) -> None:
        """Sleep until the watermark may have moved, at most ``limit`` seconds (None: no limit)."""
        watermark = self._watermark
        if watermark is None:  # no bus yet (missing_ok): poll for it
            time.sleep(self.poll_interval if limit is None else min(self.poll_interval, limit))
            return
        if self._waiter is None:
            self._waiter = Waiter(watermark.fd, self.poll_interval)
        self._waiter.pause(self._checked_end, limit)  # what _has_news read: a change since wakes at once

    def _check_same_bus(self) -> None:
        """BusDeletedError if the bus was deleted, or deleted and created again, under this reader
        (every RECHECK_SECONDS at most: two stats). A watermark file rebuilt by a writer in the same
        directory, while the segment this reader holds is still there, is re-opened instead."""
        watermark = self._watermark
        now = time.monotonic()
        if watermark is None or now < self._check_bus_at:
            return
        self._check_bus_at = now + RECHECK_SECONDS
        try:
            directory = _stat_or_none(self.path)
            if directory is None or _identity(directory) != self._directory_id:
                raise self._deleted(recreated=directory is not None)
            current = _stat_or_none(watermark.path)
            if current is not None and _identity(current) == _identity(os.fstat(watermark.fd)):
                return
            segment = self._segment
            held = None if segment is None or segment.fd < 0 else _stat_or_none(segment.path)
            if (
                held is not None
                and segment is not None
                and _identity(held) == _identity(os.fstat(segment.fd))
            ):
                if current is not None:  # a writer rebuilt the watermark file: read the new one
                    self._close_watermark()
                    self._attach()
                return  # (no watermark file: a live writer still publishes in the one this reader has open)
            if current is not None and held is None and self._position == 0:
                # nothing read yet (an empty bus): offset 0 means the same on whatever bus is there now
                self._close_watermark()
                self._attach()
                return
            if current is None and not list_segment_bases(self.path):
                raise self._deleted(recreated=False)
            if current is not None:
                raise self._deleted(recreated=True)
        except FileNotFoundError:  # the directory went while it was looked at
            raise self._deleted(recreated=False) from None
        except PermissionError:
            return  # cannot tell; reading reports it, with advice

    def _deleted(self, *, recreated: bool) -> BusDeletedError:
        what = "deleted and created again" if recreated else "deleted"
        return BusDeletedError(
            f"the bus at {self.path} was {what} while this reader was reading it"
            + (": its offsets mean nothing on the new bus" if recreated else ""),
            path=self.path,
            recreated=recreated,
            advice="open a new reader"
            + (
                " and seek from the new bus's beginning (reset the consumers' offsets)"
                if recreated
                else " once the bus is there again"
            )
            + "; see docs/RELIABILITY.md, 'A bus deleted under its readers'",
        )

    # -- category lookup ----------------------------------------------------------

    def find_next_waiting(self, category: str) -> Record | None:
        """Like find_next, but consuming and waiting, as iteration does.

        When no record of ``category`` is on the bus, the position moves to the end
        of what was searched and the reader waits up to the timeout for more records,
        searching each time some come. None once the timeout elapses with none found.
        """
        while True:
            searched_to = self.end_offset
            record = self.find_next(category)
            if record is not None:
                return record
            if searched_to > self._position:
                self.seek(searched_to)  # do not search that stretch again
            if not self.wait_for_records():
                return None

    def find_next(self, category: str) -> Record | None:
        """First record of ``category`` at or after the position, among those on the bus now.

        Uses the category index: only records of the index blocks that may hold
        ``category`` are decoded. On success the position moves past the record;
        on None it stays where it was.
        """
        self._check_open()
        validate_category(category)
        key = category_key(category)
        end = self._end()
        position = self._position
        while position < end:
            segment, segment_end = self._locate(position, end)
            if position >= segment_end:
                break
            if not self._may_hold(segment, segment_end, key):
                position = segment_end
                continue
            found = self._find_in_segment(segment, segment_end, position, category, key)
            if found is not None:
                self._drop_batch()
                self._position = found.offset + found.size
                return found
            position = segment_end
        return None

    def _may_hold(self, segment: ReadOnlySegment, segment_end: int, key: int) -> bool:
        """False when a closed segment's category summary shows no category with this key."""
        if segment.base == self._bases[-1]:
            return True  # the active segment has no summary yet
        summary = self._index(CATEGORY_SUMMARY, segment.base, segment_end)
        return summary is None or summary.find_key(key, 0) >= 0

    def _find_in_segment(
        self, segment: ReadOnlySegment, segment_end: int, position: int, category: str, key: int
    ) -> Record | None:
        index = self._index(CATEGORY_INDEX, segment.base, segment_end)
        if index is None:
            return self._scan_for(segment, position, segment_end, category, None)[0]
        base, interval = segment.base, index.interval
        found, position = self._scan_for(
            segment, position, segment_end, category, _block_end(base, interval, position)
        )
        if found is not None or position >= segment_end:
            return found
        if not index.count:
            return self._scan_for(segment, position, segment_end, category, None)[0]
        # Blocks before the last indexed one are fully covered: an entry marks the
        # first record of the category in each block that holds one.
        last_block_start = base + (index.offset_at(index.count - 1) - base) // interval * interval
        i = index.find_key(key, index.bisect_offset(position))
        while i >= 0:
            candidate = index.offset_at(i)
            if candidate >= last_block_start:
                break
            record = self._record_at(segment, candidate, segment_end)
            if record.category == category:
                return record
            # Another category with the same key came first in this block: ours may follow it.
            block_end = _block_end(base, interval, candidate)
            record = self._scan_for(segment, candidate, segment_end, category, block_end)[0]
            if record is not None:
                return record
            i = index.find_key(key, i + 1)
        start = max(position, index.offset_at(index.bisect_offset(last_block_start)))
        return self._scan_for(segment, start, segment_end, category, None)[0]

    def _record_at(self, segment: ReadOnlySegment, offset: int, segment_end: int) -> Record:
        batch = segment.scanner.batch(offset, segment_end, _LOOKUP_CHUNK)
        if not batch.records:
            self._advance(segment, offset, 0, batch.error, False, segment_end)
        return batch.records[0]

    def _scan_for(
        self, segment: ReadOnlySegment, position: int, end: int, category: str, stop_at: int | None
    ) -> tuple[Record | None, int]:
        """Scan records from ``position``: the first of ``category``, or where the scan stopped.

        With ``stop_at``, only records starting before it are looked at.
        """
        while position < end:
            if stop_at is None:
                batch = segment.scanner.batch(position, end)
            else:  # read no further than the block: a longer record is read whole anyway
                batch = segment.scanner.batch(position, end, max(stop_at - position, HEADER_SIZE))
            for record in batch.records:
                if stop_at is not None and record.offset >= stop_at:
                    return None, record.offset
                if record.category == category:
                    return record, record.offset
            position = self._advance(segment, position, batch.consumed, batch.error, bool(batch.records), end)
        return None, position


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _block_end(base: int, interval: int, offset: int) -> int:
    """Where the index block holding ``offset`` ends (records starting before it belong to it)."""
    return base + ((offset - base) // interval + 1) * interval
