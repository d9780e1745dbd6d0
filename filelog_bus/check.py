"""Read-only inspection of a bus: statistics, verification and a retention preview.

The operator CLI formats what these functions return; nothing here prints. Nothing here
takes the writer lock or opens a file for writing either, so it is safe to run on a bus a
live writer is appending to, rolling and applying retention to, and on a bus the user may
only read. Only records below the published watermark are looked at: bytes past it belong
to an append in progress, not to damage.
"""

from __future__ import annotations

import itertools
import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from filelog_bus.errors import CorruptionError, NotABusError
from filelog_bus.fsutil import open_or_explain
from filelog_bus.index import IndexRebuild
from filelog_bus.layout import (
    CATEGORY_ENTRY,
    CATEGORY_INDEX_MAGIC,
    CATEGORY_SUMMARY_MAGIC,
    FILE_HEADER_SIZE,
    LOCK_NAME,
    OFFSET_ENTRY,
    OFFSET_INDEX_MAGIC,
    SEGMENT_MAGIC,
    WATERMARK_NAME,
    LayoutError,
    category_index_name,
    category_summary_name,
    decode_file_header,
    encode_file_header,
    offset_index_name,
    segment_name,
)
from filelog_bus.record import Record, RecordDecodeError
from filelog_bus.retention import plan_retention, read_newest_timestamp, segment_spans
from filelog_bus.segment import LogSegment, list_segment_bases
from filelog_bus.watermark import WatermarkReader

#: ``progress(bytes_done, bytes_total)``: called as records are read, for a progress bar.
Progress = Callable[[int, int], None]

#: How long verify waits before re-checking the newest segment once: a writer that is opening
#: the bus rewrites the tail of that segment's indexes, which must not be reported as damage.
_ACTIVE_RECHECK_DELAY = 0.2

_INDEX_ADVICE = (
    "indexes are derived data: `filelog-bus verify --repair` rebuilds it (until then readers scan the "
    "segment instead)"
)
_RECORD_ADVICE = "restore the segment from a backup: readers stop with an error at this offset"


# -- what a directory is --------------------------------------------------------


def bus_state(path: str) -> str:
    """``"missing"`` (a writer may create it), ``"empty"`` (an empty directory) or ``"bus"``.

    Raises NotABusError for anything a writer would refuse, without creating anything.
    """
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise NotABusError(f"{path} does not exist, nor does its parent directory {parent}")
        return "missing"
    if not os.path.isdir(path):
        raise NotABusError(f"{path} is not a directory, so it is not a filelog-bus")
    names = set(os.listdir(path))
    if names <= {LOCK_NAME, WATERMARK_NAME + ".new"}:
        return "empty"
    if WATERMARK_NAME in names or list_segment_bases(path):
        return "bus"
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    raise NotABusError(f"{path} holds no filelog-bus (it has no watermark file and no segment: {shown})")


def require_bus(path: str) -> None:
    """Raise NotABusError unless ``path`` already holds a bus (so that nothing creates one there)."""
    state = bus_state(path)
    if state != "bus":
        raise NotABusError(
            f"no bus at {path}: the directory {'does not exist' if state == 'missing' else 'is empty'}"
        )


def index_interval(path: str) -> int | None:
    """The index block size of the newest segment (its offset index's header), or None if unreadable."""
    bases = list_segment_bases(path)
    if not bases:
        return None
    try:
        with open(os.path.join(path, offset_index_name(bases[-1])), "rb") as file:
            _, interval = decode_file_header(OFFSET_INDEX_MAGIC, file.read(FILE_HEADER_SIZE))
    except (OSError, LayoutError):
        return None
    return interval or None


# -- a consistent view of the segments ----------------------------------------------


class _Span(NamedTuple):
    """A segment as listed: its records lie in [base, end); the newest one is still growing."""

    base: int
    end: int
    newest: bool


def _read_watermark(path: str) -> int:
    reader = WatermarkReader(path)
    try:
        return reader.read()
    finally:
        reader.close()


def _spans(bases: list[int], watermark: int) -> list[_Span]:
    """Closed segments end where the next begins; the newest one at the watermark."""
    ends = [*bases[1:], watermark]
    return [
        _Span(base, max(end, base), i == len(bases) - 1)
        for i, (base, end) in enumerate(zip(bases, ends, strict=True))
    ]


