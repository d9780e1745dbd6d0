"""Retention: which closed segments to delete, in one place.

The decision (plan_retention) is pure; ``plan_retention_of`` reads the stamps it needs from a
bus's files, ``plan_retention_now`` the bus as it is now (a preview, without the lock), and
``spared_from`` and ``loses`` say what sparing readers' unread records means (the Hermes clients
report asks them for its clients). The writer applies a plan, oldest segment first, each
deletion made durable before the next begins: a power cut in the middle of a pass can then only
leave a shorter prefix deleted, never a gap. The active segment is never deleted, so the bus
always keeps its newest offset.

Retention by age follows the bus's own order, not its clock alone: a segment is deleted
only when every record in it, and (oldest first) every record before it, is stamped
before the cutoff (now minus the age). A clock stepped back leaves records stamped
earlier than records before them; those count as no older than the latest stamp before
them, so a segment written seconds ago by a slow clock is kept as long as a later-stamped
record precedes it. A segment stamped in the future (a clock that was ahead) stops the
pass there, and the plan says so (``FutureStop``). See docs/RELIABILITY.md, "Time going
backwards".
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from filelog_bus.bus_directory import segments_and_watermark
from filelog_bus.errors import ConfigError
from filelog_bus.index import load_offset_index
from filelog_bus.layout import segment_name
from filelog_bus.os_errors import failures_explained
from filelog_bus.segment import ReadOnlySegment

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class SegmentSpan:
    base: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.base


def check_policy(max_age_days: float | None, max_bytes: int | None) -> None:
    if max_age_days is not None and (
        isinstance(max_age_days, bool) or not isinstance(max_age_days, (int, float)) or not max_age_days > 0
    ):
        raise ConfigError(f"retention max_age_days must be a number > 0, got {max_age_days!r}")
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        raise ConfigError(f"retention max_bytes must be an integer >= 0, got {max_bytes!r}")


@dataclass(frozen=True)
class FutureStop:
    """Retention by age stopped at a segment whose latest record is stamped after ``now``."""

    base: int
    #: The segment's latest stamp (epoch seconds), and the time retention was planned at.
    stamp: float
    now: float
    max_age_days: float

    @property
    def deletable_at(self) -> float:
        """When the age budget may delete it (and let the pass go on past it)."""
        return self.stamp + self.max_age_days * SECONDS_PER_DAY

    def note(self) -> str:
        ahead = self.stamp - self.now
        return (
            f"retention by age stopped at {segment_name(self.base)}: its latest record is stamped {_iso(self.stamp)}, "
            f"{ahead:.3f} s in the future (the clock was ahead when it was written, or is behind now); "
            f"it and every segment after it are kept by age until {_iso(self.deletable_at)}, "
            f"the size budget still applies (see docs/RELIABILITY.md, 'Time going backwards')"
        )


class RetentionDecision(NamedTuple):
    #: The oldest segments to delete, oldest first.
    doomed: list[SegmentSpan]
    #: Set when the age budget stopped at a segment stamped in the future.
    future_stop: FutureStop | None = None


#: latest_timestamp(span, at_least): the latest stamp of the span's records (None: it has none), or,
#: found sooner, any stamp >= at_least (see read_latest_timestamp).
LatestTimestamp = Callable[[SegmentSpan, float], "float | None"]


def plan_retention(
    segments: Sequence[SegmentSpan],
    *,
    now: float,
    max_age_days: float | None,
    max_bytes: int | None,
    latest_timestamp: LatestTimestamp,
    keep_from: int | None = None,
) -> RetentionDecision:
    """The oldest segments to delete; ``segments`` is oldest first and its last is the active one.

    The age budget deletes, oldest first, the segments all of whose records are stamped before the
    cutoff, and stops at the first that is not (the module's docstring says why that is the bus's
    own order). ``keep_from``: it never deletes a segment holding offsets >= keep_from (events some
    reader has not read yet); only the size budget may, when it is exceeded.
    """
    closed = list(segments[:-1])
    doomed: list[SegmentSpan] = []
    future_stop = None
    if max_age_days is not None:
        cutoff = now - max_age_days * SECONDS_PER_DAY
        for segment in closed:
            if keep_from is not None and segment.end > keep_from:
                break
            latest = latest_timestamp(segment, cutoff)
            if latest is None or latest >= cutoff:
                if latest is not None and latest > now:
                    future_stop = FutureStop(segment.base, latest, now, max_age_days)
                break
            doomed.append(segment)
    if max_bytes is not None:
        total = sum(segment.size for segment in segments[len(doomed) :])
        for segment in closed[len(doomed) :]:
            if total <= max_bytes:
                break
            doomed.append(segment)
            total -= segment.size
    return RetentionDecision(doomed, future_stop)


def segment_spans(bases: Sequence[int], active_end: int) -> list[SegmentSpan]:
    """Spans of the segments: closed ones end where the next begins, and none past ``active_end``
    (for a reader, the watermark: a roll can close a segment that holds deferred records nobody
    has synced and published yet)."""
    ends = [*bases[1:], active_end]
    return [SegmentSpan(base, max(base, min(end, active_end))) for base, end in zip(bases, ends, strict=True)]


def read_latest_timestamp(directory: str, base: int, end: int, at_least: float) -> float | None:
    """The latest stamp of a segment's records below ``end`` (None if it has none), or, as soon as
    one is found, any stamp >= ``at_least`` (enough to keep the segment).

    First the cheap places: the index's entries (each block's first record) and the records from
    the last entry on (one block). Only when all of those are older than ``at_least`` (the segment
    is about to be deleted) are all its records read: the clock may have stepped back inside it.
    """
    index = load_offset_index(directory, base, end)
    stamps = [float(index.entry_at(i)[1]) for i in range(index.count)] if index is not None else []
    start = index.offset_at(index.count - 1) if index is not None and index.count else base
    segment = ReadOnlySegment.open(directory, base)
    try:
        latest = max(stamps, default=None)
        for first, last in ((start, end), (base, start)):  # the last block, then (if needed) the rest
            for record in segment.records(first, last):
                if latest is None or record.timestamp > latest:
                    latest = record.timestamp
            if latest is not None and latest >= at_least:
                break
        return latest
    finally:
        segment.close()


def plan_retention_of(
    directory: str,
    segments: Sequence[SegmentSpan],
    *,
    now: float,
    max_age_days: float | None,
    max_bytes: int | None,
    keep_from: int | None = None,
) -> RetentionDecision:
    """``plan_retention`` for the bus in ``directory``, its records' stamps read from its files."""
    return plan_retention(
        segments,
        now=now,
        max_age_days=max_age_days,
        max_bytes=max_bytes,
        latest_timestamp=lambda span, at_least: read_latest_timestamp(
            directory, span.base, span.end, at_least
        ),
        keep_from=keep_from,
    )


