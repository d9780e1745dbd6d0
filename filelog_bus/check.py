"""Read-only inspection of a bus: statistics and verification (the retention preview: retention.py).

The operator CLI formats what these functions return; nothing here prints. Nothing here
takes the writer lock or opens a file for writing either, so it is safe to run on a bus a
live writer is appending to, rolling and applying retention to, and on a bus the user may
only read. Only records below the published watermark are looked at: bytes past it belong
to an append in progress, not to damage.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from filelog_bus import fs
from filelog_bus.bus_directory import require_directory, segments_and_watermark
from filelog_bus.errors import (
    CorruptionError,
    DamageKind,
    NotABusError,
)
from filelog_bus.index import CATEGORY_SUMMARY, INDEX_KINDS, OFFSET_INDEX, IndexCheck
from filelog_bus.layout import (
    FILE_HEADER_SIZE,
    WATERMARK_NAME,
    segment_name,
)
from filelog_bus.os_errors import failures_explained
from filelog_bus.problem import Problem
from filelog_bus.progress import SegmentProgress, TotalProgress
from filelog_bus.record import Record
from filelog_bus.retention import segment_spans
from filelog_bus.scan import CollectDamage, Damage
from filelog_bus.segment import ReadOnlySegment, gap_after_segment, header_incomplete, list_segment_bases
from filelog_bus.watermark import read_published

#: How long verify waits before re-checking the newest segment once: a writer that is opening
#: the bus rewrites the tail of that segment's indexes, which must not be reported as damage.
_ACTIVE_RECHECK_DELAY = 0.2


# -- the bus's settings -------------------------------------------------------------


def index_interval(path: str) -> int | None:
    """The index block size of the newest segment (its offset index's header), or None if unreadable."""
    bases = list_segment_bases(path)
    if not bases:
        return None
    try:
        return OFFSET_INDEX.recorded_interval(path, bases[-1])
    except OSError:
        return None


# -- a consistent view of the segments ----------------------------------------------


class _Span(NamedTuple):
    """A segment as listed: its records lie in [base, end); the newest one is still growing."""

    base: int
    end: int
    newest: bool


def _spans(bases: list[int], watermark: int) -> list[_Span]:
    """The segments' spans up to the watermark (retention.segment_spans), the newest one marked."""
    spans = segment_spans(bases, watermark)
    return [_Span(span.base, span.end, i == len(spans) - 1) for i, span in enumerate(spans)]


def _open_segment(path: str, base: int) -> ReadOnlySegment | None:
    """Open a segment read-only; None when retention deleted it since it was listed."""
    try:
        return ReadOnlySegment.open(path, base)
    except FileNotFoundError:
        return None


def _being_created(path: str, base: int) -> bool:
    """Whether a segment's file holds only the start of its header (segment.header_incomplete)."""
    try:
        fd = fs.open(os.path.join(path, segment_name(base)), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return header_incomplete(os.pread(fd, FILE_HEADER_SIZE, 0), base)
    finally:
        fs.close(fd)


# -- time going backwards ---------------------------------------------------------

#: How many steps back stats and verify list one by one (all of them are counted).
LISTED_STEPS_BACK = 5


@dataclass(frozen=True)
class StepBack:
    """A record stamped earlier than the record before it on the bus: the clock went back."""

    #: The segment file holding the record, its offset, and the offset of the record before it.
    segment: str
    offset: int
    previous_offset: int
    #: How much earlier than the record before it (seconds, > 0).
    seconds: float

    def describe(self) -> str:
        return (
            f"the record at offset {self.offset} ({self.segment}) is stamped {self.seconds:.6f} s earlier "
            f"than the record before it (offset {self.previous_offset})"
        )


@dataclass(frozen=True)
class StepsBack:
    """Every step back of the stamps along the bus: how many, the first few, the largest."""

    count: int = 0
    listed: tuple[StepBack, ...] = ()
    largest: StepBack | None = None

    def notes(self) -> list[str]:
        """What stats and verify print about them (nothing when the stamps never go back)."""
        if not self.count:
            return []
        notes = [
            f"time went backwards: {step.describe()}; nothing is lost (offsets give the order), and "
            f"retention by age keeps it as long as the later-stamped record before it "
            f"(see docs/RELIABILITY.md, 'Time going backwards')"
            for step in self.listed
        ]
        if self.count > len(self.listed) and self.largest is not None:
            notes.append(
                f"time went backwards {self.count - len(self.listed)} more times; the largest step: "
                f"{self.largest.describe()}"
            )
        return notes


class _StepsBackFinder:
    """Looks at the records in bus order (a record seen again, as by a re-check, is skipped)."""

    def __init__(self) -> None:
        self.count = 0
        self.listed: list[StepBack] = []
        self.largest: StepBack | None = None
        self._previous: tuple[int, float] | None = None

    def see(self, segment: str, record: Record) -> None:
        previous = self._previous
        if previous is not None and record.offset <= previous[0]:
            return
        self._previous = (record.offset, record.timestamp)
        if previous is None or record.timestamp >= previous[1]:
            return
        step = StepBack(segment, record.offset, previous[0], previous[1] - record.timestamp)
        self.count += 1
        if len(self.listed) < LISTED_STEPS_BACK:
            self.listed.append(step)
        if self.largest is None or step.seconds > self.largest.seconds:
            self.largest = step

    def found(self) -> StepsBack:
        return StepsBack(self.count, tuple(self.listed), self.largest)


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
    #: Bytes allocated on disk for every file in the bus directory (segments with the preallocated space
    #: of the active one, indexes, watermark, lock).
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
    #: Records stamped earlier than the record before them (a clock stepped back).
    steps_back: StepsBack = StepsBack()


def bus_stats(path: str, progress: TotalProgress | None = None) -> BusStats:
    """Read every record below the watermark once. CorruptionError on a damaged record."""
    path = os.fspath(path)
    with failures_explained(path, "take its statistics"):
        return _bus_stats(path, progress)


def _bus_stats(path: str, progress: TotalProgress | None) -> BusStats:
    bases, watermark = segments_and_watermark(path, "take its statistics")
    spans = _spans(bases, watermark)
    total = sum(span.end - span.base for span in spans)
    done = 0
    segments: list[SegmentStats] = []
    categories: Counter[str] = Counter()
    steps_back = _StepsBackFinder()
    for span in spans:
        if span.newest and span.end <= span.base and _being_created(path, span.base):
            segments.append(_empty_segment_stats(path, span.base))
            continue
        segment = _open_segment(path, span.base)
        if segment is None:
            continue
        try:
            end = min(span.end, segment.file_end())
            count, first, last = 0, None, None
            name = segment_name(span.base)
            for item in segment.records(span.base, end):
                count += 1
                categories[item.category] += 1
                steps_back.see(name, item)
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
        steps_back=steps_back.found(),
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
            total += os.stat(os.path.join(path, name)).st_blocks * 512  # allocated, preallocation included
        except FileNotFoundError:
            continue  # deleted by retention meanwhile
    return total


# -- verify --------------------------------------------------------------------------


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
    #: retention deleted while it was being checked, stamps that go back).
    notes: list[str]
    #: Records stamped earlier than the record before them (a clock stepped back).
    steps_back: StepsBack = StepsBack()

    @property
    def healthy(self) -> bool:
        return not self.problems

    def repairable_files(self) -> list[str]:
        """The derived files (indexes, summaries) a rebuild from their segments would fix."""
        return sorted({problem.file for problem in self.problems if problem.repairable})


def verify_bus(path: str, progress: TotalProgress | None = None) -> VerifyReport:
    """Check every record, the continuity of the segments, every derived file and the watermark.

    Composed from ``check_segment`` (records, and each index kind's own check against a
    rebuild). Raises NotABusError when ``path`` is not a bus; everything else wrong is a Problem.
    """
    path = os.fspath(path)
    with failures_explained(path, "verify it"):
        return _verify_bus(path, progress)


def _verify_bus(path: str, progress: TotalProgress | None) -> VerifyReport:
    bases = require_directory(path, "verify it").segment_bases
    problems: list[Problem] = []
    notes: list[str] = []
    watermark: int | None
    try:
        watermark = read_published(path)
    except NotABusError:
        if not bases:
            raise
        watermark = None
        problems.append(
            Problem(
                WATERMARK_NAME,
                None,
                None,
                DamageKind.WATERMARK,
                "the watermark file is missing: readers refuse the bus; "
                "open the bus once with a writer to recreate it",
            )
        )
    except CorruptionError as exc:
        watermark = None
        problems.append(
            Problem(WATERMARK_NAME, exc.file_position, None, exc.damage, f"{exc.reason}; {exc.advice}")
        )
    problems += _check_continuity(path, bases)
    ends = [*bases[1:], watermark]
    total = sum(max(end, base) - base for base, end in zip(bases, ends, strict=True) if end is not None)
    done = 0
    records = checked_bytes = index_files = 0
    steps_back = _StepsBackFinder()
    for i, base in enumerate(bases):
        active = i == len(bases) - 1
        check = _check_listed_segment(path, base, ends[i], active, progress, done, total, notes, steps_back)
        if check is not None and active and check.problems:
            time.sleep(_ACTIVE_RECHECK_DELAY)  # a writer opening the bus rewrites the tail of its indexes
            check = _check_listed_segment(path, base, ends[i], active, progress, done, total, [], steps_back)
        if check is None:
            continue
        done += check.bytes
        records += check.records
        checked_bytes += check.bytes
        index_files += check.index_files
        problems += check.problems
        for index in check.lagging:
            lag = index.lag()
            if lag:
                notes.append(
                    f"{index.name}: the {index.kind.label} of the newest segment lacks its last "
                    f"{lag} {'entry' if lag == 1 else 'entries'} (normal after a crash or while a writer opens "
                    f"the bus: readers scan those blocks, and the writer completes the index)"
                )
    if watermark is not None and bases:
        problems += _check_watermark(path, bases[-1], watermark)
    if progress is not None:
        progress(total, total)
    found = steps_back.found()
    notes += found.notes()
    return VerifyReport(
        path=path,
        segments=len(bases),
        records=records,
        bytes=checked_bytes,
        index_files=index_files,
        checked_to=watermark,
        problems=problems,
        notes=notes,
        steps_back=found,
    )


def _check_listed_segment(
    path: str,
    base: int,
    end: int | None,
    active: bool,
    progress: TotalProgress | None,
    done: int,
    total: int,
    notes: list[str],
    steps_back: _StepsBackFinder,
) -> SegmentCheck | None:
    """One segment's own check; None (with a note) when there is nothing to check."""
    name = segment_name(base)
    if active and (end is None or end <= base) and _being_created(path, base):
        notes.append(
            f"{name} (the newest segment) has only part of its header: an older filelog-bus crashed "
            f"while creating it (the next writer finishes it)"
        )
        return None
    try:
        segment = ReadOnlySegment.open(path, base, check_header=False)  # its check reports a bad header
    except FileNotFoundError:
        notes.append(f"{name} was deleted (by retention) while the bus was being checked")
        return None
    try:
        check = check_segment(
            segment,
            end,
            active=active,
            progress=None if progress is None else lambda done_here: progress(done + done_here, total),
            on_record=lambda record: steps_back.see(name, record),
        )
    finally:
        segment.close()
    if fs.stat_or_explain(segment.path, "verify it") is None:  # a refusal is not a deletion
        notes.append(f"{name} was deleted (by retention) while the bus was being checked")
        return None
    return check


# -- one segment's check ----------------------------------------------------------

_RECORD_ADVICE = "restore the segment from a backup: readers stop with an error at this offset"


@dataclass
class SegmentCheck:
    """What ``check_segment`` found."""

    records: int = 0
    bytes: int = 0
    index_files: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: The active segment's index checks, to report how far they lag (normal, not damage).
    lagging: list[IndexCheck] = field(default_factory=list)


def check_segment(
    segment: ReadOnlySegment,
    end: int | None,
    *,
    active: bool,
    progress: SegmentProgress | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> SegmentCheck:
    """Check every record below ``end`` and each derived file against a rebuild. Never raises.

    ``progress(bytes_done)`` is called as records are read; ``on_record`` sees every valid
    record read, in order (verify looks at their stamps).

    ``end`` None: the watermark is unknown, so an incomplete tail of the active segment
    may be an append in progress and is not reported.
    """
    result = SegmentCheck()
    base = segment.base
    name = segment_name(base)
    damage = segment.header_damage
    if damage is not None:
        result.problems.append(
            Problem(name, damage.file_position, None, DamageKind.FILE_HEADER, damage.reason)
        )
    kinds = [kind for kind in INDEX_KINDS if not (active and kind.closed_only)]
    indexes = [kind.start_check(segment.directory, base) for kind in kinds]
    file_end = segment.file_end()
    scan_end = file_end if end is None else max(base, min(end, file_end))
    damage = CollectDamage()
    first_damage: int | None = None
    for record in segment.scanner.records(base, scan_end, damage):
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
            progress(record.offset - base)
    if first_damage is None and damage.found:
        first_damage = damage.found[0].offset
    for found in damage.found:
        if active and found.resume is None:
            if end is None:
                break  # no watermark to trust: the tail may be an append in progress, or zeros
            if segment.unwritten_at(found.offset):
                result.problems.append(_unrecovered_problem(segment, found.offset))
                break
        result.problems.append(_damage_problem(segment, found, scan_end))
    result.bytes = scan_end - base
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


def _unrecovered_problem(segment: ReadOnlySegment, offset: int) -> Problem:
    """Nothing was written at ``offset``, below the watermark: a crash state (pages an unsynced
    writer never got to the disk) that no writer has recovered yet. Readers wait there."""
    return Problem(
        segment_name(segment.base),
        segment.file_position(offset),
        offset,
        DamageKind.WATERMARK,
        "nothing was written here, below the published watermark: the bus was not recovered after a "
        "crash (readers wait here); open it once with a writer, which cuts the lost tail",
    )


def _damage_problem(segment: ReadOnlySegment, damage: Damage, end: int) -> Problem:
    if damage.resume is None:
        extent = f"no valid record follows before offset {end}"
    else:
        extent = (
            f"{damage.resume - damage.offset} bytes are unreadable, up to the next valid record at "
            f"offset {damage.resume}"
        )
    return Problem(
        segment_name(segment.base),
        segment.file_position(damage.offset),
        damage.offset,
        DamageKind.RECORD,
        f"damaged record: {damage.reason}; {extent}; {_RECORD_ADVICE}",
    )


def _check_continuity(path: str, bases: list[int]) -> list[Problem]:
    """Each closed segment must end exactly where the next one begins."""
    problems = []
    for base, next_base in itertools.pairwise(bases):
        try:
            gap = gap_after_segment(path, base, next_base)
        except FileNotFoundError:
            continue  # deleted by retention since it was listed
        if gap is not None:
            end, size = gap
            how = "truncated" if end < next_base else "extended"
            problems.append(
                Problem(
                    segment_name(base),
                    size,
                    None,
                    DamageKind.SEGMENT_GAP,
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
            DamageKind.WATERMARK,
            f"the watermark says records are published up to offset {watermark} but the newest segment's "
            f"data ends at {data_end}: the bus was not recovered after a crash; open it once with a writer",
        )
    ]