def _list_and_read_watermark(path: str) -> tuple[list[int], int]:
    """Segment bases, then the watermark: read in this order, every listed base is <= the watermark."""
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise NotABusError(f"{path} is not a directory, so it is not a filelog-bus")
        raise NotABusError(f"no bus at {path}: the directory does not exist; check the path")
    bases = list_segment_bases(path)
    return bases, _read_watermark(path)


class _Damage(NamedTuple):
    """Bytes at ``offset`` that are not a complete valid record; ``resume`` is the next valid one."""

    offset: int
    reason: str
    resume: int | None


def _scan(segment: LogSegment, start: int, end: int) -> Iterator[Record | _Damage]:
    """Every record in [start, end), and a _Damage wherever bytes do not decode (then go on)."""
    position = start
    while position < end:
        batch = segment.read_batch(position, end)
        yield from batch.records
        position += batch.consumed
        if batch.error is None and batch.records:
            continue
        if position >= end:
            return
        if batch.error is not None:
            reason = str(batch.error)
        else:
            reason = f"the record is cut short: the segment's records end at offset {end}"
        resume = segment.find_valid_record(position + 1, end)
        yield _Damage(position, reason, resume)
        if resume is None:
            return
        position = resume


def _open_segment(path: str, base: int) -> LogSegment | None:
    """Open a segment read-only; None when retention deleted it since it was listed."""
    try:
        return LogSegment.open(path, base)
    except FileNotFoundError:
        return None


def _being_created(path: str, base: int) -> bool:
    """Whether a segment's file holds only the start of its header: a writer is creating it (it
    creates the file, then writes the header), or crashed doing so (the next writer finishes it)."""
    try:
        with open(os.path.join(path, segment_name(base)), "rb") as file:
            existing = file.read(FILE_HEADER_SIZE)
    except FileNotFoundError:
        return False
    return len(existing) < FILE_HEADER_SIZE and encode_file_header(SEGMENT_MAGIC, base).startswith(existing)


# -- stats -------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentStats:
    """One segment: where its records lie and how many there are."""

    name: str
    base: int
    #: Offset just past its last readable record (where the next segment or record starts).
    end: int
    file_size: int
    record_count: int
    first_offset: int | None
    last_offset: int | None
    first_time: float | None
    last_time: float | None
    #: The newest segment, the one the writer appends to.
    active: bool

    @property
    def bytes(self) -> int:
        return self.end - self.base


@dataclass(frozen=True)
class BusStats:
    """What is on a bus, as of the watermark read when the stats were taken."""

    path: str
    segments: list[SegmentStats]
    record_count: int
    #: Bytes of records (offsets from the oldest to the end).
    bytes: int
    #: Bytes of every file in the bus directory (segments, indexes, watermark, lock).
    disk_bytes: int
    #: Record count per category, most frequent first.
    categories: dict[str, int]
    #: Oldest offset still on the bus, and the offset the next record will get.
    begin_offset: int
    end_offset: int
    oldest_offset: int | None
    oldest_time: float | None
    newest_offset: int | None
    newest_time: float | None


def bus_stats(path: str, progress: Progress | None = None) -> BusStats:
    """Read every record below the watermark once. CorruptionError on a damaged record."""
    path = os.fspath(path)
    bases, watermark = _list_and_read_watermark(path)
    spans = _spans(bases, watermark)
    total = sum(span.end - span.base for span in spans)
    done = 0
    segments: list[SegmentStats] = []
    categories: Counter[str] = Counter()
    for span in spans:
        if span.newest and span.end <= span.base and _being_created(path, span.base):
            segments.append(_empty_segment_stats(path, span.base))
            continue
        segment = _open_segment(path, span.base)
        if segment is None:
            continue
        try:
            end = min(span.end, segment.end())
            count, first, last = 0, None, None
            for item in _scan(segment, span.base, end):
                if isinstance(item, _Damage):
                    raise segment.corruption(item.offset, RecordDecodeError(item.reason))
                count += 1
                categories[item.category] += 1
                if first is None:
                    first = item
                last = item
                if progress is not None and count % 1024 == 0:
                    progress(done + item.offset - span.base, total)
            done += span.end - span.base
            if progress is not None:
                progress(done, total)
            segments.append(
                SegmentStats(
                    name=segment_name(span.base),
                    base=span.base,
                    end=end,
                    file_size=os.fstat(segment.fd).st_size,
                    record_count=count,
                    first_offset=first.offset if first else None,
                    last_offset=last.offset if last else None,
                    first_time=first.timestamp if first else None,
                    last_time=last.timestamp if last else None,
                    active=span.newest,
                )
            )
        finally:
            segment.close()
    with_records = [s for s in segments if s.record_count]
    oldest = with_records[0] if with_records else None
    newest = with_records[-1] if with_records else None
    begin = segments[0].base if segments else watermark
    return BusStats(
        path=path,
        segments=segments,
        record_count=sum(s.record_count for s in segments),
        bytes=watermark - begin,
        disk_bytes=_disk_bytes(path),
        categories=dict(sorted(categories.items(), key=lambda item: (-item[1], item[0]))),
        begin_offset=begin,
        end_offset=watermark,
        oldest_offset=oldest.first_offset if oldest else None,
        oldest_time=oldest.first_time if oldest else None,
        newest_offset=newest.last_offset if newest else None,
        newest_time=newest.last_time if newest else None,
    )