@dataclass(frozen=True)
class RetentionPlan:
    """What ``LogWriter.apply_retention`` would delete now, computed without the lock."""

    segments: list[str]
    bytes: int
    #: The oldest offset left afterwards.
    begin_offset: int
    #: Why the age budget stopped at a segment stamped in the future, or None (LogWriter.retention_note).
    note: str | None = None


def plan_retention_now(
    path: str,
    *,
    max_age_days: float | None,
    max_bytes: int | None,
    now: float | None = None,
    keep_from: int | None = None,
) -> RetentionPlan:
    """The same decision as the writer's apply_retention, from the files as they are now."""
    with failures_explained(path, "plan retention"):
        bases, watermark = segments_and_watermark(path, "plan retention")
        if not bases:
            return RetentionPlan([], 0, watermark)
        spans = segment_spans(bases, watermark)
        doomed, future_stop = plan_retention_of(
            path,
            spans,
            now=time.time() if now is None else now,
            max_age_days=max_age_days,
            max_bytes=max_bytes,
            keep_from=keep_from,
        )
    return RetentionPlan(
        [segment_name(span.base) for span in doomed],
        sum(span.size for span in doomed),
        spans[len(doomed)].base,
        None if future_stop is None else future_stop.note(),
    )


# -- sparing readers' unread records -----------------------------------------------------------


def spared_from(positions: Iterable[int | None], begin: int, end: int) -> int | None:
    """The offset retention must keep from to spare readers at ``positions`` (their next offsets):
    the oldest of them still on the bus [begin, end].

    Positions already deleted (before ``begin``) or foreign (beyond ``end``) hold nothing back:
    keeping more would not save them. None (a reader not started) reads from the start whatever it is.
    """
    on_bus = [p for p in positions if p is not None and begin <= p <= end]
    return min(on_bus) if on_bus else None


def loses(position: int | None, begin: int, new_begin: int) -> bool:
    """Whether a reader at ``position`` loses unread records when retention moves the bus's beginning
    from ``begin`` to ``new_begin`` (it loses [position, new_begin))."""
    return position is not None and begin <= position < new_begin


def _iso(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).isoformat(timespec="seconds")