def _empty_segment_stats(path: str, base: int) -> SegmentStats:
    try:
        size = os.stat(os.path.join(path, segment_name(base))).st_size
    except FileNotFoundError:
        size = 0
    return SegmentStats(segment_name(base), base, base, size, 0, None, None, None, None, True)


def _disk_bytes(path: str) -> int:
    total = 0
    for name in os.listdir(path):
        try:
            total += os.stat(os.path.join(path, name)).st_size
        except FileNotFoundError:
            continue  # deleted by retention meanwhile
    return total


# -- verify --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bus file; positions are None when the problem is the whole file."""

    #: File name inside the bus directory.
    file: str
    #: Byte position in that file.
    file_position: int | None
    #: Bus offset, when the problem is about a record.
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.file_position is not None:
            where += f" at file position {self.file_position}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verify_bus: healthy when ``problems`` is empty."""

    path: str
    segments: int
    records: int
    #: Bytes of records checked.
    bytes: int
    index_files: int
    #: Records were checked up to this offset (the watermark), or to the last complete record when
    #: the watermark is unreadable (None).
    checked_to: int | None
    problems: list[Problem]
    #: Things worth knowing that are not damage (an index the writer has not finished, a segment that
    #: retention deleted while it was being checked).
    notes: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems


class _IndexKind(NamedTuple):
    label: str
    magic: bytes
    entry: struct.Struct
    file_name: Callable[[int], str]
    per_category: bool
    #: The entries of this file in a rebuild.
    rebuilt_entries: Callable[[IndexRebuild], list[tuple[int, float]] | list[tuple[int, int]]]


_OFFSET_INDEX = _IndexKind(
    "offset index", OFFSET_INDEX_MAGIC, OFFSET_ENTRY, offset_index_name, False, lambda r: r.offset_entries
)
_CATEGORY_INDEX = _IndexKind(
    "category index",
    CATEGORY_INDEX_MAGIC,
    CATEGORY_ENTRY,
    category_index_name,
    True,
    lambda r: r.category_entries,
)
#: Closed segments only: the active segment has none until it is rolled.
_CATEGORY_SUMMARY = _IndexKind(
    "category summary",
    CATEGORY_SUMMARY_MAGIC,
    CATEGORY_ENTRY,
    category_summary_name,
    True,
    lambda r: [*r.summary_entries, (r.end, 0)],  # with the completeness mark
)


@dataclass
class _IndexFile:
    """One index file as read, and the rebuild it is compared with (None if its header is bad)."""

    kind: _IndexKind
    name: str
    data: bytes | None
    rebuild: IndexRebuild | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class _SegmentCheck:
    records: int = 0
    bytes: int = 0
    index_files: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify_bus(path: str, progress: Progress | None = None) -> VerifyReport:
    """Check every record, the continuity of the segments, every index and the watermark.

    Raises NotABusError when ``path`` is not a bus; everything else wrong is a Problem.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        _list_and_read_watermark(path)  # raises the right NotABusError
    bases = list_segment_bases(path)
    problems: list[Problem] = []
    notes: list[str] = []
    watermark: int | None
    try:
        watermark = _read_watermark(path)
    except NotABusError:
        if not bases:
            raise
        watermark = None
        problems.append(
            Problem(
                WATERMARK_NAME,
                None,
                None,
                "the watermark file is missing: readers refuse the bus; "
                "open the bus once with a writer to recreate it",
            )
        )
    except CorruptionError as exc:
        watermark = None
        problems.append(Problem(WATERMARK_NAME, exc.offset, None, _bare_message(exc)))
    problems += _check_continuity(path, bases)
    ends = [*bases[1:], watermark]
    total = sum(max(end, base) - base for base, end in zip(bases, ends, strict=True) if end is not None)
    done = 0
    report = _SegmentCheck()
    for i, base in enumerate(bases):
        newest = i == len(bases) - 1
        end = ends[i]
        check = _verify_segment(path, base, end, newest, progress, done, total)
        if newest and check.problems:
            time.sleep(_ACTIVE_RECHECK_DELAY)
            check = _verify_segment(path, base, end, newest, progress, done, total)
        done += check.bytes
        report.records += check.records
        report.bytes += check.bytes
        report.index_files += check.index_files
        problems += check.problems
        notes += check.notes
    if watermark is not None and bases:
        problems += _check_watermark(path, bases[-1], watermark)
    if progress is not None:
        progress(total, total)
    return VerifyReport(
        path=path,
        segments=len(bases),
        records=report.records,
        bytes=report.bytes,
        index_files=report.index_files,
        checked_to=watermark,
        problems=problems,
        notes=notes,
    )


def _bare_message(exc: CorruptionError) -> str:
    """The error's message without the "(path at file position N)" that a Problem shows apart."""
    message = str(exc)
    cut = message.rfind(f" ({exc.path}")
    return message[:cut] if cut > 0 else message


def _check_continuity(path: str, bases: list[int]) -> list[Problem]:
    """Each closed segment must end exactly where the next one begins."""
    problems = []
    for base, next_base in itertools.pairwise(bases):
        name = segment_name(base)
        try:
            size = os.stat(os.path.join(path, name)).st_size
        except FileNotFoundError:
            continue  # deleted by retention since it was listed
        end = base + size - FILE_HEADER_SIZE
        if end != next_base:
            how = "truncated" if end < next_base else "extended"
            problems.append(
                Problem(
                    name,
                    size,
                    None,
                    f"the segment ends at offset {end} but the next segment starts at {next_base}: "
                    f"the file was {how}, and a writer refuses to open the bus until it is repaired; "
                    f"restore the segment from a backup",
                )
            )
    return problems


def _check_watermark(path: str, newest_base: int, watermark: int) -> list[Problem]:
    """The watermark must lie inside the newest segment's data (a writer publishes after writing)."""
    bases = list_segment_bases(path)
    if not bases or bases[-1] != newest_base:
        return []  # the writer rolled (or retention ran) meanwhile: the check no longer applies
    try:
        data_end = (
            newest_base + os.stat(os.path.join(path, segment_name(newest_base))).st_size - FILE_HEADER_SIZE
        )
    except FileNotFoundError:
        return []
    if watermark <= data_end:
        return []
    return [
        Problem(
            WATERMARK_NAME,
            FILE_HEADER_SIZE,
            None,
            f"the watermark says records are published up to offset {watermark} but the newest segment's "
            f"data ends at {data_end}: the bus was not recovered after a crash; open it once with a writer",
        )
    ]


def _verify_segment(
    path: str, base: int, end: int | None, newest: bool, progress: Progress | None, done: int, total: int
) -> _SegmentCheck:
    """Records of one segment, then both its indexes against a rebuild from those records."""
    check = _SegmentCheck()
    name = segment_name(base)
    if newest and (end is None or end <= base) and _being_created(path, base):
        check.notes.append(
            f"{name} (the newest segment) has no complete header yet: a writer is creating it, or "
            f"crashed while creating it (the next writer finishes it)"
        )
        return check
    try:
        segment = LogSegment.open(path, base)
    except FileNotFoundError:
        check.notes.append(f"{name} was deleted (by retention) while the bus was being checked")
        return check
    except CorruptionError as exc:
        check.problems.append(Problem(name, exc.offset, None, _bare_message(exc)))
        # A damaged header hides nothing else: check the records and indexes all the same.
        segment = LogSegment(path, base, open_or_explain(os.path.join(path, name), os.O_RDONLY), False)
    try:
        kinds = (
            (_OFFSET_INDEX, _CATEGORY_INDEX)
            if newest
            else (_OFFSET_INDEX, _CATEGORY_INDEX, _CATEGORY_SUMMARY)
        )
        indexes = [_read_index(path, base, kind) for kind in kinds]
        file_end = segment.end()
        scan_end = file_end if end is None else max(base, min(end, file_end))
        damaged_at = None
        for item in _scan(segment, base, scan_end):
            if isinstance(item, _Damage):
                damaged_at = item.offset if damaged_at is None else damaged_at
                if end is None and item.resume is None and newest:
                    break  # no watermark to trust: an incomplete tail may be an append in progress
                check.problems.append(_damage_problem(segment, item, scan_end))
                continue
            check.records += 1
            if damaged_at is None:
                for index in indexes:
                    if index.rebuild is not None:
                        index.rebuild.add(item)
            if progress is not None and check.records % 1024 == 0:
                progress(done + item.offset - base, total)
        check.bytes = scan_end - base
        segment_gone = not os.path.exists(segment.path)
    finally:
        segment.close()
    if segment_gone:
        check.notes.append(f"{name} was deleted (by retention) while the bus was being checked")
        return check
    for index in indexes:
        if index.data is not None:
            check.index_files += 1
        # A rebuild stops at damage: entries from there on cannot be judged, nor can a summary
        # of the whole segment.
        judged_to = scan_end if damaged_at is None else damaged_at
        if damaged_at is None or index.kind is not _CATEGORY_SUMMARY:
            _compare_index(index, judged_to, complete=not newest and damaged_at is None, lenient=newest)
        check.problems += index.problems
        if newest and index.rebuild is not None and index.data is not None:
            lag = _lag(index)
            if lag:
                check.notes.append(
                    f"{index.name}: the {index.kind.label} of the newest segment lacks its last "
                    f"{_entries_count(lag)} (normal after a crash or while a writer opens the bus: readers scan those "
                    f"blocks, and the writer completes the index)"
                )
    return check


def _damage_problem(segment: LogSegment, damage: _Damage, end: int) -> Problem:
    if damage.resume is None:
        extent = f"no valid record follows before offset {end}"
    else:
        extent = f"{damage.resume - damage.offset} bytes are unreadable, up to the next valid record at offset {damage.resume}"
    return Problem(
        segment_name(segment.base),
        segment.file_position(damage.offset),
        damage.offset,
        f"damaged record: {damage.reason}; {extent}; {_RECORD_ADVICE}",
    )


def _read_index(path: str, base: int, kind: _IndexKind) -> _IndexFile:
    """Read an index file and check its header; set up the rebuild to compare it with."""
    name = kind.file_name(base)
    try:
        with open(os.path.join(path, name), "rb") as file:
            data = file.read()
    except FileNotFoundError:
        index = _IndexFile(kind, name, None)
        index.problems.append(Problem(name, None, None, f"the {kind.label} file is missing; {_INDEX_ADVICE}"))
        return index
    index = _IndexFile(kind, name, data)
    try:
        recorded_base, interval = decode_file_header(kind.magic, data)
    except LayoutError as exc:
        index.problems.append(Problem(name, 0, None, f"bad {kind.label} file header: {exc}; {_INDEX_ADVICE}"))
        return index
    if recorded_base != base:
        index.problems.append(
            Problem(
                name,
                0,
                None,
                f"the {kind.label} header says base offset {recorded_base} but the file name says {base}; "
                f"{_INDEX_ADVICE}",
            )
        )
    elif interval <= 0:
        index.problems.append(
            Problem(name, 0, None, f"the {kind.label} header gives an index block size of 0; {_INDEX_ADVICE}")
        )
    else:
        index.rebuild = IndexRebuild(base, interval)
    return index


def _entries(index: _IndexFile) -> list[tuple[int, int | float, int]]:
    assert index.data is not None
    size = index.kind.entry.size
    count = (len(index.data) - FILE_HEADER_SIZE) // size
    return [index.kind.entry.unpack_from(index.data, FILE_HEADER_SIZE + i * size) for i in range(count)]


def _lag(index: _IndexFile) -> int:
    """How many entries a rebuild has beyond the file's (for the newest segment)."""
    assert index.rebuild is not None
    return max(len(index.kind.rebuilt_entries(index.rebuild)) - len(_entries(index)), 0)


def _compare_index(index: _IndexFile, end: int, *, complete: bool, lenient: bool) -> None:
    """Check the chained CRC and that each entry is what a rebuild would write.

    ``end``: the rebuild covers the records below it. ``complete``: the segment is closed and
    undamaged, so the file must hold exactly the rebuilt entries. ``lenient`` (the newest segment):
    entries past the rebuilt ones belong to an append in progress unless they index a record below
    ``end``, and missing trailing entries are not damage.
    """
    if index.data is None or index.rebuild is None:
        return
    kind, data, expected = index.kind, index.data, index.kind.rebuilt_entries(index.rebuild)
    size = kind.entry.size
    entries = _entries(index)
    if lenient:
        checked = min(len(entries), len(expected))
        extra = [i for i in range(checked, len(entries)) if entries[i][0] < end]
    else:
        checked = len(entries)
        extra = list(range(len(expected), len(entries))) if complete else []
        trailing = (len(data) - FILE_HEADER_SIZE) % size
        if trailing:
            index.problems.append(
                Problem(
                    index.name,
                    len(data) - trailing,
                    None,
                    f"the {kind.label} ends with {trailing} bytes of an incomplete entry; {_INDEX_ADVICE}",
                )
            )
    crc_ok = _check_chained_crc(index, checked)
    compared = min(checked, len(expected))
    differing = [i for i in range(compared) if crc_ok[i] and entries[i][:2] != expected[i]]
    if differing:
        i = differing[0]
        more = f" (and {_entries_count(len(differing) - 1)} more differ)" if len(differing) > 1 else ""
        index.problems.append(
            Problem(
                index.name,
                FILE_HEADER_SIZE + i * size,
                entries[i][0],
                f"{kind.label} entry {i} is {_show_entry(kind, entries[i][:2])} but a rebuild from the segment "
                f"gives {_show_entry(kind, expected[i])}{more}: readers trust this entry and may skip or "
                f"misplace records; {_INDEX_ADVICE}",
            )
        )
    if extra:
        index.problems.append(
            Problem(
                index.name,
                FILE_HEADER_SIZE + extra[0] * size,
                entries[extra[0]][0],
                f"the {kind.label} has {_entries_count(len(extra))} more than a rebuild from the segment; "
                f"{_INDEX_ADVICE}",
            )
        )
    if complete and len(entries) < len(expected):
        index.problems.append(
            Problem(
                index.name,
                FILE_HEADER_SIZE + len(entries) * size,
                expected[len(entries)][0],
                f"the {kind.label} lacks its last {_entries_count(len(expected) - len(entries))} (a rebuild "
                f"from the segment has {len(expected)}): readers scan the blocks it lacks; {_INDEX_ADVICE}",
            )
        )


def _check_chained_crc(index: _IndexFile, count: int) -> list[bool]:
    """Check the chained CRC of the first ``count`` entries; report each entry whose CRC fails.

    After a failure the chain goes on from the stored CRC, so one damaged entry is reported once.
    """
    assert index.data is not None
    size = index.kind.entry.size
    ok = []
    running = 0
    for i in range(count):
        position = FILE_HEADER_SIZE + i * size
        key = index.data[position : position + size - 4]
        stored = int.from_bytes(index.data[position + size - 4 : position + size], "little")
        good = zlib.crc32(key, running) == stored
        ok.append(good)
        if not good:
            index.problems.append(
                Problem(
                    index.name,
                    position,
                    None,
                    f"{index.kind.label} entry {i} fails its chained CRC: the file is damaged (readers "
                    f"ignore the whole index and scan the segment); {_INDEX_ADVICE}",
                )
            )
        running = zlib.crc32(stored.to_bytes(4, "little"), stored)
    return ok


def _entries_count(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def _show_entry(kind: _IndexKind, entry: tuple[int, int | float]) -> str:
    if kind.per_category:
        return f"(offset {entry[0]}, category key {entry[1]:#010x})"
    return f"(offset {entry[0]}, timestamp {entry[1]!r})"


# -- retention preview ---------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPlan:
    """What ``LogWriter.apply_retention`` would delete now, computed without the lock."""

    segments: list[str]
    bytes: int
    #: The oldest offset left afterwards.
    begin_offset: int


def plan_retention_now(
    path: str,
    *,
    max_age_days: float | None,
    max_bytes: int | None,
    now: float | None = None,
    keep_from: int | None = None,
) -> RetentionPlan:
    """The same decision as the writer's apply_retention, from the files as they are now."""
    bases, watermark = _list_and_read_watermark(path)
    if not bases:
        return RetentionPlan([], 0, watermark)
    spans = segment_spans(bases, watermark)
    doomed = plan_retention(
        spans,
        now=time.time() if now is None else now,
        max_age_days=max_age_days,
        max_bytes=max_bytes,
        newest_timestamp=lambda span: read_newest_timestamp(path, span.base, span.end),
        keep_from=keep_from,
    )
    return RetentionPlan(
        [segment_name(span.base) for span in doomed],
        sum(span.size for span in doomed),
        spans[len(doomed)].base,
    )
